"""Training/evaluation dataset from rosbag2 recordings: builder, shards, and the clip ``Dataset``.

Building (``avi-ht dataset``, :func:`build_dataset`)
----------------------------------------------------
Input: rosbag2 directories — simulated (``avi-ht simulate``) or recorded from the live system
(same raw topics). Per bag and per hand ``side``:

1. **Synchronization exactly as live.** The glove samples (``/<side>/glove/samples``) and the
   camera frames (``/head_camera/image_raw``) are replayed through
   :func:`avi_ht_ros.tracker.sync.replay` with the synchronizer the live sync node builds
   (:func:`avi_ht_ros.tracker.sync.live_synchronizer`: ``SyncConfig`` + ``GravityEstimator(N, 1 /
   imu_rate_hz)``), so every IMU window is the one the live node would have published.
   The camera–glove offset is ``config.time_offset`` (``"auto"``: the simulator's true offset
   from ``/sim/config``, else the last offset the live system applied
   (``/<side>/glove/time_offset``), else 0 — the manifest records which).
2. **IMU features** with :func:`avi_ht_ros.tracker.preprocess.imu_inputs` (the function the
   fusion node calls); the raw window (accel, gyro, gravity, status, stamps) is stored too.
3. **Ground truth is required.** A frame becomes a sample only if ``/<side>/hand_ground_truth``
   has a message with the image's stamp (simulator or motion capture). Recorded bags without
   ground truth cannot be turned into training *or* evaluation data: the crop is centred on the
   ground-truth hand and the targets come from it. Such bags are skipped with the reason in the
   manifest (``skipped``); frames without a matching ground-truth message are counted
   (``frames_without_ground_truth``).
4. **Perspective crop** with :func:`avi_ht_ros.tracker.preprocess.crop_inputs` (the tracker's
   function) centred on the ground-truth hand centre (:func:`preprocess.hand_center`) **plus
   jitter** (:class:`CropJitterConfig`): at inference the centre is the tracker's prediction
   from the previous estimate, never the truth, so the network must see off-centre crops.
   Per frame, with probability ``search_probability`` the crop is a wide *search* crop like the
   tracker's track-initialisation crop (radius factor ``TrackerConfig.init_radius_factor``,
   1.8, and a larger centre error); otherwise a tracking crop with Gaussian centre noise
   ``center_noise_m`` per axis and a radius factor uniform in ``radius_factor_range``. If the
   jittered centre is not croppable (behind the camera or outside the image) the frame gets
   what the tracker feeds then: no view (``view_valid = False``, zero crop).
5. **Targets**: landmarks, joint angles, wrist rotation/translation (camera optical frame), hand
   scale, per-landmark visibility, occlusion ratio and activity label.

Output directory: one shard ``<bag>__<side>.npz`` per sequence (uncompressed ``.npz``, crops
``uint8``; arrays listed in :data:`SHARD_ARRAYS`) and ``manifest.json`` (sources, full build
config, seeds, per-sequence counts and sync statistics, a content hash per shard). The jitter is
drawn from ``numpy.random.default_rng([seed, crc32(sequence id), camera frame index])``: the
same bags, config and seed give identical arrays whatever the order of bags or ``jobs``.

Training data (:class:`HandClipDataset`)
---------------------------------------
Clips of ``K`` consecutive frames of one sequence (the vision encoder's ConvGRU carries its
state through a clip, UmeTrack-style temporal training). Clips never cross a gap in the
frame stream (``max_frame_gap_s``). Training clip boundaries move with the epoch (a random
offset per segment) so every frame is seen about once per epoch. Load-time augmentation
(:class:`AugmentationConfig`, AVI-HT §5 "Implementation Details"):

* **fast motion**: with ``fast_motion_probability`` the clip takes every ``s``-th frame
  (``s`` from ``fast_motion_strides``) — inter-frame motion ``s`` times larger at the same
  frame interval, as a faster hand would produce. The IMU window of each frame is its own
  (the glove still samples at 200 Hz).
* **gamma jitter** ``crop ** γ``, γ uniform in ``gamma_range`` (0.5–1.7), one γ per clip
  (one camera response per clip);
* **image noise**: Gaussian, σ = ``image_noise_sigma_dn`` (10 DN of 255) drawn independently
  per frame and pixel, then clipped to [0, 255].

Frames without a view keep their zero crop. IMU **sensor dropout** is not done here: the
models apply it themselves in training mode (``model.sensor_dropout``,
:class:`avi_ht_ros.models.imu_encoder.SensorDropout`). All randomness is drawn from
``default_rng([seed, epoch, index])``: deterministic per seed, epoch and item, independent of
the number of loader workers and processes.

The split into training and validation data is by **recording** (:func:`split_sequences`): both
hands of a bag go to the same side, no frame of a validation recording is ever trained on.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import pathlib
import sys
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import yaml
from scipy.spatial.transform import Rotation

from avi_ht_ros.common import topics
from avi_ht_ros.common.camera import PinholeCamera
from avi_ht_ros.common.errors import AviHtError, ConfigError
from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.common.imu import FEATURE_SETS, feature_rows
from avi_ht_ros.common.params import param, validate_params
from avi_ht_ros.common.paths import config_path
from avi_ht_ros.io import convert
from avi_ht_ros.io.bag import BagError, bag_topics, read_messages
from avi_ht_ros.models.interface import ModelInputs
from avi_ht_ros.models.losses import PoseTargets
from avi_ht_ros.tracker import sync as sync_module
from avi_ht_ros.tracker.preprocess import (CropConfig, center_is_croppable, crop_inputs, hand_center, imu_inputs,
                                           window_dict)
from avi_ht_ros.tracker.sync import SyncConfig, live_synchronizer
from avi_ht_ros.tracker.tracker import TrackerConfig

DATASET_FORMAT = "avi_ht_ros.hand_dataset"
DATASET_VERSION = 1
MANIFEST_NAME = "manifest.json"

SHARD_ARRAYS: dict[str, str] = {
    # frame identity
    "stamps_ns": "[N] int64 camera stamp of the frame (camera clock)",
    "camera_frame_index": "[N] int32 index of the frame in the bag's image stream",
    # vision input (what the tracker feeds the network)
    "crops": "[N, S, S] uint8 perspective crop (zeros when view_valid is false)",
    "view_valid": "[N] bool the crop shows the hand's surroundings (croppable centre)",
    "K_virtual": "[N, 3, 3] float32 virtual-camera intrinsics, crop pixels",
    "R_virtual_from_camera": "[N, 3, 3] float32 camera optical frame -> virtual camera",
    "crop_center": "[N, 3] float64 crop centre in the camera optical frame, m (truth + jitter)",
    "crop_radius_m": "[N] float32 sphere radius the crop covers, m",
    "crop_radius_factor": "[N] float32 radius factor drawn by the jitter",
    "search_crop": "[N] bool wide track-initialisation-like crop",
    # IMU input
    "imu_features": "[N, T, F, 3] float32 preprocess.imu_inputs features",
    "imu_valid": "[N, T, F] bool their validity",
    "window_accel": "[N, T, N_s, 3] float32 synchronized raw window: specific force, m/s^2",
    "window_gyro": "[N, T, N_s, 3] float32 angular rate, rad/s",
    "window_gravity_up": "[N, T, N_s, 3] float32 VQF up direction per sensor (zeros unknown)",
    "window_status": "[N, T, N_s] uint8 GloveSample.STATUS_* (DEAD where padded)",
    "window_stamps_ns": "[N, T] int64 sample stamps on the camera clock",
    "window_sample_valid": "[N, T] bool real sample (not padding)",
    "window_state": "[N] uint8 sync.WINDOW_COMPLETE / WINDOW_PARTIAL",
    # ground truth
    "landmarks": "[N, 21, 3] float32 m, camera optical frame, MediaPipe order",
    "joint_angles": "[N, 22] float32 rad, hand_model.JOINT_NAMES order",
    "wrist_rotation": "[N, 3, 3] float32 wrist -> camera optical frame",
    "wrist_translation": "[N, 3] float32 m",
    "hand_scale": "[N] float32 hand size relative to the reference hand",
    "landmark_visibility": "[N, 21] float32 1 visible in the image, 0 occluded",
    "occlusion_ratio": "[N] float32 fraction of occluded landmarks",
    "activity": "[N] unicode activity label",
    "hand_center": "[N, 3] float64 ground-truth crop centre (preprocess.hand_center), m",
}

_SIDES_CHOICES = ("right", "left", "both")


class DatasetError(AviHtError):
    """A dataset cannot be built or read (message names the file or bag)."""


# ======================================================================================
# Configuration
# ======================================================================================
@dataclass(frozen=True)
class CropJitterConfig:
    """How far training crops are from the ground-truth-centred crop (see module doc)."""

    # 3 cm / 0.8-1.25 / 10 %: the live tracker's crops are that far off (docs/TRAINING.md, "crop
    # jitter"); with 1 cm / 0.9-1.1 / 5 % the shipped models' online MKPE was 63 mm instead of 42 mm
    center_noise_m: float = param(0.03, "Gaussian noise per axis on the tracking-crop centre (tracker "
                                  "prediction error)", range=(0.0, 0.2), unit="m")
    radius_factor_range: tuple[float, ...] = param((0.8, 1.25), "tracking-crop radius factor, uniform in "
                                                   "[low, high] (hand-scale error / crop zoom)")
    search_probability: float = param(0.1, "share of frames cropped like the tracker's wide search crop",
                                      range=(0.0, 1.0))
    search_radius_factor: float = param(TrackerConfig().init_radius_factor, "radius factor of a search crop "
                                        "(TrackerConfig.init_radius_factor)", range=(1.0, 5.0))
    search_center_noise_m: float = param(0.04, "Gaussian noise per axis on a search crop's centre (prior "
                                         "position vs hand)", range=(0.0, 0.5), unit="m")

    def __post_init__(self):
        validate_params(self)
        low_high = self.radius_factor_range
        if len(low_high) != 2 or not 0.1 <= low_high[0] <= low_high[1] <= 10.0:
            raise ConfigError("jitter.radius_factor_range", f"needs [low, high] with 0.1 <= low <= high <= 10, "
                                                            f"got {list(low_high)}")

    @property
    def enabled(self) -> bool:
        return (self.center_noise_m > 0 or self.radius_factor_range[0] != self.radius_factor_range[1]
                or self.search_probability > 0)

    @classmethod
    def none(cls) -> "CropJitterConfig":
        """No jitter: crops exactly on the ground-truth centre (analysis only, not for training)."""
        return cls(center_noise_m=0.0, radius_factor_range=(1.0, 1.0), search_probability=0.0)


@dataclass(frozen=True)
class DatasetBuildConfig:
    """Everything that decides a dataset's content (stored in the manifest)."""

    glove_config: str = "glove_12imu.yaml"
    feature_set: str = "gravity+finger_gyro"
    sides: tuple[str, ...] = ("right", "left")
    time_offset: str | float = "auto"
    seed: int = 0
    crop: CropConfig = field(default_factory=CropConfig)
    jitter: CropJitterConfig = field(default_factory=CropJitterConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)

    def __post_init__(self):
        if self.feature_set not in FEATURE_SETS:
            raise ConfigError("dataset.feature_set", f"unknown feature set {self.feature_set!r}; known: "
                                                     f"{sorted(FEATURE_SETS)}")
        if not self.sides or any(s not in topics.SIDES for s in self.sides):
            raise ConfigError("dataset.sides", f"must be a non-empty subset of {topics.SIDES}, got {self.sides!r}")
        if not (self.time_offset == "auto" or (isinstance(self.time_offset, (int, float))
                                               and math.isfinite(self.time_offset)
                                               and abs(self.time_offset) <= 10.0)):
            raise ConfigError("dataset.time_offset", f"must be 'auto' or seconds within ±10, got {self.time_offset!r}")
        if int(self.seed) != self.seed or self.seed < 0:
            raise ConfigError("dataset.seed", f"must be a non-negative integer, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        def plain(value):
            if dataclasses.is_dataclass(value):
                return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            return value

        return plain(self)


def sides_from_choice(choice: str) -> tuple[str, ...]:
    """``right`` / ``left`` / ``both`` → the sides to build."""
    if choice not in _SIDES_CHOICES:
        raise ConfigError("dataset --side", f"must be one of {_SIDES_CHOICES}, got {choice!r}")
    return ("right", "left") if choice == "both" else (choice,)


# ======================================================================================
# Reading a bag
# ======================================================================================
@dataclass
class GroundTruthFrame:
    """One ``HandGroundTruth`` message as arrays."""

    landmarks: np.ndarray        # [21, 3] m
    joint_angles: np.ndarray     # [22] rad
    wrist_rotation: np.ndarray   # [3, 3]
    wrist_translation: np.ndarray  # [3]
    hand_scale: float
    visibility: np.ndarray       # [21]
    occlusion_ratio: float
    activity: str

    @classmethod
    def from_msg(cls, msg: Any) -> "GroundTruthFrame":
        pose = convert.hand_pose_arrays_from_msg(msg.pose)
        quaternion = np.asarray(pose["wrist_rotation_xyzw"], np.float64)
        norm = float(np.linalg.norm(quaternion))
        rotation = (Rotation.from_quat(quaternion / norm).as_matrix() if np.isfinite(norm) and norm > 0.5
                    else np.full((3, 3), np.nan))
        return cls(landmarks=pose["landmarks"], joint_angles=pose["joint_angles"].astype(np.float64),
                   wrist_rotation=rotation, wrist_translation=pose["wrist_position"],
                   hand_scale=float(pose["hand_scale"]),
                   visibility=np.asarray(msg.landmark_visibility, np.float32).reshape(21),
                   occlusion_ratio=float(msg.occlusion_ratio), activity=str(msg.activity))

    @property
    def is_finite(self) -> bool:
        return bool(np.isfinite(self.landmarks).all() and np.isfinite(self.joint_angles).all()
                    and np.isfinite(self.wrist_rotation).all() and np.isfinite(self.wrist_translation).all()
                    and math.isfinite(self.hand_scale) and self.hand_scale > 0)


@dataclass
class SideStreams:
    """What one hand needs from a bag (everything except the images)."""

    glove_samples: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    ground_truth: dict[int, GroundTruthFrame] = field(default_factory=dict)
    recorded_offset_s: float | None = None
    malformed_glove_samples: int = 0

    def keep_sensor_count(self, num_sensors: int) -> None:
        """Drop (and count as malformed) glove samples without ``num_sensors`` IMUs, as the live node does."""
        kept = [sample for sample in self.glove_samples if sample[1].shape[0] == num_sensors]
        self.malformed_glove_samples += len(self.glove_samples) - len(kept)
        self.glove_samples = kept


@dataclass
class BagStreams:
    """Pass 1 over a bag: camera stamps and intrinsics, per-side glove/ground truth, sim config."""

    path: pathlib.Path
    camera_stamps_ns: list[int]
    camera_of_frame: list[PinholeCamera | None]
    sides: dict[str, SideStreams]
    sim_config: dict | None
    topic_counts: dict[str, int]
    cameras: list[PinholeCamera] = field(default_factory=list)
    """The distinct ``CameraInfo`` intrinsics of the bag, in order of appearance."""

    @property
    def sim_world(self) -> dict:
        """The ``world`` section of the simulator's config (``{}`` for recorded bags)."""
        world = self.sim_config.get("world") if isinstance(self.sim_config, dict) else None
        return world if isinstance(world, dict) else {}


def find_bags(inputs: Iterable[str | os.PathLike]) -> list[pathlib.Path]:
    """rosbag2 directories (with ``metadata.yaml``) given directly or found below the inputs, sorted."""
    found: list[pathlib.Path] = []
    for item in inputs:
        path = pathlib.Path(item)
        if not path.exists():
            raise DatasetError(f"{path}: no such bag or directory")
        if (path / "metadata.yaml").is_file():
            found.append(path.resolve())
            continue
        if not path.is_dir():
            raise DatasetError(f"{path}: not a rosbag2 directory (no metadata.yaml)")
        below = sorted(p.parent.resolve() for p in path.rglob("metadata.yaml") if not p.parent.name.startswith("."))
        if not below:
            raise DatasetError(f"{path}: no rosbag2 directory (metadata.yaml) below it")
        found.extend(below)
    unique = sorted(set(found))
    names = [p.name for p in unique]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DatasetError(f"bags with the same directory name {duplicates}: names identify sequences, rename them")
    return unique


def read_bag_streams(path: pathlib.Path, sides: Sequence[str], num_sensors: int | None) -> BagStreams:
    """Pass 1: everything but the image pixels (image stamps are read, pixels dropped).

    A frame's intrinsics are the ``CameraInfo`` with the image's stamp, else the latest one
    stamped before it; frames with neither get ``None`` (counted, like the live node's
    ``frames_without_camera_info``). Glove samples that do not decode, or (``num_sensors``
    given) lack ``num_sensors`` IMUs, are dropped and counted (``malformed_glove_samples``);
    with ``num_sensors=None`` call :meth:`SideStreams.keep_sensor_count` once the glove is known.
    """
    counts = {topic: count for topic, (_type, count) in bag_topics(path).items()}
    glove_topics = {topics.hand_topic(s, topics.GLOVE_SAMPLES): s for s in sides}
    truth_topics = {topics.hand_topic(s, topics.HAND_GROUND_TRUTH): s for s in sides}
    offset_topics = {topics.hand_topic(s, topics.TIME_OFFSET): s for s in sides}
    wanted = [topics.IMAGE, topics.CAMERA_INFO, topics.SIM_CONFIG_TOPIC,
              *glove_topics, *truth_topics, *offset_topics]
    streams = BagStreams(path=path, camera_stamps_ns=[], camera_of_frame=[], sides={s: SideStreams() for s in sides},
                         sim_config=None, topic_counts=counts)
    cameras: dict[tuple, PinholeCamera] = {}
    info_stamps: list[int] = []
    info_cameras: list[PinholeCamera] = []
    for message in read_messages(path, [t for t in wanted if t in counts]):
        topic, msg = message.topic, message.msg
        if topic == topics.IMAGE:
            streams.camera_stamps_ns.append(convert.stamp_ns_of(msg.header.stamp))
        elif topic == topics.CAMERA_INFO:
            key = (int(msg.width), int(msg.height), tuple(np.asarray(msg.k, float)), tuple(np.asarray(msg.d, float)))
            if key not in cameras:
                cameras[key] = PinholeCamera.from_camera_info(msg, where=f"{path}: {topics.CAMERA_INFO}")
                streams.cameras.append(cameras[key])
            info_stamps.append(convert.stamp_ns_of(msg.header.stamp))
            info_cameras.append(cameras[key])
        elif topic in glove_topics:
            side = streams.sides[glove_topics[topic]]
            try:
                side.glove_samples.append(convert.glove_arrays_from_msg(msg))
            except ValueError:
                side.malformed_glove_samples += 1
        elif topic in truth_topics:
            streams.sides[truth_topics[topic]].ground_truth[convert.stamp_ns_of(msg.header.stamp)] = \
                GroundTruthFrame.from_msg(msg)
        elif topic in offset_topics:
            streams.sides[offset_topics[topic]].recorded_offset_s = float(msg.offset_s)
        elif topic == topics.SIM_CONFIG_TOPIC:
            try:
                streams.sim_config = yaml.safe_load(msg.data)
            except yaml.YAMLError:
                streams.sim_config = None
    order = np.argsort(np.asarray(info_stamps, np.int64), kind="stable")
    sorted_stamps = np.asarray(info_stamps, np.int64)[order]
    for stamp in streams.camera_stamps_ns:
        position = int(np.searchsorted(sorted_stamps, stamp, side="right")) - 1
        streams.camera_of_frame.append(info_cameras[int(order[position])] if position >= 0 else None)
    if num_sensors is not None:
        for side_streams in streams.sides.values():
            side_streams.keep_sensor_count(num_sensors)
    return streams


def resolve_time_offset(streams: BagStreams, side: str, setting: str | float) -> tuple[float, str]:
    """``(offset_s, source)`` for one side: the configured value, or the ``auto`` rule (module doc)."""
    if setting != "auto":
        return float(setting), "configured"
    world = streams.sim_world
    if isinstance(world.get("time_offset_s"), (int, float)):
        return float(world["time_offset_s"]), "sim_config"
    recorded = streams.sides[side].recorded_offset_s
    if recorded is not None and math.isfinite(recorded):
        return recorded, "recorded_time_offset"
    return 0.0, "default_zero"


# ======================================================================================
# Building one sequence
# ======================================================================================
def sequence_id(bag_name: str, side: str) -> str:
    return f"{bag_name}/{side}"


def _shard_name(bag_name: str, side: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in bag_name)
    return f"{safe}__{side}.npz"


def frame_rng(seed: int, seq_id: str, camera_frame_index: int) -> np.random.Generator:
    """The jitter generator of one frame (independent of which other frames exist)."""
    return np.random.default_rng([int(seed), zlib.crc32(seq_id.encode()), int(camera_frame_index)])


@dataclass(frozen=True)
class CropDraw:
    center: np.ndarray
    radius_factor: float
    search: bool


def draw_crop(truth_center: np.ndarray, jitter: CropJitterConfig, rng: np.random.Generator) -> CropDraw:
    """Jittered crop centre and radius factor around the ground-truth hand centre."""
    # Always draw the same number of values so one option does not shift the others' streams.
    u_search, u_radius = rng.random(2)
    noise = rng.standard_normal(3)
    if u_search < jitter.search_probability:
        return CropDraw(truth_center + jitter.search_center_noise_m * noise, float(jitter.search_radius_factor), True)
    low, high = jitter.radius_factor_range
    return CropDraw(truth_center + jitter.center_noise_m * noise, float(low + (high - low) * u_radius), False)


def _content_hash(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(name.encode())
        digest.update(str(array.dtype).encode())
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class _SequenceAccumulator:
    """Collects the arrays of one sequence frame by frame."""

    def __init__(self):
        self.columns: dict[str, list] = {name: [] for name in SHARD_ARRAYS}

    def add(self, **values) -> None:
        for name, value in values.items():
            self.columns[name].append(value)

    def __len__(self) -> int:
        return len(self.columns["stamps_ns"])

    def arrays(self, crop_size: int, window_length: int, num_features: int, num_sensors: int) -> dict[str, np.ndarray]:
        n = len(self)
        t, f, s = window_length, num_features, num_sensors
        spec = {
            "stamps_ns": (np.int64, ()), "camera_frame_index": (np.int32, ()),
            "crops": (np.uint8, (crop_size, crop_size)), "view_valid": (np.bool_, ()),
            "K_virtual": (np.float32, (3, 3)), "R_virtual_from_camera": (np.float32, (3, 3)),
            "crop_center": (np.float64, (3,)), "crop_radius_m": (np.float32, ()),
            "crop_radius_factor": (np.float32, ()), "search_crop": (np.bool_, ()),
            "imu_features": (np.float32, (t, f, 3)), "imu_valid": (np.bool_, (t, f)),
            "window_accel": (np.float32, (t, s, 3)), "window_gyro": (np.float32, (t, s, 3)),
            "window_gravity_up": (np.float32, (t, s, 3)), "window_status": (np.uint8, (t, s)),
            "window_stamps_ns": (np.int64, (t,)), "window_sample_valid": (np.bool_, (t,)),
            "window_state": (np.uint8, ()),
            "landmarks": (np.float32, (21, 3)), "joint_angles": (np.float32, (22,)),
            "wrist_rotation": (np.float32, (3, 3)), "wrist_translation": (np.float32, (3,)),
            "hand_scale": (np.float32, ()), "landmark_visibility": (np.float32, (21,)),
            "occlusion_ratio": (np.float32, ()), "hand_center": (np.float64, (3,)),
        }
        out = {}
        for name, (dtype, shape) in spec.items():
            values = self.columns[name]
            out[name] = np.asarray(values, dtype).reshape((n,) + shape) if n else np.zeros((0,) + shape, dtype)
        out["activity"] = np.asarray(self.columns["activity"], dtype=np.str_) if n else np.zeros(0, "<U1")
        return out


def build_sequence(streams: BagStreams, side: str, config: DatasetBuildConfig, glove: GloveModel,
                   progress: Callable[[int], None] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Synchronize, crop and label one hand of one bag → ``(shard arrays, manifest record)``."""
    side_streams = streams.sides[side]
    seq_id = sequence_id(streams.path.name, side)
    offset_s, offset_source = resolve_time_offset(streams, side, config.time_offset)
    sync_config = dataclasses.replace(config.sync, time_offset_s=offset_s)
    synchronizer = live_synchronizer(sync_config, glove)
    camera_frames = list(enumerate(streams.camera_stamps_ns))
    results = sync_module.replay(side_streams.glove_samples, [(stamp, index) for index, stamp in camera_frames],
                                 synchronizer)
    window_of_frame = {int(r.payload): r.window for r in results}

    counts = {"frames_without_ground_truth": 0, "frames_with_invalid_ground_truth": 0,
              "frames_without_camera_info": 0, "frames_hand_out_of_view": 0, "search_crops": 0}
    needed: dict[int, tuple[Any, GroundTruthFrame]] = {}
    for index, window in sorted(window_of_frame.items()):
        truth = side_streams.ground_truth.get(streams.camera_stamps_ns[index])
        if truth is None:
            counts["frames_without_ground_truth"] += 1
        elif not truth.is_finite:
            counts["frames_with_invalid_ground_truth"] += 1
        elif streams.camera_of_frame[index] is None:
            counts["frames_without_camera_info"] += 1
        else:
            needed[index] = (window, truth)

    accumulator = _SequenceAccumulator()
    crop_size = config.crop.size
    if not needed and progress is not None:
        progress(len(streams.camera_stamps_ns))
    if needed:
        index = -1
        for message in read_messages(streams.path, [topics.IMAGE]):
            index += 1
            if progress is not None:
                progress(1)
            if index not in needed:
                continue
            window, truth = needed[index]
            camera = streams.camera_of_frame[index]
            image = convert.image_from_msg(message.msg)
            if image.shape != (camera.height, camera.width):
                raise DatasetError(f"{streams.path}: image {index} is {image.shape[1]}x{image.shape[0]} but its "
                                   f"CameraInfo says {camera.width}x{camera.height}")
            truth_center = hand_center(truth.landmarks)
            draw = draw_crop(truth_center, config.jitter, frame_rng(config.seed, seq_id, index))
            counts["search_crops"] += int(draw.search)
            if center_is_croppable(camera, draw.center):
                crop = crop_inputs(image, camera, draw.center, truth.hand_scale, config.crop, draw.radius_factor)
                crop_pixels = np.rint(crop.crop * 255.0).astype(np.uint8)
                K_virtual, R_virtual, radius, view_valid = crop.K_virtual, crop.R_virtual_from_camera, crop.radius_m, True
            else:  # what the tracker does: no view this frame
                counts["frames_hand_out_of_view"] += 1
                crop_pixels = np.zeros((crop_size, crop_size), np.uint8)
                K_virtual, R_virtual = camera.K.astype(np.float32), np.eye(3, dtype=np.float32)
                radius, view_valid = config.crop.radius_m * truth.hand_scale * draw.radius_factor, False
            features, feature_valid = imu_inputs(window_dict(window), glove, config.feature_set)
            accumulator.add(
                stamps_ns=streams.camera_stamps_ns[index], camera_frame_index=index, crops=crop_pixels,
                view_valid=view_valid, K_virtual=K_virtual, R_virtual_from_camera=R_virtual,
                crop_center=draw.center, crop_radius_m=radius, crop_radius_factor=draw.radius_factor,
                search_crop=draw.search, imu_features=features, imu_valid=feature_valid,
                window_accel=window.accel, window_gyro=window.gyro, window_gravity_up=window.gravity_up,
                window_status=window.status, window_stamps_ns=window.stamps_ns, window_sample_valid=window.valid,
                window_state=window.state, landmarks=truth.landmarks, joint_angles=truth.joint_angles,
                wrist_rotation=truth.wrist_rotation, wrist_translation=truth.wrist_translation,
                hand_scale=truth.hand_scale, landmark_visibility=truth.visibility,
                occlusion_ratio=truth.occlusion_ratio, activity=truth.activity, hand_center=truth_center)
    arrays = accumulator.arrays(crop_size, sync_config.window_length, _feature_count(glove, config.feature_set),
                                glove.num_sensors)
    activities: dict[str, int] = {}
    for label in arrays["activity"].tolist():
        activities[label] = activities.get(label, 0) + 1
    record = {
        "id": seq_id, "bag": streams.path.name, "side": side, "shard": _shard_name(streams.path.name, side),
        "frames": len(accumulator), "camera_frames": len(streams.camera_stamps_ns),
        "glove_samples": len(side_streams.glove_samples),
        "malformed_glove_samples": side_streams.malformed_glove_samples,
        "ground_truth_messages": len(side_streams.ground_truth),
        "time_offset_s": offset_s, "time_offset_source": offset_source,
        "sync": dataclasses.asdict(synchronizer.stats), **counts,
        "hand_scale": float(np.median(arrays["hand_scale"])) if len(accumulator) else None,
        "activities": dict(sorted(activities.items())),
        "duration_s": (float(arrays["stamps_ns"][-1] - arrays["stamps_ns"][0]) / 1e9) if len(accumulator) else 0.0,
        "content_sha256": _content_hash(arrays),
    }
    return arrays, record


def _feature_count(glove: GloveModel, feature_set: str) -> int:
    return len(feature_rows(feature_set, glove.num_sensors, glove.site_index("hand_back")))


# ======================================================================================
# Building a dataset
# ======================================================================================
def _process_bag(path: str, config: DatasetBuildConfig, out_dir: str,
                 progress: Callable[[int], None] | None = None) -> tuple[list[dict], list[dict]]:
    """All sides of one bag → shards written to ``out_dir``; returns (sequence records, skipped)."""
    glove = GloveModel.from_yaml(config_path(config.glove_config))
    bag = pathlib.Path(path)
    try:
        streams = read_bag_streams(bag, config.sides, glove.num_sensors)
    except BagError as exc:
        return [], [{"bag": bag.name, "side": None, "reason": f"unreadable bag: {exc}"}]
    records, skipped = [], []
    if not streams.camera_stamps_ns:
        return [], [{"bag": bag.name, "side": None, "reason": f"no images on {topics.IMAGE}"}]
    for side in config.sides:
        side_streams = streams.sides[side]
        if progress is not None and not (side_streams.glove_samples and side_streams.ground_truth):
            progress(len(streams.camera_stamps_ns))  # this side's image pass is skipped
        if not side_streams.glove_samples:
            skipped.append({"bag": bag.name, "side": side,
                            "reason": f"no glove samples on {topics.hand_topic(side, topics.GLOVE_SAMPLES)}"})
            continue
        if not side_streams.ground_truth:
            skipped.append({"bag": bag.name, "side": side, "reason": (
                f"no ground truth on {topics.hand_topic(side, topics.HAND_GROUND_TRUTH)}: frames without ground "
                "truth cannot be cropped (the crop is centred on the true hand) nor labelled")})
            continue
        arrays, record = build_sequence(streams, side, config, glove, progress)
        if record["frames"] == 0:
            skipped.append({"bag": bag.name, "side": side, "reason": "no frame had both an IMU window and ground "
                                                                    "truth", "counts": record})
            continue
        shard = pathlib.Path(out_dir) / record["shard"]
        temporary = shard.with_name(shard.name + ".partial.npz")
        np.savez(temporary, **arrays)
        os.replace(temporary, shard)
        records.append(record)
    return records, skipped


def _source_record(bag: pathlib.Path) -> dict[str, Any]:
    size = sum(p.stat().st_size for p in bag.iterdir() if p.is_file())
    try:
        topic_counts = {t: c for t, (_type, c) in bag_topics(bag).items()}
    except BagError:
        topic_counts = {}
    return {"name": bag.name, "path": str(bag), "size_bytes": int(size), "topics": topic_counts}


def build_dataset(bag_inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, config: DatasetBuildConfig,
                  jobs: int = 1, show_progress: bool = True, log: Callable[[str], None] | None = print) -> dict:
    """Build a dataset directory from bags (see module doc). Returns the manifest.

    ``out_dir`` must not contain a dataset yet (datasets are never overwritten).
    """
    out = pathlib.Path(out_dir)
    if (out / MANIFEST_NAME).exists():
        raise DatasetError(f"{out}: already holds a dataset ({MANIFEST_NAME}); datasets are never overwritten")
    if out.exists() and any(out.glob("*.npz")):
        raise DatasetError(f"{out}: already holds shards (*.npz) without a manifest; use an empty directory")
    bags = find_bags(bag_inputs)
    glove = GloveModel.from_yaml(config_path(config.glove_config))
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    total_images = 0
    for bag in bags:
        try:
            total_images += bag_topics(bag).get(topics.IMAGE, ("", 0))[1] * len(config.sides)
        except BagError:
            pass
    bar = _progress_bar(total_images, show_progress)
    results: dict[str, tuple[list[dict], list[dict]]] = {}
    try:
        if jobs <= 1 or len(bags) == 1:
            for bag in bags:
                results[str(bag)] = _process_bag(str(bag), config, str(out), bar.update if bar else None)
        else:
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
                futures = {pool.submit(_process_bag, str(bag), config, str(out)): bag for bag in bags}
                for future in concurrent.futures.as_completed(futures):
                    bag = futures[future]
                    results[str(bag)] = future.result()
                    if bar is not None:
                        bar.update(bag_topics(bag).get(topics.IMAGE, ("", 0))[1] * len(config.sides))
    finally:
        if bar is not None:
            bar.close()
    sequences, skipped = [], []
    for bag in bags:  # manifest order = sorted bag order, whatever finished first
        records, skips = results[str(bag)]
        sequences.extend(records)
        skipped.extend(skips)
    if log is not None:
        for skip in skipped:
            log(f"skipped {skip['bag']}" + (f" ({skip['side']})" if skip.get("side") else "") + f": {skip['reason']}")
    if not sequences:
        raise DatasetError(f"{out}: no usable sequence in {len(bags)} bag(s) — see the reasons above "
                           "(ground truth is required for every frame that becomes a sample)")
    elapsed = time.perf_counter() - started
    frames = sum(s["frames"] for s in sequences)
    manifest = {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "created_by": "avi_ht_ros.tracker.dataset.build_dataset",
        "ground_truth_required": True,
        "config": config.to_dict(),
        "seed": int(config.seed),
        "glove": {"config": config.glove_config, "name": glove.name, "num_sensors": glove.num_sensors,
                  "sensors": list(glove.sensor_names)},
        "feature_set": config.feature_set,
        "window_length": config.sync.window_length,
        "num_features": _feature_count(glove, config.feature_set),
        "crop_size": config.crop.size,
        "num_views": 1,
        "arrays": SHARD_ARRAYS,
        "sources": [_source_record(bag) for bag in bags],
        "sequences": sequences,
        "skipped": skipped,
        "counts": {"bags": len(bags), "sequences": len(sequences), "frames": frames,
                   "skipped": len(skipped)},
        "build_seconds": round(elapsed, 3),
    }
    temporary = out / (MANIFEST_NAME + ".tmp")
    temporary.write_text(json.dumps(manifest, indent=1))
    os.replace(temporary, out / MANIFEST_NAME)
    if log is not None:
        log(f"{frames} frames from {len(sequences)} sequence(s) of {len(bags)} bag(s) in {elapsed:.1f} s "
            f"({frames / max(elapsed, 1e-9):.1f} frames/s) -> {out}")
    return manifest


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc="dataset", file=sys.stderr, dynamic_ncols=True)


# ======================================================================================
# Reading a dataset
# ======================================================================================
def load_manifest(root: str | os.PathLike) -> dict:
    """The validated manifest of a dataset directory."""
    path = pathlib.Path(root) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: no dataset manifest (build one with `avi-ht dataset`)") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable manifest: {exc}") from exc
    if manifest.get("format") != DATASET_FORMAT or manifest.get("version") != DATASET_VERSION:
        raise DatasetError(f"{path}: not an {DATASET_FORMAT} v{DATASET_VERSION} manifest")
    return manifest


def load_shard(root: str | os.PathLike, record: dict, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Arrays of one sequence's shard (all, or ``names``); never unpickles."""
    path = pathlib.Path(root) / record["shard"]
    try:
        with np.load(path, allow_pickle=False) as data:
            wanted = list(data.files) if names is None else list(names)
            missing = [n for n in wanted if n not in data.files]
            if missing:
                raise DatasetError(f"{path}: shard lacks arrays {missing}")
            return {name: data[name] for name in wanted}
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: shard listed in the manifest is missing") from exc
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable shard: {exc}") from exc


def split_sequences(manifest: dict, validation_fraction: float, seed: int,
                    validation_bags: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """``(train ids, validation ids)`` split by recording (bag): never by frame.

    ``validation_bags`` (bag names) fixes the validation recordings; otherwise a
    ``validation_fraction`` of the bags (at least one when there are two or more and the
    fraction is > 0) is chosen by a seeded hash of the bag names — stable when bags are added.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ConfigError("data.validation_fraction", f"must be in [0, 1), got {validation_fraction}")
    bags = sorted({s["bag"] for s in manifest["sequences"]})
    if validation_bags:
        unknown = sorted(set(validation_bags) - set(bags))
        if unknown:
            raise ConfigError("data.validation_bags", f"not in the dataset: {unknown}; bags: {bags}")
        validation = set(validation_bags)
    else:
        count = int(math.ceil(validation_fraction * len(bags))) if validation_fraction > 0 and len(bags) >= 2 else 0
        count = min(count, len(bags) - 1)
        ranked = sorted(bags, key=lambda b: hashlib.sha256(f"{seed}:{b}".encode()).hexdigest())
        validation = set(ranked[:count])
    train = [s["id"] for s in manifest["sequences"] if s["bag"] not in validation]
    val = [s["id"] for s in manifest["sequences"] if s["bag"] in validation]
    return train, val


@dataclass(frozen=True)
class AugmentationConfig:
    """Load-time augmentation of training clips (AVI-HT §5; see module doc)."""

    enabled: bool = True
    image_noise_sigma_dn: float = 10.0
    """Per-frame Gaussian pixel noise, digital numbers of 255 (paper: σ = 10)."""
    gamma_range: tuple[float, ...] = (0.5, 1.7)
    """Gamma exponent, uniform, one per clip (paper: 0.5–1.7)."""
    fast_motion_probability: float = 0.25
    """Share of clips built from every s-th frame (the paper's fast-motion augmentation)."""
    fast_motion_strides: tuple[int, ...] = (2, 3)

    def validate(self, where: str = "augmentation") -> None:
        if not (math.isfinite(self.image_noise_sigma_dn) and self.image_noise_sigma_dn >= 0):
            raise ConfigError(f"{where}.image_noise_sigma_dn", f"must be >= 0, got {self.image_noise_sigma_dn}")
        if len(self.gamma_range) != 2 or not 0.05 <= self.gamma_range[0] <= self.gamma_range[1] <= 20:
            raise ConfigError(f"{where}.gamma_range", f"needs [low, high] with 0.05 <= low <= high <= 20, "
                                                      f"got {list(self.gamma_range)}")
        if not 0.0 <= self.fast_motion_probability <= 1.0:
            raise ConfigError(f"{where}.fast_motion_probability", f"must be in [0, 1], got "
                                                                  f"{self.fast_motion_probability}")
        if not self.fast_motion_strides or any(int(s) != s or s < 2 for s in self.fast_motion_strides):
            raise ConfigError(f"{where}.fast_motion_strides", f"needs integers >= 2, got "
                                                              f"{list(self.fast_motion_strides)}")


_TRAINING_ARRAYS = ("stamps_ns", "crops", "view_valid", "K_virtual", "R_virtual_from_camera", "imu_features",
                    "imu_valid", "landmarks", "joint_angles", "wrist_rotation", "wrist_translation", "hand_scale",
                    "landmark_visibility", "occlusion_ratio")
_VISION_ARRAYS = ("crops", "view_valid", "K_virtual", "R_virtual_from_camera")
_IMU_ARRAYS = ("imu_features", "imu_valid")


@dataclass
class _Segment:
    sequence: int   # index into the dataset's sequences
    start: int      # first row in the shard
    stop: int       # one past the last row

    @property
    def length(self) -> int:
        return self.stop - self.start


class HandClipDataset(torch.utils.data.Dataset):
    """Clips of ``clip_length`` frames from a dataset directory (see module doc).

    ``training=True``: the clip grid is shifted by a random offset per segment and epoch
    (:meth:`set_epoch`) and :class:`AugmentationConfig` applies. ``training=False``:
    a fixed non-overlapping grid, no augmentation (validation/evaluation).
    ``load_vision`` / ``load_imu`` = False skip the arrays a model does not use.

    An item is a dict of numpy arrays (``[K, ...]``); :func:`collate_clips` turns a list of
    items into a :class:`ClipBatch` (``ModelInputs`` + ``PoseTargets`` with ``[B, K, ...]``).

    The arrays a model needs of the requested sequences are loaded into memory at
    construction (~14 kB per frame with 96² crops: 100k frames ≈ 1.4 GB); loader worker
    processes share them copy-on-write (fork).
    """

    def __init__(self, root: str | os.PathLike, sequence_ids: Sequence[str] | None = None, clip_length: int = 4,
                 training: bool = True, augmentation: AugmentationConfig | None = None, seed: int = 0,
                 max_frame_gap_s: float = 0.05, load_vision: bool = True, load_imu: bool = True):
        if clip_length < 1:
            raise ConfigError("clip_length", f"must be >= 1, got {clip_length}")
        self.root = pathlib.Path(root)
        self.manifest = load_manifest(root)
        by_id = {s["id"]: s for s in self.manifest["sequences"]}
        ids = list(by_id) if sequence_ids is None else list(sequence_ids)
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise DatasetError(f"{self.root}: unknown sequence ids {unknown}")
        self.records = [by_id[i] for i in ids]
        self.clip_length = int(clip_length)
        self.training = bool(training)
        self.augmentation = augmentation if augmentation is not None else AugmentationConfig()
        self.augmentation.validate()
        self.seed = int(seed)
        self.load_vision, self.load_imu = bool(load_vision), bool(load_imu)
        names = [n for n in _TRAINING_ARRAYS if (self.load_vision or n not in _VISION_ARRAYS)
                 and (self.load_imu or n not in _IMU_ARRAYS)]
        self.sequences = [load_shard(self.root, record, names) for record in self.records]
        self.is_left = [record["side"] == "left" for record in self.records]
        self.segments: list[_Segment] = []
        self.frames_in_short_segments = 0
        for index, arrays in enumerate(self.sequences):
            stamps = arrays["stamps_ns"]
            breaks = np.nonzero(np.diff(stamps) > max_frame_gap_s * 1e9)[0] + 1
            bounds = [0, *breaks.tolist(), len(stamps)]
            for start, stop in zip(bounds[:-1], bounds[1:]):
                if stop - start >= self.clip_length:
                    self.segments.append(_Segment(index, start, stop))
                else:
                    self.frames_in_short_segments += stop - start
        self._slots = np.array([seg.length // self.clip_length for seg in self.segments], np.int64)
        self._slot_offsets = np.concatenate([[0], np.cumsum(self._slots)])
        self.epoch = 0
        self._grid_offsets = np.zeros(len(self.segments), np.int64)

    # -- epoch -------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Move the training clip grid (call before each epoch, like ``DistributedSampler.set_epoch``)."""
        self.epoch = int(epoch)
        if self.training and self.clip_length > 1:
            rng = np.random.default_rng([self.seed, self.epoch, 0x5E6])
            self._grid_offsets = rng.integers(0, self.clip_length, size=len(self.segments))
        else:
            self._grid_offsets = np.zeros(len(self.segments), np.int64)

    def __len__(self) -> int:
        return int(self._slot_offsets[-1])

    @property
    def num_frames(self) -> int:
        return int(sum(len(a["stamps_ns"]) for a in self.sequences))

    # -- items -------------------------------------------------------------------------
    def clip_rows(self, index: int, rng: np.random.Generator | None = None) -> tuple[int, np.ndarray, int]:
        """``(sequence index, shard rows [K], stride)`` of item ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        segment_index = int(np.searchsorted(self._slot_offsets, index, side="right") - 1)
        segment = self.segments[segment_index]
        slot = index - int(self._slot_offsets[segment_index])
        k = self.clip_length
        start = segment.start + min(slot * k + int(self._grid_offsets[segment_index]), segment.length - k)
        stride = 1
        augment = self.training and self.augmentation.enabled and rng is not None
        if augment and k > 1:
            u_fast, u_stride = rng.random(2)
            if u_fast < self.augmentation.fast_motion_probability:
                strides = self.augmentation.fast_motion_strides
                stride = int(strides[min(int(u_stride * len(strides)), len(strides) - 1)])
                span = stride * (k - 1)
                if span >= segment.length:
                    stride = 1
                else:
                    start = min(start, segment.stop - 1 - span)
        return segment.sequence, start + stride * np.arange(k), stride

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)]) if self.training else None
        sequence, rows, stride = self.clip_rows(int(index), rng)
        arrays = self.sequences[sequence]
        item: dict[str, Any] = {
            "sequence": sequence, "rows": rows, "stride": stride, "is_left": self.is_left[sequence],
            "hand_scale": arrays["hand_scale"][rows].astype(np.float32),
            "landmarks": arrays["landmarks"][rows], "joint_angles": arrays["joint_angles"][rows],
            "wrist_rotation": arrays["wrist_rotation"][rows], "wrist_translation": arrays["wrist_translation"][rows],
            "landmark_visibility": arrays["landmark_visibility"][rows],
            "occlusion_ratio": arrays["occlusion_ratio"][rows],
        }
        gamma = 1.0
        if self.load_vision:
            crops = arrays["crops"][rows].astype(np.float32)
            view_valid = arrays["view_valid"][rows]
            if rng is not None and self.augmentation.enabled:
                crops, gamma = self._augment_crops(crops, view_valid, rng)
            item.update(crops=(crops / 255.0)[:, None], view_valid=view_valid[:, None],
                        K_virtual=arrays["K_virtual"][rows][:, None],
                        R_virtual_from_camera=arrays["R_virtual_from_camera"][rows][:, None])
        item["gamma"] = gamma
        if self.load_imu:
            item.update(imu_features=arrays["imu_features"][rows], imu_valid=arrays["imu_valid"][rows])
        return item

    def _augment_crops(self, crops: np.ndarray, view_valid: np.ndarray, rng: np.random.Generator):
        """Gamma (per clip) then Gaussian noise (per frame and pixel) on 0..255 crops."""
        aug = self.augmentation
        u_gamma = rng.random()
        noise = rng.standard_normal(crops.shape).astype(np.float32)
        gamma = float(aug.gamma_range[0] + (aug.gamma_range[1] - aug.gamma_range[0]) * u_gamma)
        out = 255.0 * np.power(crops / 255.0, gamma, dtype=np.float32)
        out = np.clip(out + aug.image_noise_sigma_dn * noise, 0.0, 255.0)
        out[~view_valid] = 0.0  # no view stays an all-zero crop, as the tracker feeds it
        return out.astype(np.float32), gamma


@dataclass
class ClipBatch:
    """A collated batch: model inputs and targets ``[B, K, ...]`` plus bookkeeping."""

    inputs: ModelInputs
    targets: PoseTargets
    landmark_visibility: torch.Tensor  # [B, K, 21]
    occlusion_ratio: torch.Tensor      # [B, K]
    sequence: torch.Tensor             # [B] index into the dataset's sequences
    rows: torch.Tensor                 # [B, K] shard rows
    stride: torch.Tensor               # [B]

    @property
    def batch_size(self) -> int:
        return int(self.inputs.hand_scale.shape[0])

    def to(self, device: torch.device | str) -> "ClipBatch":
        def move(value):
            return value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value

        inputs = ModelInputs(**{f.name: move(getattr(self.inputs, f.name)) for f in dataclasses.fields(ModelInputs)})
        targets = PoseTargets(**{f.name: move(getattr(self.targets, f.name)) for f in dataclasses.fields(PoseTargets)})
        return ClipBatch(inputs, targets, move(self.landmark_visibility), move(self.occlusion_ratio),
                         move(self.sequence), move(self.rows), move(self.stride))


def collate_clips(items: list[dict[str, Any]]) -> ClipBatch:
    """Stack :class:`HandClipDataset` items into a :class:`ClipBatch`."""

    def stack(name, dtype=None):
        tensor = torch.from_numpy(np.stack([np.asarray(item[name]) for item in items]))
        return tensor if dtype is None else tensor.to(dtype)

    has_vision, has_imu = "crops" in items[0], "imu_features" in items[0]
    inputs = ModelInputs(
        hand_scale=stack("hand_scale", torch.float32),
        side=torch.tensor([bool(item["is_left"]) for item in items]),
        crops=stack("crops", torch.float32) if has_vision else None,
        K_virtual=stack("K_virtual", torch.float32) if has_vision else None,
        R_virtual_from_camera=stack("R_virtual_from_camera", torch.float32) if has_vision else None,
        view_valid=stack("view_valid", torch.bool) if has_vision else None,
        imu_features=stack("imu_features", torch.float32) if has_imu else None,
        imu_valid=stack("imu_valid", torch.bool) if has_imu else None,
    )
    targets = PoseTargets(landmarks=stack("landmarks", torch.float32), joint_angles=stack("joint_angles", torch.float32),
                          wrist_rotation=stack("wrist_rotation", torch.float32),
                          wrist_translation=stack("wrist_translation", torch.float32))
    return ClipBatch(inputs=inputs, targets=targets, landmark_visibility=stack("landmark_visibility", torch.float32),
                     occlusion_ratio=stack("occlusion_ratio", torch.float32),
                     sequence=torch.tensor([int(item["sequence"]) for item in items]),
                     rows=stack("rows", torch.int64), stride=torch.tensor([int(item["stride"]) for item in items]))
