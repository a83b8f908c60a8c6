"""Evaluation of hand-tracking models exactly as they run live (``avi-ht eval``).

Every model is run through the same code as the fusion node: each recorded (or simulated)
sequence is replayed through :func:`avi_ht_ros.tracker.sync.replay` (one synchronizer per
hand, built by :func:`avi_ht_ros.tracker.sync.live_synchronizer` like the sync node's) and
every synchronized frame goes through the online
:class:`~avi_ht_ros.tracker.tracker.HandTracker` — crops follow the tracker's *previous
estimate*, never the ground truth; the recurrent state is carried and reset as live.

Methods compared on the same frames, in one run:

* each given model (AVI-HT, vision-only, IMU-only checkpoints; any number of each);
* ``<vision model>+ekf`` — the post-hoc EKF baseline (:mod:`avi_ht_ros.models.ekf`) run
  causally on the vision-only tracker's estimates and the glove gyros of the same windows
  ("UMETrack + EKF" of AVI-HT Table 1): filtered joint angles, the vision wrist pose;
* IMU-only models are root-relative: only wrist-aligned metrics (MKPE.T, P.A.T, PA-MPJPE,
  joint angles, pinch) are defined for them, absolute ones are N/A.

Data: a benchmark generated on the fly from a benchmark YAML + seed (``config/benchmark.yaml``:
sequences from :mod:`avi_ht_ros.sim.world`, seeds disjoint from training) or recorded
rosbag2 directories (live topics + ``HandGroundTruth``).

Sensitivity sweeps (AVI-HT §5.2–5.3), on top of the nominal run:

* ``noise`` — IMU error magnitude × 0 … 2 of the native noise floor (simulated sequences
  re-simulate the glove with ``WorldConfig.noise_scale``; images, motion and ground truth are
  unchanged; recorded bags get extra white noise of ``scale`` × the glove's datasheet noise
  density, so ×0 is the recording as is);
* ``shift`` — camera–glove time shift the synchronizer is **not** told about: the glove
  stamps are moved by ``−δ`` so the window paired with the frame at ``t`` holds the IMU data
  measured at ``t + δ`` (δ > 0: IMU from the future, δ < 0: stale IMU);
* ``ablation`` — per-finger sensor groups (thumb, index, middle, ring, pinky, hand_back)
  masked one at a time as dead sensors (``drop``) or all others masked (``only``, the
  paper's Fig. 6 reading), reported as the MKPE.T gap to the vision-only model per
  evaluated finger and per activity.

:func:`write_report` turns :class:`EvalResults` into ``report.md``, ``metrics.json`` and
the PNG figures. docs/EVALUATION.md describes everything for users.
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
import tempfile
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from avi_ht_ros.common import topics
from avi_ht_ros.common.camera import PinholeCamera
from avi_ht_ros.common.config_file import load_yaml_mapping
from avi_ht_ros.common.errors import AviHtError, ConfigError
from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.common.hand_model import (
    FINGER_NAMES,
    FINGER_OF_BONE,
    JOINT_NAMES,
    NUM_JOINTS,
    NUM_LANDMARKS,
    forward_kinematics_numpy,
)
from avi_ht_ros.common.imu import ImuStatus
from avi_ht_ros.common.paths import config_path
from avi_ht_ros.models.ekf import EkfConfig, JointAngleEkf
from avi_ht_ros.models.interface import HandPoseModel
from avi_ht_ros.models.onnx_backend import inference_model
from avi_ht_ros.tracker import metrics as M
from avi_ht_ros.tracker.preprocess import hand_center, window_dict
from avi_ht_ros.tracker.sync import ImuWindow, SyncConfig, SyncStats, live_synchronizer, replay
from avi_ht_ros.tracker.tracker import (
    TRACKING_DEGRADED,
    TRACKING_IMU_ONLY,
    TRACKING_LOST,
    TRACKING_OK,
    TRACKING_VISION_ONLY,
    HandTracker,
    TrackerConfig,
)

__all__ = [
    "SENSITIVITY_SWEEPS", "ABLATION_GROUPS", "ABLATION_MODES", "DEFAULT_BENCHMARK_FILE",
    "GloveData", "HandTrack", "EvalSequence", "EvalModel", "GloveCondition", "EvalOptions",
    "BenchmarkGroup", "BenchmarkConfig", "SequenceSpec", "WorldOverrides",
    "load_benchmark_config", "benchmark_sequences", "simulate_eval_sequence", "prepare_benchmark",
    "load_bag_sequence", "sensor_groups", "sweep_conditions", "synchronize",
    "Evaluator", "EvalResults", "TrackPredictions", "TrackRecord", "evaluate", "write_report",
]

DEFAULT_BENCHMARK_FILE = "benchmark.yaml"
SENSITIVITY_SWEEPS = ("noise", "shift", "ablation")
ABLATION_GROUPS = ("thumb", "index", "middle", "ring", "pinky", "hand_back")
ABLATION_MODES = ("drop", "only")
DEFAULT_NOISE_SCALES = (0.0, 0.5, 1.0, 1.5, 2.0)
DEFAULT_TIME_SHIFTS_S = (-0.4, -0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.4)

TRACKING_STATE_NAMES = {TRACKING_LOST: "lost", TRACKING_OK: "ok", TRACKING_VISION_ONLY: "vision_only",
                        TRACKING_IMU_ONLY: "imu_only", TRACKING_DEGRADED: "degraded"}
_USABLE_STATUS = (int(ImuStatus.OK), int(ImuStatus.STALE), int(ImuStatus.SATURATED))
_DEAD = int(ImuStatus.DEAD)
EKF_SUFFIX = "+ekf"
TRUTH_CROP_SUFFIX = "@truth_crop"
NOMINAL = "nominal"


# ======================================================================================
# Sequences
# ======================================================================================

@dataclasses.dataclass(frozen=True, eq=False)
class GloveData:
    """One glove's samples as the driver publishes them: header stamps on the glove clock."""

    stamps_ns: np.ndarray   # [T] int64
    accel: np.ndarray       # [T, N, 3] float32, m/s², sensor frames
    gyro: np.ndarray        # [T, N, 3] float32, rad/s
    status: np.ndarray      # [T, N] uint8, GloveSample.STATUS_*

    @property
    def num_samples(self) -> int:
        return int(self.stamps_ns.size)

    def samples(self) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """``(stamp_ns, accel, gyro, status)`` tuples for :func:`~avi_ht_ros.tracker.sync.replay`."""
        return [(int(s), a, g, st) for s, a, g, st in zip(self.stamps_ns, self.accel, self.gyro, self.status)]

    def shifted(self, shift_s: float) -> "GloveData":
        """Stamps moved by ``−shift_s``: the frame at ``t`` then gets the IMU data measured at ``t + shift_s``."""
        delta = int(round(shift_s * 1e9))
        return dataclasses.replace(self, stamps_ns=self.stamps_ns - delta)

    def masked(self, sensors: Iterable[int]) -> "GloveData":
        """``sensors`` reported dead (status DEAD, values zero), as the driver reports a dead IMU."""
        sensors = sorted({int(s) for s in sensors})
        if not sensors:
            return self
        accel, gyro, status = self.accel.copy(), self.gyro.copy(), self.status.copy()
        accel[:, sensors] = 0.0
        gyro[:, sensors] = 0.0
        status[:, sensors] = _DEAD
        return dataclasses.replace(self, accel=accel, gyro=gyro, status=status)

    def with_white_noise(self, glove: GloveModel, scale: float, rng: np.random.Generator) -> "GloveData":
        """Extra white noise of ``scale`` × each IMU's datasheet noise density (per-axis σ = ND·√rate)."""
        if scale == 0.0:
            return self
        rate = glove.sample_rate_hz
        accel_sigma = np.array([site.imu.accel_noise_density for site in glove.sites]) * math.sqrt(rate) * scale
        gyro_sigma = np.array([site.imu.gyro_noise_density for site in glove.sites]) * math.sqrt(rate) * scale
        live = np.isin(self.status, _USABLE_STATUS)[..., None]
        accel = self.accel + live * rng.standard_normal(self.accel.shape) * accel_sigma[None, :, None]
        gyro = self.gyro + live * rng.standard_normal(self.gyro.shape) * gyro_sigma[None, :, None]
        return dataclasses.replace(self, accel=accel.astype(np.float32), gyro=gyro.astype(np.float32))


@dataclasses.dataclass(frozen=True, eq=False)
class HandTrack:
    """Ground truth and glove stream of one hand over the camera frames of a sequence."""

    side: str
    hand_scale: float               # the hand-size prior given to the tracker (the user's calibration)
    truth: M.HandPoses              # [F] camera optical frame
    truth_valid: np.ndarray         # [F] bool: ground truth exists for the frame
    occlusion_ratio: np.ndarray     # [F] fraction of occluded landmarks (NaN unknown)
    activity: np.ndarray            # [F] object array of str
    glove: GloveData


@dataclasses.dataclass(eq=False)
class EvalSequence:
    """One sequence to evaluate: camera frames, per-hand truth and glove streams.

    ``time_offset_s`` is the true camera–glove offset (``t_camera = t_glove + offset``); the
    synchronizer is told this value (a calibrated system). ``glove_variant(noise_scale)``
    returns ``{side: GloveData}`` with another IMU error level (noise sweep).
    """

    name: str
    camera: PinholeCamera
    glove_model: GloveModel
    stamps_ns: np.ndarray                      # [F] camera clock
    images: Any                                # indexable: images[k] -> [H, W] uint8
    hands: dict[str, HandTrack]
    time_offset_s: float = 0.0
    info: dict = dataclasses.field(default_factory=dict)
    nominal_noise_scale: float = 1.0
    glove_variant: Callable[[float], dict[str, GloveData]] | None = None

    @property
    def num_frames(self) -> int:
        return int(self.stamps_ns.size)


# ======================================================================================
# Benchmark configuration
# ======================================================================================

_IMU_ONLY_WORLD_FIELDS = ("glove_config", "imu_rate_hz", "imu_noise_config", "imu_noise_preset", "noise_scale",
                          "dropout_rate", "dropout_burst_length", "dead_sensors", "glove_clock_offset_s",
                          "glove_clock_drift_ppm", "time_offset_s")
"""World fields that change only the glove stream, never the images or the ground truth."""


@dataclasses.dataclass(frozen=True)
class BenchmarkGroup:
    """``count`` consecutive-seed sequences sharing an occlusion preset, sides and world overrides."""

    count: int
    occlusion: str | None = None
    sides: tuple[str, ...] | None = None
    overrides: tuple[tuple[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """A held-out benchmark (``config/benchmark.yaml``); see that file for the fields."""

    name: str
    seed: int
    world: Any                                   # sim.world.WorldConfig (base for every group)
    groups: tuple[BenchmarkGroup, ...]
    pck_max_mm: float = M.DEFAULT_PCK_MAX_MM
    pinch_threshold_m: float = M.DEFAULT_PINCH_THRESHOLD_M
    noise_scales: tuple[float, ...] = DEFAULT_NOISE_SCALES
    time_shifts_s: tuple[float, ...] = DEFAULT_TIME_SHIFTS_S
    ablation_groups: tuple[str, ...] = ABLATION_GROUPS
    ablation_mode: str = "drop"
    source: str = ""

    @property
    def num_sequences(self) -> int:
        return sum(g.count for g in self.groups)


@dataclasses.dataclass(frozen=True)
class WorldOverrides:
    """Command-line overrides applied to every benchmark sequence (None = keep the config's)."""

    occlusion: str | None = None
    duration_s: float | None = None
    dead_sensors: tuple[str, ...] | None = None
    time_offset_s: float | None = None
    hand_scale: float | None = None
    noise_scale: float | None = None
    image_scale: float | None = None
    sides: tuple[str, ...] | None = None

    def apply(self, world):
        changes: dict[str, Any] = {}
        if self.duration_s is not None:
            changes["duration_s"] = float(self.duration_s)
        if self.dead_sensors is not None:
            changes["dead_sensors"] = tuple(self.dead_sensors)
        if self.time_offset_s is not None:
            changes["time_offset_s"] = float(self.time_offset_s)
        if self.hand_scale is not None:
            changes["hand_scale_range"] = (float(self.hand_scale), float(self.hand_scale))
        if self.noise_scale is not None:
            changes["noise_scale"] = float(self.noise_scale)
        if self.image_scale is not None:
            changes["image_scale"] = float(self.image_scale)
        if self.sides is not None:
            changes["sides"] = tuple(self.sides)
        return world.replace(**changes) if changes else world


@dataclasses.dataclass(frozen=True)
class SequenceSpec:
    """One benchmark sequence: its world config and seed."""

    name: str
    seed: int
    world: Any
    occlusion: str


def _number_list(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(where, f"must be a non-empty list of numbers, got {value!r}")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(float(item)):
            raise ConfigError(where, f"must be a list of finite numbers, got {value!r}")
        out.append(float(item))
    return tuple(out)


def load_benchmark_config(path: str | os.PathLike | None = None) -> BenchmarkConfig:
    """Read and validate a benchmark YAML (default ``config/benchmark.yaml``).

    Errors raise ``ConfigError("<file>", "<key>: <problem>")``.
    """
    from avi_ht_ros.sim.world import OCCLUSION_LEVELS, load_world_config, world_with_changes

    file = config_path(DEFAULT_BENCHMARK_FILE if path is None else str(path))
    where = str(file)
    doc = load_yaml_mapping(file)
    known = {"name", "seed", "world", "world_overrides", "sequences", "metrics", "sensitivity"}
    for key in doc:
        if key not in known:
            raise ConfigError(where, f"{key}: unknown key; known: {sorted(known)}")
    name = str(doc.get("name", pathlib.Path(file).stem))
    seed = doc.get("seed", 100000)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(where, f"seed: must be an integer >= 0, got {seed!r}")
    world_file = doc.get("world")
    try:
        world = load_world_config(None if world_file is None else config_path(str(world_file)))
        overrides = doc.get("world_overrides") or {}
        if not isinstance(overrides, Mapping):
            raise ConfigError(where, "world_overrides: must be a mapping of WorldConfig fields")
        world = world_with_changes(world, dict(overrides), f"{where}: world_overrides")
    except ConfigError as exc:
        if exc.where.startswith(where):
            raise
        raise ConfigError(where, f"world: {exc}") from None
    groups_doc = doc.get("sequences")
    if not isinstance(groups_doc, list) or not groups_doc:
        raise ConfigError(where, "sequences: must be a non-empty list of groups {count, occlusion, sides, ...}")
    groups = []
    for i, item in enumerate(groups_doc):
        key = f"sequences[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(where, f"{key}: must be a mapping")
        item = dict(item)
        count = item.pop("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(where, f"{key}.count: must be an integer >= 1, got {count!r}")
        occlusion = item.pop("occlusion", None)
        if occlusion is not None and occlusion not in OCCLUSION_LEVELS:
            raise ConfigError(where, f"{key}.occlusion: {occlusion!r} is not one of {list(OCCLUSION_LEVELS)}")
        sides = item.pop("sides", None)
        if sides is not None:
            if not isinstance(sides, list) or not sides or any(s not in topics.SIDES for s in sides):
                raise ConfigError(where, f"{key}.sides: must be a list of {list(topics.SIDES)}, got {sides!r}")
            sides = tuple(sides)
        group = BenchmarkGroup(count=count, occlusion=occlusion, sides=sides, overrides=tuple(sorted(item.items())))
        world_with_changes(world, dict(group.overrides), f"{where}: {key}")  # validate now
        groups.append(group)
    metrics_doc = doc.get("metrics") or {}
    sensitivity = doc.get("sensitivity") or {}
    for section, allowed, value in (("metrics", {"pck_max_mm", "pinch_threshold_m"}, metrics_doc),
                                    ("sensitivity", {"noise_scales", "time_shifts_s", "ablation_groups",
                                                     "ablation_mode"}, sensitivity)):
        if not isinstance(value, Mapping):
            raise ConfigError(where, f"{section}: must be a mapping")
        for key in value:
            if key not in allowed:
                raise ConfigError(where, f"{section}.{key}: unknown key; known: {sorted(allowed)}")
    pck_max = float(metrics_doc.get("pck_max_mm", M.DEFAULT_PCK_MAX_MM))
    pinch = float(metrics_doc.get("pinch_threshold_m", M.DEFAULT_PINCH_THRESHOLD_M))
    if not (pck_max > 0 and 0 < pinch < 0.2):
        raise ConfigError(where, f"metrics: need pck_max_mm > 0 and 0 < pinch_threshold_m < 0.2, got {pck_max}, {pinch}")
    noise_scales = _number_list(sensitivity.get("noise_scales", list(DEFAULT_NOISE_SCALES)),
                                f"{where}: sensitivity.noise_scales")
    if min(noise_scales) < 0:
        raise ConfigError(where, f"sensitivity.noise_scales: must be >= 0, got {list(noise_scales)}")
    shifts = _number_list(sensitivity.get("time_shifts_s", list(DEFAULT_TIME_SHIFTS_S)),
                          f"{where}: sensitivity.time_shifts_s")
    ablation_groups = tuple(sensitivity.get("ablation_groups", list(ABLATION_GROUPS)))
    unknown = [g for g in ablation_groups if g not in ABLATION_GROUPS]
    if unknown or not ablation_groups:
        raise ConfigError(where, f"sensitivity.ablation_groups: {unknown or 'empty'}; known: {list(ABLATION_GROUPS)}")
    mode = sensitivity.get("ablation_mode", "drop")
    if mode not in ABLATION_MODES:
        raise ConfigError(where, f"sensitivity.ablation_mode: {mode!r} is not one of {list(ABLATION_MODES)}")
    return BenchmarkConfig(name=name, seed=seed, world=world, groups=tuple(groups), pck_max_mm=pck_max,
                           pinch_threshold_m=pinch, noise_scales=noise_scales, time_shifts_s=shifts,
                           ablation_groups=ablation_groups, ablation_mode=mode, source=where)


def benchmark_sequences(config: BenchmarkConfig, seed: int | None = None,
                        overrides: WorldOverrides = WorldOverrides()) -> list[SequenceSpec]:
    """The sequences of a benchmark: sequence ``i`` (over the groups, in order) has seed ``seed + i``."""
    from avi_ht_ros.sim.world import world_with_changes

    first = config.seed if seed is None else int(seed)
    if first < 0:
        raise ConfigError("seed", f"must be >= 0, got {first}")
    specs = []
    index = 0
    for group in config.groups:
        occlusion = overrides.occlusion or group.occlusion
        world = config.world.with_occlusion(occlusion) if occlusion else config.world
        world = world_with_changes(world, dict(group.overrides), f"{config.source}: sequences")
        if group.sides is not None:
            world = world.replace(sides=group.sides)
        world = overrides.apply(world)
        for _ in range(group.count):
            s = first + index
            specs.append(SequenceSpec(name=f"seq_{s}", seed=s, world=world, occlusion=occlusion or "config"))
            index += 1
    return specs


# ======================================================================================
# Simulated sequences (with an on-disk cache of the rendered images)
# ======================================================================================

def _simulator_fingerprint() -> str:
    """Hash of the simulator sources: a cached render is reused only with identical code."""
    import avi_ht_ros.sim as sim_package

    digest = hashlib.sha256()
    root = pathlib.Path(sim_package.__file__).parent
    for name in ("world.py", "render.py", "motion.py"):
        file = root / name
        if file.exists():
            digest.update(file.read_bytes())
    for name in ("camera.py", "hand_model.py"):
        digest.update((root.parent / "common" / name).read_bytes())
    return digest.hexdigest()[:16]


def render_cache_key(spec: SequenceSpec) -> str:
    """Cache file stem of a sequence's rendering: world fields that affect pixels + seed + simulator code."""
    world = {k: v for k, v in spec.world.to_dict().items() if k not in _IMU_ONLY_WORLD_FIELDS}
    text = json.dumps({"world": world, "seed": spec.seed, "code": _simulator_fingerprint()}, sort_keys=True)
    return f"{spec.name}-{hashlib.sha256(text.encode()).hexdigest()[:20]}"


_RENDER_FIELDS = ("visibility", "landmark_occlusion", "occlusion_ratio", "object_pixel_occlusion_ratio", "rendered")


def _render(simulator, progress: Callable[[int], None] | None = None) -> np.ndarray:
    images = np.empty((simulator.num_frames, simulator.camera.height, simulator.camera.width), np.uint8)
    for k in range(simulator.num_frames):
        frame = simulator.render_frame(k)
        simulator.record(frame)
        images[k] = frame.image
        if progress is not None:
            progress(1)
    return images


def _save_render(simulator, images: np.ndarray, path: pathlib.Path) -> None:
    """Images and the render-derived ground truth of every hand, written atomically."""
    arrays = {"images": images}
    for side, hand in simulator.hands.items():
        for field in _RENDER_FIELDS:
            arrays[f"{side}.{field}"] = getattr(hand, field)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez_compressed(temporary, **arrays)
    os.replace(temporary, path)


def render_to_cache(spec: SequenceSpec, cache_dir: str | os.PathLike) -> pathlib.Path:
    """Render ``spec`` into ``cache_dir`` (no-op if present); returns the ``.npz`` path."""
    from avi_ht_ros.sim.world import SequenceSimulator

    path = pathlib.Path(cache_dir) / f"{render_cache_key(spec)}.npz"
    if not path.exists():
        simulator = SequenceSimulator(spec.world, spec.seed)
        _save_render(simulator, _render(simulator), path)
    return path


def simulate_eval_sequence(spec: SequenceSpec, cache_dir: str | os.PathLike | None = None,
                           progress: Callable[[int], None] | None = None) -> EvalSequence:
    """Simulate one benchmark sequence (rendering, or loading the render from ``cache_dir``)."""
    from avi_ht_ros.sim.world import SequenceSimulator

    simulator = SequenceSimulator(spec.world, spec.seed)
    cached = None if cache_dir is None else pathlib.Path(cache_dir) / f"{render_cache_key(spec)}.npz"
    if cached is not None and cached.exists():
        with np.load(cached) as data:
            images = data["images"]
            for side, hand in simulator.hands.items():
                for field in _RENDER_FIELDS:
                    getattr(hand, field)[...] = data[f"{side}.{field}"]
        if progress is not None:
            progress(simulator.num_frames)
    else:
        images = _render(simulator, progress)
        if cached is not None:
            _save_render(simulator, images, cached)
    return _eval_sequence_from_simulator(simulator, spec, images)


def _glove_data(stream) -> GloveData:
    return GloveData(np.asarray(stream.stamps_ns, np.int64), np.asarray(stream.accel, np.float32),
                     np.asarray(stream.gyro, np.float32), np.asarray(stream.status, np.uint8))


def _eval_sequence_from_simulator(simulator, spec: SequenceSpec, images: np.ndarray) -> EvalSequence:
    from avi_ht_ros.sim.world import SequenceSimulator

    hands = {}
    gloves = simulator.gloves
    for side, truth in simulator.hands.items():
        rendered = np.asarray(truth.rendered, bool)
        hands[side] = HandTrack(
            side=side, hand_scale=float(truth.hand_scale),
            truth=M.HandPoses(truth.landmarks, truth.joint_angles, truth.wrist_rotation, truth.wrist_position),
            truth_valid=rendered.copy(),
            occlusion_ratio=np.where(rendered, truth.occlusion_ratio, np.nan),
            activity=np.asarray(truth.activity, dtype=object), glove=_glove_data(gloves[side]))

    def glove_variant(noise_scale: float) -> dict[str, GloveData]:
        # the same glove with every IMU error x noise_scale, worn and calibrated as in the recording; a
        # glove whose calibration the driver refuses (e.g. turn-on biases of 0.2 g at x10) cannot be used
        variant = SequenceSimulator(spec.world.replace(noise_scale=float(noise_scale)), spec.seed)
        try:
            return {side: _glove_data(stream) for side, stream in variant.gloves.items()}
        except ConfigError as exc:
            raise ConfigError(f"IMU noise x{noise_scale:g}", f"{spec.name}: {exc}") from exc

    info = {"seed": spec.seed, "occlusion": spec.occlusion, "sides": list(simulator.sides),
            "duration_s": spec.world.duration_s, "noise_scale": spec.world.noise_scale,
            "dead_sensors": list(spec.world.dead_sensors), "time_offset_s": spec.world.time_offset_s,
            "hand_scales": {s: float(h.hand_scale) for s, h in simulator.hands.items()}}
    return EvalSequence(name=spec.name, camera=simulator.camera, glove_model=simulator.glove,
                        stamps_ns=np.asarray(simulator.camera_stamps_ns, np.int64), images=images, hands=hands,
                        time_offset_s=float(spec.world.time_offset_s), info=info,
                        nominal_noise_scale=float(spec.world.noise_scale), glove_variant=glove_variant)


def prepare_benchmark(specs: Sequence[SequenceSpec], cache_dir: str | os.PathLike | None = None,
                      jobs: int = 1, progress: Callable[[int], None] | None = None) -> Iterator[EvalSequence]:
    """Yield the benchmark's sequences in order.

    ``jobs >= 1`` renders up to ``jobs`` sequences ahead in worker processes (into
    ``cache_dir``, or a temporary directory) while the caller evaluates the current one;
    ``jobs = 0`` renders in this process, one sequence at a time.
    """
    if jobs <= 0:
        for spec in specs:
            yield simulate_eval_sequence(spec, cache_dir, progress)
        return
    with tempfile.TemporaryDirectory(prefix="avi_ht_eval_") as scratch:
        directory = pathlib.Path(cache_dir) if cache_dir is not None else pathlib.Path(scratch)
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            pending: dict[int, concurrent.futures.Future] = {}
            try:
                for i in range(min(jobs, len(specs))):
                    pending[i] = pool.submit(render_to_cache, specs[i], directory)
                for i, spec in enumerate(specs):
                    pending.pop(i).result()
                    following = i + jobs
                    if following < len(specs):
                        pending[following] = pool.submit(render_to_cache, specs[following], directory)
                    sequence = simulate_eval_sequence(spec, directory, progress)
                    if cache_dir is None:
                        (directory / f"{render_cache_key(spec)}.npz").unlink(missing_ok=True)
                    yield sequence
            finally:  # stopped early (error, interrupt): do not render what nobody will read
                for future in pending.values():
                    future.cancel()


# ======================================================================================
# Recorded bags
# ======================================================================================

def load_bag_sequence(path: str | os.PathLike, glove: GloveModel | None = None,
                      time_offset_s: float | None = None) -> EvalSequence:
    """A recorded rosbag2 with the live topics and ``HandGroundTruth`` per hand.

    The streams are read by the dataset builder's reader
    (:func:`avi_ht_ros.tracker.dataset.read_bag_streams`: malformed glove samples and those
    with another IMU count are dropped and counted, as the live node does), the images in a
    second pass. The glove layout and camera–glove offset come from the simulator's
    ``/sim/config`` topic when present, else from ``glove`` (default: the reference glove)
    and ``time_offset_s`` (default 0); the camera is the bag's first ``CameraInfo``. Frames
    without (finite) ground truth are tracked but not scored.
    """
    from avi_ht_ros.io import convert
    from avi_ht_ros.io.bag import bag_topics, read_messages
    from avi_ht_ros.tracker.dataset import read_bag_streams

    path = pathlib.Path(path)
    available = bag_topics(path)
    sides = [s for s in topics.SIDES if topics.hand_topic(s, topics.GLOVE_SAMPLES) in available
             and topics.hand_topic(s, topics.HAND_GROUND_TRUTH) in available]
    if topics.IMAGE not in available or topics.CAMERA_INFO not in available or not sides:
        raise AviHtError(f"{path}: needs {topics.IMAGE}, {topics.CAMERA_INFO} and, for at least one hand, "
                         f"/<side>/{topics.GLOVE_SAMPLES} and /<side>/{topics.HAND_GROUND_TRUTH}; "
                         f"has {sorted(available)}")
    streams = read_bag_streams(path, sides, None if glove is None else glove.num_sensors)
    world_doc = streams.sim_world
    if not streams.cameras or not streams.camera_stamps_ns:
        raise AviHtError(f"{path}: no camera frames")
    camera = streams.cameras[0]
    if glove is None:
        glove = GloveModel.from_yaml(config_path(world_doc.get("glove_config", "glove_12imu.yaml")))
        for side_streams in streams.sides.values():
            side_streams.keep_sensor_count(glove.num_sensors)
    offset = float(world_doc.get("time_offset_s", 0.0)) if time_offset_s is None else float(time_offset_s)
    images = [np.array(convert.image_from_msg(m.msg)) for m in read_messages(path, [topics.IMAGE])]
    if len(images) != len(streams.camera_stamps_ns):
        raise AviHtError(f"{path}: {len(images)} images but {len(streams.camera_stamps_ns)} image stamps")
    order = np.argsort(np.asarray(streams.camera_stamps_ns, np.int64), kind="stable")
    stamps_ns = np.asarray(streams.camera_stamps_ns, np.int64)[order]
    images = [images[i] for i in order]
    frames = len(stamps_ns)
    hands = {}
    for side in sides:
        side_streams = streams.sides[side]
        rows = side_streams.glove_samples
        if not rows:
            continue
        glove_data = GloveData(np.array([r[0] for r in rows], np.int64), np.stack([r[1] for r in rows]),
                               np.stack([r[2] for r in rows]), np.stack([r[3] for r in rows]))
        landmarks = np.full((frames, NUM_LANDMARKS, 3), np.nan)
        angles = np.full((frames, NUM_JOINTS), np.nan)
        rotations = np.tile(np.eye(3), (frames, 1, 1))
        translations = np.full((frames, 3), np.nan)
        occlusion = np.full(frames, np.nan)
        activity = np.full(frames, "", dtype=object)
        valid = np.zeros(frames, bool)
        scales = []
        for k, stamp in enumerate(stamps_ns):
            truth = side_streams.ground_truth.get(int(stamp))
            if truth is None or not truth.is_finite:
                continue
            landmarks[k] = truth.landmarks
            angles[k] = truth.joint_angles
            rotations[k] = truth.wrist_rotation
            translations[k] = truth.wrist_translation
            occlusion[k] = truth.occlusion_ratio
            activity[k] = truth.activity
            scales.append(truth.hand_scale)
            valid[k] = True
        hands[side] = HandTrack(side=side, hand_scale=float(np.median(scales)) if scales else 1.0,
                                truth=M.HandPoses(landmarks, angles, rotations, translations), truth_valid=valid,
                                occlusion_ratio=occlusion, activity=activity, glove=glove_data)
    if not hands:
        raise AviHtError(f"{path}: no glove samples")
    nominal = {side: hand.glove for side, hand in hands.items()}

    def glove_variant(scale: float) -> dict[str, GloveData]:
        return {side: data.with_white_noise(glove, scale, np.random.default_rng([int(scale * 1000), i]))
                for i, (side, data) in enumerate(nominal.items())}

    info = {"bag": str(path), "sides": list(hands), "time_offset_s": offset,
            "simulated": bool(world_doc), "hand_scales": {s: h.hand_scale for s, h in hands.items()},
            "malformed_glove_samples": {s: streams.sides[s].malformed_glove_samples for s in hands}}
    return EvalSequence(name=path.name, camera=camera, glove_model=glove, stamps_ns=stamps_ns, images=images,
                        hands=hands, time_offset_s=offset, info=info, nominal_noise_scale=0.0,
                        glove_variant=glove_variant)


# ======================================================================================
# Models, conditions, options
# ======================================================================================

@dataclasses.dataclass(eq=False)
class EvalModel:
    """A model to evaluate: its display name, the network and where it came from."""

    name: str
    model: HandPoseModel
    source: str = ""
    metadata: dict = dataclasses.field(default_factory=dict)
    truth_crops: bool = False
    """Analysis: crops centred on the true hand centre instead of the tracker's own estimate."""

    @property
    def kind(self) -> str:
        return self.model.config.type

    @property
    def uses_imu(self) -> bool:
        return bool(self.model.config.uses_imu)

    @property
    def root_relative(self) -> bool:
        return bool(getattr(self.model, "root_relative", False))

    @property
    def window_length(self) -> int:
        return int(self.model.config.imu_encoder.window_length)

    @property
    def parameters(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))


@dataclasses.dataclass(frozen=True)
class GloveCondition:
    """How the glove stream of a run differs from the recording (``sweep`` ``nominal`` = not at all)."""

    sweep: str
    value: Any = None
    noise_scale: float | None = None       # None: the sequence's own IMU error level
    shift_s: float = 0.0
    masked_group: str | None = None        # ablation: sensor group (mode decides drop/only)
    ablation_mode: str = "drop"

    @property
    def label(self) -> str:
        if self.sweep == NOMINAL:
            return NOMINAL
        if self.sweep == "noise":
            return f"noise={self.noise_scale:g}"
        if self.sweep == "shift":
            return f"shift={self.shift_s:+.3f}s"
        return f"{self.ablation_mode}={self.masked_group}"

    def masked_sensors(self, groups: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
        if self.masked_group is None:
            return ()
        chosen = set(groups[self.masked_group])
        if self.ablation_mode == "only":
            return tuple(sorted({s for members in groups.values() for s in members} - chosen))
        return tuple(sorted(chosen))

    def is_nominal_for(self, sequence: EvalSequence) -> bool:
        """Whether this run would reproduce the nominal run on ``sequence`` exactly."""
        if self.sweep == NOMINAL:
            return True
        if self.sweep == "noise":
            return self.noise_scale == sequence.nominal_noise_scale
        if self.sweep == "shift":
            return int(round(self.shift_s * 1e9)) == 0
        return False


def sweep_conditions(sweep: str, values: Sequence, ablation_mode: str = "drop") -> list[GloveCondition]:
    """The conditions of one sensitivity sweep."""
    if sweep == "noise":
        return [GloveCondition("noise", float(v), noise_scale=float(v)) for v in values]
    if sweep == "shift":
        return [GloveCondition("shift", float(v), shift_s=float(v)) for v in values]
    if sweep == "ablation":
        if ablation_mode not in ABLATION_MODES:
            raise ConfigError("ablation_mode", f"{ablation_mode!r} is not one of {list(ABLATION_MODES)}")
        for group in values:
            if group not in ABLATION_GROUPS:
                raise ConfigError("ablation_groups", f"{group!r} is not one of {list(ABLATION_GROUPS)}")
        return [GloveCondition("ablation", g, masked_group=g, ablation_mode=ablation_mode) for g in values]
    raise ConfigError("sensitivity", f"{sweep!r} is not one of {list(SENSITIVITY_SWEEPS)}")


def sensor_groups(glove: GloveModel) -> dict[str, tuple[int, ...]]:
    """Sensor indices per finger group (``thumb`` … ``pinky``; ``hand_back`` = sensors on the palm)."""
    groups: dict[str, list[int]] = {g: [] for g in ABLATION_GROUPS}
    for sensor, bone in enumerate(glove.sensor_bone_indices):
        finger = FINGER_OF_BONE[int(bone)]
        groups["hand_back" if finger == "palm" else finger].append(sensor)
    return {g: tuple(v) for g, v in groups.items()}


@dataclasses.dataclass
class EvalOptions:
    """What to run and how (defaults: the live tracker and synchronizer settings)."""

    tracker: TrackerConfig = dataclasses.field(default_factory=TrackerConfig)
    sync_overrides: dict = dataclasses.field(default_factory=dict)
    """SyncConfig fields other than window_length/imu_rate_hz/time_offset_s (set per model/glove/sequence)."""
    ekf: bool = True
    ekf_config: EkfConfig = dataclasses.field(default_factory=EkfConfig)
    pck_max_mm: float = M.DEFAULT_PCK_MAX_MM
    pinch_threshold_m: float = M.DEFAULT_PINCH_THRESHOLD_M
    sensitivity: tuple[str, ...] = ()
    noise_scales: tuple[float, ...] = DEFAULT_NOISE_SCALES
    time_shifts_s: tuple[float, ...] = DEFAULT_TIME_SHIFTS_S
    ablation_groups: tuple[str, ...] = ABLATION_GROUPS
    ablation_mode: str = "drop"
    reference: str | None = None
    """Name of the vision-only model AVI-HT is compared with (default: the first vision-only model)."""
    truth_crops: bool = False
    """Also run every vision model with crops centred on the true hand centre (``<name>@truth_crop``):
    what the tracking loop's crop placement costs (nominal glove only)."""
    threads: int = 1
    backend: str = "torch"
    """Runtime of the networks in the tracker (:data:`avi_ht_ros.models.config.INFERENCE_BACKENDS`);
    the reference is PyTorch; ONNX Runtime (the nodes' default) halves the network's time (the default
    benchmark draw: 54 s instead of 70.5 s, the same figures to ~0.2 mm)."""
    progress: bool = True

    def conditions(self) -> list[GloveCondition]:
        out = [GloveCondition(NOMINAL)]
        for sweep in self.sensitivity:
            values = {"noise": self.noise_scales, "shift": self.time_shifts_s, "ablation": self.ablation_groups}[sweep]
            out += sweep_conditions(sweep, values, self.ablation_mode)
        return out


# ======================================================================================
# Running
# ======================================================================================

def synchronize(glove: GloveData, glove_model: GloveModel, stamps_ns: np.ndarray, time_offset_s: float,
                window_length: int = 14, overrides: Mapping[str, Any] | None = None
                ) -> tuple[list[tuple[int, ImuWindow]], SyncStats]:
    """Replay one glove stream and the camera frames through the live synchronizer.

    Returns ``[(frame index, window)]`` in frame order (frames the synchronizer drops are
    absent) and its statistics. The synchronizer is told ``time_offset_s`` only.
    """
    config = SyncConfig(**{**dict(overrides or {}), "window_length": int(window_length),
                           "imu_rate_hz": float(glove_model.sample_rate_hz), "time_offset_s": float(time_offset_s)})
    synchronizer = live_synchronizer(config, glove_model)
    frames = [(int(s), k) for k, s in enumerate(stamps_ns)]
    results = replay(glove.samples(), frames, synchronizer)
    return [(int(r.payload), r.window) for r in results], synchronizer.stats


@dataclasses.dataclass(eq=False)
class TrackPredictions:
    """One method's estimates over the frames of one hand track (NaN / −1 where not run)."""

    landmarks: np.ndarray
    joint_angles: np.ndarray
    wrist_rotation: np.ndarray
    wrist_translation: np.ndarray
    sigma: np.ndarray
    tracking_state: np.ndarray
    vision_weight: np.ndarray
    step_ms: np.ndarray

    @staticmethod
    def empty(frames: int) -> "TrackPredictions":
        return TrackPredictions(
            landmarks=np.full((frames, NUM_LANDMARKS, 3), np.nan), joint_angles=np.full((frames, NUM_JOINTS), np.nan),
            wrist_rotation=np.full((frames, 3, 3), np.nan), wrist_translation=np.full((frames, 3), np.nan),
            sigma=np.full((frames, NUM_LANDMARKS), np.nan), tracking_state=np.full(frames, -1, np.int8),
            vision_weight=np.full(frames, np.nan), step_ms=np.full(frames, np.nan))

    @property
    def processed(self) -> np.ndarray:
        return self.tracking_state >= 0

    def poses(self, index: np.ndarray) -> M.HandPoses:
        return M.HandPoses(self.landmarks[index], self.joint_angles[index], self.wrist_rotation[index],
                           self.wrist_translation[index])


@dataclasses.dataclass(eq=False)
class TrackRecord:
    """Truth, labels and every method's predictions under every condition for one hand of one sequence."""

    key: str
    sequence: str
    side: str
    truth: M.HandPoses
    truth_valid: np.ndarray
    occlusion_ratio: np.ndarray
    activity: np.ndarray
    info: dict
    predictions: dict[tuple[str, str], TrackPredictions] = dataclasses.field(default_factory=dict)
    sync_stats: dict[str, dict] = dataclasses.field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return self.truth.num_frames


@dataclasses.dataclass
class MethodInfo:
    name: str
    kind: str                  # avi_ht | vision_only | imu_only | ekf
    root_relative: bool
    uses_imu: bool
    source: str = ""
    parameters: int = 0
    base: str | None = None    # ekf: the vision model it filters
    metadata: dict = dataclasses.field(default_factory=dict)


class Evaluator:
    """Runs models over sequences with :class:`HandTracker`, collecting :class:`EvalResults`.

    ``window_observer(info)`` (optional) is called before every tracker step of an
    IMU-consuming model with ``info = {"track", "condition", "model", "frame", "stamp_ns",
    "window"}`` — ``window`` being exactly the dict the tracker receives.
    """

    def __init__(self, models: Sequence[EvalModel], options: EvalOptions | None = None,
                 window_observer: Callable[[dict], None] | None = None):
        if not models:
            raise ConfigError("models", "nothing to evaluate")
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ConfigError("models", f"model names must be unique, got {names}")
        self.options = options or EvalOptions()
        self.models = list(models) + [
            dataclasses.replace(m, name=m.name + TRUTH_CROP_SUFFIX, truth_crops=True)
            for m in models if self.options.truth_crops and m.model.config.uses_vision]
        self.observer = window_observer
        self._runtimes: dict = {}  # network -> what the tracker calls on the backend (built on first use)
        self.backend_notes: dict[str, str] = {}
        self.conditions = self.options.conditions()
        vision = [m for m in self.models if m.kind == "vision_only" and not m.truth_crops]
        reference = self.options.reference
        if reference is not None and reference not in {m.name for m in vision}:
            raise ConfigError("reference", f"{reference!r} is not a vision-only model among {names}")
        self.reference = reference or (vision[0].name if vision else None)
        self.methods: list[MethodInfo] = [
            MethodInfo(m.name, m.kind, m.root_relative, m.uses_imu, m.source, m.parameters, None,
                       _plain_metadata(m.metadata)) for m in self.models]
        if self.options.ekf:
            self.methods += [MethodInfo(m.name + EKF_SUFFIX, "ekf", False, True, m.source, 0, m.name)
                             for m in vision]

    # -- which methods run in which condition ----------------------------------------------
    def _models_for(self, condition: GloveCondition) -> list[EvalModel]:
        if condition.sweep == NOMINAL:
            return self.models
        if condition.sweep == "ablation":
            return [m for m in self.models if m.kind == "avi_ht" and not m.truth_crops]
        return [m for m in self.models if m.uses_imu and not m.truth_crops]

    def _ekf_for(self, condition: GloveCondition) -> list[MethodInfo]:
        if not self.options.ekf or condition.sweep == "ablation":
            return []
        return [m for m in self.methods if m.kind == "ekf"]

    def planned_steps(self, frames: int) -> int:
        """Tracker/filter steps for a track of ``frames`` frames (progress bar total)."""
        return frames * sum(len(self._models_for(c)) + len(self._ekf_for(c)) for c in self.conditions)

    # -- the run ---------------------------------------------------------------------------
    def run(self, sequences: Iterable[EvalSequence], expected_frames: int | None = None,
            source: dict | None = None) -> "EvalResults":
        from tqdm import tqdm

        previous_threads = torch.get_num_threads()
        torch.set_num_threads(int(self.options.threads))
        started = time.perf_counter()
        tracks: list[TrackRecord] = []
        prepare_s = 0.0
        bar = tqdm(total=None if expected_frames is None else self.planned_steps(expected_frames),
                   unit="step", desc="eval", disable=not self.options.progress, dynamic_ncols=True)
        try:
            iterator = iter(sequences)
            while True:
                t0 = time.perf_counter()
                try:
                    sequence = next(iterator)
                except StopIteration:
                    break
                prepare_s += time.perf_counter() - t0
                for side in sequence.hands:
                    tracks.append(self._evaluate_track(sequence, side, bar))
        finally:
            bar.close()
            torch.set_num_threads(previous_threads)
        wall = time.perf_counter() - started
        return EvalResults(methods=self.methods, conditions=self.conditions, tracks=tracks, options=self.options,
                           reference=self.reference, source=dict(source or {}),
                           timing={"wall_s": wall, "prepare_s": prepare_s, "track_s": wall - prepare_s,
                                   "threads": int(self.options.threads), "backend": dict(self.backend_notes)})

    def _evaluate_track(self, sequence: EvalSequence, side: str, bar) -> TrackRecord:
        hand = sequence.hands[side]
        record = TrackRecord(key=f"{sequence.name}/{side}", sequence=sequence.name, side=side, truth=hand.truth,
                             truth_valid=np.asarray(hand.truth_valid, bool), occlusion_ratio=hand.occlusion_ratio,
                             activity=hand.activity, info={**sequence.info, "hand_scale": hand.hand_scale})
        groups = sensor_groups(sequence.glove_model)
        variants: dict[float, dict[str, GloveData]] = {}
        by_name = {m.name: m for m in self.models}
        for condition in self.conditions:
            models = self._models_for(condition)
            ekfs = self._ekf_for(condition)
            if not models and not ekfs:
                continue
            if condition.sweep != NOMINAL and condition.is_nominal_for(sequence):
                for method in [m.name for m in models] + [e.name for e in ekfs]:
                    record.predictions[(condition.label, method)] = record.predictions[(NOMINAL, method)]
                record.sync_stats[condition.label] = record.sync_stats[NOMINAL]
                bar.update(record.num_frames * (len(models) + len(ekfs)))
                continue
            glove = hand.glove
            if condition.sweep == "noise":
                if sequence.glove_variant is None:
                    raise AviHtError(f"{sequence.name}: no way to change the IMU noise of this sequence")
                if condition.noise_scale not in variants:
                    variants[condition.noise_scale] = sequence.glove_variant(condition.noise_scale)
                glove = variants[condition.noise_scale][side]
            glove = glove.shifted(condition.shift_s) if condition.shift_s else glove
            glove = glove.masked(condition.masked_sensors(groups))
            lengths = [m.window_length for m in models] + [by_name[e.base].window_length for e in ekfs]
            windows: dict[int, list] = {}
            for length in dict.fromkeys(lengths):   # one replay per distinct window length, in order
                windows[length], stats = synchronize(glove, sequence.glove_model, sequence.stamps_ns,
                                                     sequence.time_offset_s, length, self.options.sync_overrides)
                record.sync_stats.setdefault(condition.label, dataclasses.asdict(stats))
            for entry in models:
                record.predictions[(condition.label, entry.name)] = self._track(
                    entry, sequence, hand, windows[entry.window_length], record.key, condition.label, bar)
            for ekf in ekfs:
                record.predictions[(condition.label, ekf.name)] = self._run_ekf(
                    sequence, hand, windows[by_name[ekf.base].window_length],
                    record.predictions[(NOMINAL, ekf.base)], bar)
        return record

    def _runtime(self, entry: EvalModel):
        """``entry``'s network on the options' backend (one per model and process)."""
        if entry.model not in self._runtimes:
            runtime, note = inference_model(entry.model, self.options.backend, num_threads=int(self.options.threads))
            self._runtimes[entry.model], self.backend_notes[entry.name] = runtime, note
        return self._runtimes[entry.model]

    def _track(self, entry: EvalModel, sequence: EvalSequence, hand: HandTrack, synced: list, track_key: str,
               condition: str, bar) -> TrackPredictions:
        tracker_config = self.options.tracker
        if entry.model.config.uses_vision:  # each model gets crops of the size it takes
            tracker_config = dataclasses.replace(tracker_config, crop_size=entry.model.config.vision_encoder.crop_size)
        tracker = HandTracker(self._runtime(entry), sequence.camera, sequence.glove_model, hand.side, tracker_config,
                              hand_scale=hand.hand_scale)
        out = TrackPredictions.empty(sequence.num_frames)
        observe = self.observer is not None and entry.uses_imu
        for frame, window in synced:
            data = window_dict(window)
            if observe:
                self.observer({"track": track_key, "condition": condition, "model": entry.name, "frame": frame,
                               "stamp_ns": int(window.camera_stamp_ns), "window": data})
            center = None
            if entry.truth_crops and hand.truth_valid[frame]:
                center = hand_center(hand.truth.landmarks[frame])
            start = time.perf_counter()
            estimate = tracker.step(int(window.camera_stamp_ns), sequence.images[frame], data, crop_center=center)
            out.step_ms[frame] = (time.perf_counter() - start) * 1e3
            out.landmarks[frame] = estimate.landmarks
            out.joint_angles[frame] = estimate.joint_angles
            out.wrist_rotation[frame] = estimate.wrist_rotation
            out.wrist_translation[frame] = estimate.wrist_translation
            out.sigma[frame] = estimate.sigma
            out.tracking_state[frame] = estimate.tracking_state
            out.vision_weight[frame] = estimate.vision_weight
            bar.update(1)
        return out

    def _run_ekf(self, sequence: EvalSequence, hand: HandTrack, synced: list, vision: TrackPredictions,
                 bar) -> TrackPredictions:
        """The post-hoc EKF, causal: predict with the gyro samples since the last frame, update with vision."""
        glove = sequence.glove_model
        ekf = JointAngleEkf(glove, self.options.ekf_config, side=hand.side, hand_scale=hand.hand_scale)
        out = TrackPredictions.empty(sequence.num_frames)
        sample_dt = 1.0 / glove.sample_rate_hz
        last_stamp: int | None = None
        for frame, window in synced:
            state = int(vision.tracking_state[frame])
            if state < 0:        # the vision tracker did not see this frame (other condition)
                bar.update(1)
                continue
            start = time.perf_counter()
            if state == TRACKING_LOST:
                ekf.reset()
                last_stamp = None
                angles = vision.joint_angles[frame]
            else:
                if last_stamp is not None and ekf.state is not None:
                    new = window.valid & (window.stamps_ns > last_stamp)
                    if new.any():
                        usable = np.isin(window.status[new], _USABLE_STATUS)
                        ekf.predict(window.gyro[new], sample_dt, usable)
                angles = ekf.update(vision.joint_angles[frame], vision.sigma[frame])
                if window.valid.any():
                    last_stamp = int(window.stamps_ns[window.valid][-1])
            out.joint_angles[frame] = angles
            out.wrist_rotation[frame] = vision.wrist_rotation[frame]
            out.wrist_translation[frame] = vision.wrist_translation[frame]
            out.sigma[frame] = vision.sigma[frame]
            out.tracking_state[frame] = state
            out.step_ms[frame] = (time.perf_counter() - start) * 1e3
            bar.update(1)
        done = np.flatnonzero(out.processed)
        if done.size:
            fk = forward_kinematics_numpy(out.joint_angles[done], out.wrist_rotation[done],
                                          out.wrist_translation[done], hand.hand_scale, hand.side)
            out.landmarks[done] = fk.landmarks
        return out


def _plain_metadata(metadata: Mapping) -> dict:
    """JSON-able scalars/short lists of a checkpoint's metadata (for the report)."""
    out = {}
    for key, value in dict(metadata or {}).items():
        if isinstance(value, (bool, int, float, str)) or value is None:
            out[str(key)] = value
        elif isinstance(value, (list, tuple)) and len(value) <= 64 and all(
                isinstance(v, (bool, int, float, str)) for v in value):
            out[str(key)] = list(value)
    return out


# ======================================================================================
# Results and their metrics
# ======================================================================================

@dataclasses.dataclass(eq=False)
class EvalResults:
    """Everything a run produced; :meth:`metrics` computes the report's numbers."""

    methods: list[MethodInfo]
    conditions: list[GloveCondition]
    tracks: list[TrackRecord]
    options: EvalOptions
    reference: str | None
    source: dict
    timing: dict

    # -- helpers -----------------------------------------------------------------------------
    def method(self, name: str) -> MethodInfo:
        return next(m for m in self.methods if m.name == name)

    def methods_in(self, condition: GloveCondition) -> list[str]:
        names = {method for track in self.tracks for (label, method) in track.predictions if label == condition.label}
        return [m.name for m in self.methods if m.name in names]

    def common_mask(self, track: TrackRecord, conditions: Sequence[GloveCondition],
                    methods: Sequence[str] | None = None) -> np.ndarray:
        """Frames with truth that every method ran on under every given condition."""
        mask = track.truth_valid.copy()
        for condition in conditions:
            for (label, method), pred in track.predictions.items():
                if label == condition.label and (methods is None or method in methods):
                    mask &= pred.processed
        return mask

    def errors(self, condition: str, method: str, masks: Mapping[str, np.ndarray]
               ) -> tuple[M.FrameErrors, dict[str, np.ndarray]]:
        """Concatenated per-frame errors of ``method`` under ``condition`` on ``masks[track.key]``,
        with the frames' labels (``occlusion_ratio``, ``activity``, ``track``, ``vision_weight``, ``state``,
        ``wrist_distance_m``: true camera-to-wrist distance)."""
        info = self.method(method)
        parts, labels = [], {"occlusion_ratio": [], "activity": [], "track": [], "vision_weight": [], "state": [],
                             "wrist_distance_m": []}
        for track in self.tracks:
            pred = track.predictions.get((condition, method))
            if pred is None:
                continue
            index = np.flatnonzero(masks[track.key])
            if index.size == 0:
                continue
            parts.append(M.frame_errors(pred.poses(index), track.truth.take(index), index,
                                        root_relative=info.root_relative,
                                        pinch_threshold_m=self.options.pinch_threshold_m))
            labels["occlusion_ratio"].append(track.occlusion_ratio[index])
            labels["activity"].append(track.activity[index])
            labels["track"].append(np.full(index.size, track.key, dtype=object))
            labels["vision_weight"].append(pred.vision_weight[index])
            labels["state"].append(pred.tracking_state[index])
            labels["wrist_distance_m"].append(np.linalg.norm(track.truth.wrist_translation[index], axis=-1))
        if not parts:
            raise AviHtError(f"no frames to score for {method} under {condition}")
        return M.FrameErrors.concatenate(parts), {k: np.concatenate(v) for k, v in labels.items()}

    def metrics(self) -> dict:
        """All numbers of the report (the content of ``metrics.json``)."""
        options = self.options
        summary_options = {"pck_max_mm": options.pck_max_mm}
        nominal = GloveCondition(NOMINAL)
        nominal_methods = self.methods_in(nominal)
        masks = {t.key: self.common_mask(t, [nominal], nominal_methods) for t in self.tracks}
        out: dict[str, Any] = {
            "source": self.source,
            "methods": {m.name: dataclasses.asdict(m) for m in self.methods},
            "reference": self.reference,
            "options": {"pck_max_mm": options.pck_max_mm, "pinch_threshold_m": options.pinch_threshold_m,
                        "tracker": dataclasses.asdict(options.tracker), "sync_overrides": dict(options.sync_overrides),
                        "ekf": options.ekf, "sensitivity": list(options.sensitivity),
                        "ablation_mode": options.ablation_mode},
            "tracks": {t.key: {"frames": t.num_frames, "scored_frames": int(masks[t.key].sum()), **t.info,
                               "sync": t.sync_stats.get(NOMINAL, {})} for t in self.tracks},
            "timing": self._timing(),
        }
        overall, occlusion, distance, activity, joints, cdf, pck, states, vision_weight = ({} for _ in range(9))
        thresholds = M.pck_thresholds_mm(options.pck_max_mm)
        activities = sorted({str(a) for t in self.tracks for a in t.activity[masks[t.key]] if str(a)})
        for method in nominal_methods:
            errors, labels = self.errors(NOMINAL, method, masks)
            overall[method] = M.summarize(errors, **summary_options)
            bins = M.occlusion_bin_labels(labels["occlusion_ratio"])
            occlusion[method] = M.breakdown(errors, bins, M.OCCLUSION_BIN_LABELS, **summary_options)
            distance_bins = M.distance_bin_labels(labels["wrist_distance_m"])
            distance[method] = M.breakdown(errors, distance_bins, M.DISTANCE_BIN_LABELS, **summary_options)
            for table, groups in ((occlusion[method], bins), (distance[method], distance_bins)):
                for label, row in table.items():  # how many hand tracks a bin's frames come from
                    row["tracks"] = len(set(labels["track"][groups == label]))
            activity[method] = M.breakdown(errors, labels["activity"], activities, **summary_options)
            joints[method] = M.per_joint_angle_error_deg(errors).tolist()
            cdf[method] = M.fraction_below(errors.angle_deg, M.ANGLE_CDF_THRESHOLDS_DEG).tolist()
            pck[method] = {"absolute": M.pck_curve(errors.kpe_mm, thresholds).tolist() if errors.absolute else None,
                           "wrist_aligned": M.pck_curve(errors.kpe_t_mm, thresholds).tolist()}
            state = labels["state"]
            states[method] = {name: float(np.mean(state == code)) for code, name in TRACKING_STATE_NAMES.items()}
            if self.method(method).kind == "avi_ht":
                weights = labels["vision_weight"]
                vision_weight[method] = {b: M._nanmean(weights[bins == b]) for b in M.OCCLUSION_BIN_LABELS}
                vision_weight[method]["all"] = M._nanmean(weights)
        out.update(overall=overall, occlusion_bins=occlusion, distance_bins=distance, activities=activity,
                   activity_labels=activities,
                   per_joint_angle_error_deg=joints, joint_names=list(JOINT_NAMES),
                   angle_cdf={"thresholds_deg": M.ANGLE_CDF_THRESHOLDS_DEG.tolist(), "curves": cdf},
                   pck={"thresholds_mm": thresholds.tolist(), "curves": pck},
                   tracking_states=states, vision_weight_by_occlusion=vision_weight)
        reference = self.reference if self.reference in overall else None
        out["reduction_vs_reference"] = {
            m: M.relative_reduction(overall[m], overall[reference])
            for m in overall if reference is not None and m != reference} if reference else {}
        out["sync"] = self._sync_totals()
        out["sensitivity"] = self._sensitivity(summary_options)
        return out

    def _timing(self) -> dict:
        timing = dict(self.timing)
        steps = {}
        for method in self.methods:
            values = [p.step_ms[p.processed] for t in self.tracks for (label, name), p in t.predictions.items()
                      if name == method.name and label == NOMINAL]
            values = np.concatenate(values) if values else np.zeros(0)
            if values.size:
                steps[method.name] = {"p50_ms": float(np.percentile(values, 50)),
                                      "p99_ms": float(np.percentile(values, 99)),
                                      "mean_ms": float(values.mean()), "steps": int(values.size)}
        unique = {id(p): p for t in self.tracks for p in t.predictions.values()}
        total_steps = int(sum(p.processed.sum() for p in unique.values()))
        frames = int(sum(t.num_frames for t in self.tracks))
        timing.update(step_ms=steps, tracker_steps=total_steps, frames=frames,
                      steps_per_s=total_steps / timing["track_s"] if timing.get("track_s") else float("nan"),
                      frames_per_s=frames / timing["wall_s"] if timing.get("wall_s") else float("nan"))
        return timing

    def _sync_totals(self) -> dict:
        totals: dict[str, dict[str, int]] = {}
        for track in self.tracks:
            for label, stats in track.sync_stats.items():
                into = totals.setdefault(label, {})
                for key, value in stats.items():
                    into[key] = into.get(key, 0) + int(value)
        return totals

    def _sweep(self, sweep: str) -> list[GloveCondition]:
        return [c for c in self.conditions if c.sweep == sweep]

    def _sensitivity(self, summary_options: dict) -> dict:
        out: dict[str, Any] = {}
        nominal = GloveCondition(NOMINAL)
        reference = self.reference
        keys = ("mkpe_mm", "mkpe_t_mm", "f_mkpe_mm", "f_mkpe_t_mm", "angle_error_deg", "frames")
        sync = self._sync_totals()
        for sweep in ("noise", "shift"):
            conditions = self._sweep(sweep)
            if not conditions:
                continue
            methods = [m for m in self.methods_in(conditions[0])]
            masks = {t.key: self.common_mask(t, conditions + [nominal], methods + ([reference] if reference else []))
                     for t in self.tracks}
            curves: dict[str, dict] = {}
            for method in methods:
                curves[method] = {}
                for condition in conditions:
                    errors, _ = self.errors(condition.label, method, masks)
                    summary = M.summarize(errors, **summary_options)
                    curves[method][f"{condition.value:g}"] = {k: summary[k] for k in keys}
            ref = None
            if reference:
                summary = M.summarize(self.errors(NOMINAL, reference, masks)[0], **summary_options)
                ref = {k: summary[k] for k in keys}
            out[sweep] = {"values": [c.value for c in conditions], "curves": curves, "reference": ref,
                          "reference_method": reference, "frames": int(sum(m.sum() for m in masks.values())),
                          "sync": {c.label: sync.get(c.label, {}) for c in conditions}}
        conditions = self._sweep("ablation")
        if conditions:
            out["ablation"] = self._ablation(conditions, summary_options)
        return out

    def _ablation(self, conditions: list[GloveCondition], summary_options: dict) -> dict:
        nominal = GloveCondition(NOMINAL)
        reference = self.reference
        methods = self.methods_in(conditions[0])
        masks = {t.key: self.common_mask(t, conditions + [nominal], methods + ([reference] if reference else []))
                 for t in self.tracks}
        activities = sorted({str(a) for t in self.tracks for a in t.activity[masks[t.key]] if str(a)})

        def table(condition_label: str, method: str) -> dict:
            errors, labels = self.errors(condition_label, method, masks)
            by_activity = {a: M.mkpe(errors.kpe_t_mm[labels["activity"] == a]) for a in activities}
            return {"fingers": M.per_finger_mkpe_t_mm(errors), "activities": by_activity,
                    "mkpe_t_mm": M.mkpe(errors.kpe_t_mm)}

        ref = table(NOMINAL, reference) if reference else None
        result: dict[str, Any] = {"mode": conditions[0].ablation_mode, "groups": [c.value for c in conditions],
                                  "fingers": list(FINGER_NAMES), "activities": activities,
                                  "reference_method": reference, "reference": ref,
                                  "frames": int(sum(m.sum() for m in masks.values())), "methods": {}}
        for method in methods:
            rows = {"all": table(NOMINAL, method)}
            for condition in conditions:
                rows[condition.value] = table(condition.label, method)
            gaps = None
            if ref is not None:
                gaps = {row: {"fingers": {f: values["fingers"][f] - ref["fingers"][f] for f in FINGER_NAMES},
                              "activities": {a: values["activities"][a] - ref["activities"][a] for a in activities},
                              "mkpe_t_mm": values["mkpe_t_mm"] - ref["mkpe_t_mm"]}
                        for row, values in rows.items()}
            result["methods"][method] = {"values": rows, "gap": gaps}
        return result


def evaluate(models: Sequence[EvalModel], sequences: Iterable[EvalSequence], options: EvalOptions | None = None,
             expected_frames: int | None = None, source: dict | None = None,
             window_observer: Callable[[dict], None] | None = None) -> EvalResults:
    """Run ``models`` over ``sequences`` (see :class:`Evaluator`)."""
    return Evaluator(models, options, window_observer).run(sequences, expected_frames, source)


# ======================================================================================
# Report
# ======================================================================================

_TABLE_COLUMNS = (
    ("MKPE", "mkpe_mm", "{:.2f}"), ("F.MKPE", "f_mkpe_mm", "{:.2f}"), ("MKPE.T", "mkpe_t_mm", "{:.2f}"),
    ("F.MKPE.T", "f_mkpe_t_mm", "{:.2f}"), ("P.A", "pck_auc", "{:.3f}"), ("P.A.T", "pck_auc_t", "{:.3f}"),
    ("PA-MPJPE", "pa_mpjpe_mm", "{:.2f}"), ("angle °", "angle_error_deg", "{:.2f}"),
    ("<5°", "angle_below_5deg", "{:.3f}"), ("jitter", "jitter_mm_f2", "{:.2f}"),
    ("jitter.T", "jitter_t_mm_f2", "{:.2f}"), ("accel err", "accel_error_mm_f2", "{:.2f}"),
    ("pinch P", "pinch_precision", "{:.3f}"), ("pinch R", "pinch_recall", "{:.3f}"),
)


def _fmt(value: Any, pattern: str = "{:.2f}") -> str:
    if value is None:
        return "N/A"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    value = float(value)
    return "N/A" if not math.isfinite(value) else pattern.format(value)


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    return value


REPORT_FILES = {"report": "report.md", "metrics": "metrics.json", "fig4": "fig4_joint_angle_error.png",
                "pck": "pck_curves.png", "occlusion": "occlusion_bins.png", "fig6": "fig6_ablation.png",
                "fig7": "fig7_sensitivity.png"}


def write_report(results: EvalResults, out_dir: str | os.PathLike, metrics: dict | None = None) -> dict[str, pathlib.Path]:
    """Write ``report.md``, ``metrics.json`` and the figures into ``out_dir``; returns ``{kind: path}``."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = metrics if metrics is not None else results.metrics()
    files: dict[str, pathlib.Path] = {}
    files["metrics"] = out / REPORT_FILES["metrics"]
    files["metrics"].write_text(json.dumps(_json_safe(data), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    files.update(_plots(data, out))
    files["report"] = out / REPORT_FILES["report"]
    files["report"].write_text(_markdown(results, data, files), encoding="utf-8")
    return files


def summary_table(data: dict) -> str:
    """Short plain-text table of the main metrics (what ``avi-ht eval`` prints)."""
    header = f"{'method':<24}{'MKPE':>8}{'F.MKPE':>8}{'MKPE.T':>8}{'F.MKPE.T':>9}{'P.A':>7}{'P.A.T':>7}{'angle°':>8}{'frames':>8}"
    lines = [header, "-" * len(header)]
    for method, s in data["overall"].items():
        lines.append(f"{method:<24}{_fmt(s['mkpe_mm']):>8}{_fmt(s['f_mkpe_mm']):>8}{_fmt(s['mkpe_t_mm']):>8}"
                     f"{_fmt(s['f_mkpe_t_mm']):>9}{_fmt(s['pck_auc'], '{:.3f}'):>7}{_fmt(s['pck_auc_t'], '{:.3f}'):>7}"
                     f"{_fmt(s['angle_error_deg']):>8}{s['frames']:>8}")
    for method, reduction in data.get("reduction_vs_reference", {}).items():
        if data["methods"][method]["kind"] == "avi_ht":
            lines.append(f"{method} vs {data['reference']}: MKPE {_fmt(reduction['mkpe_mm'], '{:+.1f}')} %, "
                         f"F.MKPE {_fmt(reduction['f_mkpe_mm'], '{:+.1f}')} %, "
                         f"MKPE.T {_fmt(reduction['mkpe_t_mm'], '{:+.1f}')} % (error reduction)")
    return "\n".join(lines)


def _bin_heading(label: str, row: Mapping) -> str:
    """Column heading of a bin: its frames and the number of hand tracks they come from (a bin fed
    by one or two tracks measures those tracks, not the condition)."""
    tracks = row.get("tracks")
    return f"{label} ({row['frames']} fr." + ("" if tracks is None else f", {tracks} tr.") + ")"


def _breakdown_rows(tables: Mapping[str, Mapping], columns: Sequence[str], methods: Mapping[str, dict]
                    ) -> list[list[str]]:
    """Rows ``[method, metric, value per column]`` of a per-method breakdown (occlusion bins, activities):
    MKPE, MKPE.T and F.MKPE.T; no absolute MKPE for root-relative methods."""
    rows = []
    for name, table in tables.items():
        for label, key in (("MKPE", "mkpe_mm"), ("MKPE.T", "mkpe_t_mm"), ("F.MKPE.T", "f_mkpe_t_mm")):
            if key == "mkpe_mm" and methods[name]["root_relative"]:
                continue
            rows.append([name, label] + [_fmt(table[column][key]) for column in columns])
    return rows


def _markdown(results: EvalResults, data: dict, files: dict[str, pathlib.Path]) -> str:
    methods = data["methods"]
    overall = data["overall"]
    source = data["source"]
    lines = ["# AVI-HT evaluation report", ""]
    counts = f"{len(data['tracks'])} hand tracks, {data['timing']['frames']} frames"
    if source.get("benchmark"):
        where = f" (`{source['config']}`)" if source.get("config") else ""
        seeds = (f", seeds {source['first_seed']}–{source['last_seed']}" if source.get("first_seed") is not None
                 else "")
        lines.append(f"Benchmark **{source['benchmark']}**{where}{seeds}, {counts}.")
        if source.get("overrides"):
            lines.append(f"Overrides: `{json.dumps(_json_safe(source['overrides']))}`.")
    elif source.get("bags"):
        lines.append(f"Recorded bags: {', '.join(f'`{b}`' for b in source['bags'])}; {counts}.")
    else:
        lines.append(f"{counts}.")
    tracks = data["tracks"]
    rows = [[key, str(t["frames"]), str(t["scored_frames"]), str(t.get("occlusion", "—")),
             _fmt(t.get("hand_scale"), "{:.3f}"), str(t.get("seed", "—"))] for key, t in tracks.items()]
    lines += ["", _markdown_table(["track", "frames", "scored", "occlusion preset", "hand scale", "seed"], rows)]
    for warning in source.get("warnings", []):
        lines.append(f"\n> **Warning:** {warning}")
    lines += ["", "Every method ran through the live synchronizer and the online `HandTracker` (crops follow the "
              "previous estimate) on the same synchronized frames. Errors in mm, angles in degrees, jitter in "
              "mm/frame². IMU-only models are root-relative: absolute metrics are N/A. "
              "Definitions: docs/EVALUATION.md.", ""]
    lines += ["## Methods", ""]
    rows = []
    for name, m in methods.items():
        meta = m.get("metadata") or {}
        extra = ", ".join(f"{k}={meta[k]}" for k in ("epoch", "step", "git") if k in meta)
        rows.append([name, m["kind"], str(m["parameters"]) if m["parameters"] else "—",
                     f"`{m['source']}`" if m["source"] else "—", extra or "—"])
    lines += [_markdown_table(["method", "type", "params", "checkpoint", "metadata"], rows), ""]

    lines += ["## Overall (nominal glove)", ""]
    header = ["method"] + [c[0] for c in _TABLE_COLUMNS] + ["frames"]
    rows = [[name] + [_fmt(s[key], pattern) for _, key, pattern in _TABLE_COLUMNS] + [str(s["frames"])]
            for name, s in overall.items()]
    if overall:
        truth_jitter = next(iter(overall.values()))["jitter_truth_mm_f2"]
        lines += [_markdown_table(header, rows), "",
                  f"Ground-truth jitter on these frames: {_fmt(truth_jitter)} mm/frame². Pinch: thumb–index tip "
                  f"< {results.options.pinch_threshold_m * 100:.1f} cm per frame "
                  f"({next(iter(overall.values()))['pinch_positives']} true pinch frames).", ""]
    reductions = data.get("reduction_vs_reference") or {}
    if reductions:
        lines += [f"## Relative change vs `{data['reference']}` (positive = better)", ""]
        keys = [(label, key) for label, key, _ in _TABLE_COLUMNS]
        header = ["metric", f"{data['reference']}"]
        for m in reductions:
            header += [m, "change %"]
        rows = []
        for label, key in keys:
            row = [label, _fmt(overall[data["reference"]][key], "{:.3f}")]
            for m, reduction in reductions.items():
                row += [_fmt(overall[m][key], "{:.3f}"), _fmt(reduction.get(key), "{:+.1f}")]
            rows.append(row)
        lines += [_markdown_table(header, rows), ""]

    lines += ["## By occlusion (ground-truth occlusion ratio)", ""]
    bins = list(M.OCCLUSION_BIN_LABELS)
    first = next(iter(data["occlusion_bins"].values()), None)
    if first:
        header = ["method", "metric"] + [_bin_heading(b, first[b]) for b in bins]
        rows = _breakdown_rows(data["occlusion_bins"], bins, methods)
        for name, weights in data.get("vision_weight_by_occlusion", {}).items():
            rows.append([name, "vision weight"] + [_fmt(weights[b], "{:.3f}") for b in bins])
        lines += [_markdown_table(header, rows), ""]

    first = next(iter(data.get("distance_bins", {}).values()), None)
    if first:
        bins = list(M.DISTANCE_BIN_LABELS)
        lines += ["## By hand distance (true camera-to-wrist distance)", "",
                  "Range error = predicted minus true camera-to-wrist distance (+ = placed too far); the "
                  "bias is its mean, |range| its mean magnitude.", ""]
        header = ["method", "metric"] + [_bin_heading(b, first[b]) for b in bins]
        rows = _breakdown_rows(data["distance_bins"], bins, methods)
        for name, table in data["distance_bins"].items():
            if not methods[name]["root_relative"]:
                rows.append([name, "range bias"] + [_fmt(table[b]["wrist_range_bias_mm"], "{:+.1f}") for b in bins])
                rows.append([name, "|range|"] + [_fmt(table[b]["wrist_range_error_mm"]) for b in bins])
        lines += [_markdown_table(header, rows), ""]

    activities = data.get("activity_labels") or []
    if activities:
        lines += ["## By activity", ""]
        first = next(iter(data["activities"].values()))
        header = ["method", "metric"] + [f"{a} ({first[a]['frames']})" for a in activities]
        lines += [_markdown_table(header, _breakdown_rows(data["activities"], activities, methods)), ""]

    lines += ["## Joint-angle error per DoF (AVI-HT Fig. 4)", "",
              f"![joint angle error]({files['fig4'].name})", ""]
    names = list(data["per_joint_angle_error_deg"])
    rows = [[joint] + [_fmt(data["per_joint_angle_error_deg"][n][j]) for n in names]
            for j, joint in enumerate(data["joint_names"])]
    lines += [_markdown_table(["DoF"] + names, rows), ""]
    lines += ["## PCK curves", "", f"![PCK]({files['pck'].name})", "",
              f"![occlusion bins]({files['occlusion'].name})", ""]

    sensitivity = data.get("sensitivity", {})
    for sweep, title, unit in (("noise", "IMU noise (× native noise floor)", "×"),
                               ("shift", "camera–glove time shift (IMU window from t + δ)", "s")):
        if sweep not in sensitivity:
            continue
        block = sensitivity[sweep]
        lines += [f"## Sensitivity: {title} (AVI-HT Fig. 7)", "",
                  f"{block['frames']} frames common to every setting."
                  + (f" Reference `{block['reference_method']}`: MKPE {_fmt(block['reference']['mkpe_mm'])}, "
                     f"MKPE.T {_fmt(block['reference']['mkpe_t_mm'])}." if block.get("reference") else ""), ""]
        header = [f"{sweep} ({unit})"]
        curves = block["curves"]
        for name in curves:
            header += [f"{name} MKPE", f"{name} MKPE.T"]
        rows = []
        for value in block["values"]:
            key = f"{value:g}"
            row = [f"{value:+g}" if sweep == "shift" else f"{value:g}"]
            for name in curves:
                row += [_fmt(curves[name][key]["mkpe_mm"]), _fmt(curves[name][key]["mkpe_t_mm"])]
            rows.append(row)
        lines += [_markdown_table(header, rows), ""]
        dropped = {label: stats.get("frames_dropped_no_imu", 0) + stats.get("frames_dropped_too_few", 0)
                   for label, stats in block["sync"].items()}
        if any(dropped.values()):
            lines += ["Frames dropped by the synchronizer (no glove data): "
                      + ", ".join(f"{k}: {v}" for k, v in dropped.items() if v) + ".", ""]
    if "noise" in sensitivity or "shift" in sensitivity:
        lines += [f"![sensitivity]({files['fig7'].name})", ""]
    if "ablation" in sensitivity:
        block = sensitivity["ablation"]
        mode = "masked" if block["mode"] == "drop" else "the only sensors provided"
        lines += ["## Per-finger sensor ablation (AVI-HT Fig. 6)", "",
                  f"Row = sensor group {mode}; value = MKPE.T gap (mm) = AVI-HT − `{block['reference_method']}` "
                  f"(negative: AVI-HT better), {block['frames']} frames. Row `all` = the full glove.", ""]
        for name, result in block["methods"].items():
            table = result["gap"] if result["gap"] is not None else result["values"]
            what = "gap" if result["gap"] is not None else "MKPE.T"
            rows = [[row] + [_fmt(values["fingers"][f]) for f in block["fingers"]] + [_fmt(values["mkpe_t_mm"])]
                    for row, values in table.items()]
            lines += [f"### `{name}`: {what} per evaluated finger", "",
                      _markdown_table(["sensors"] + block["fingers"] + ["all fingers"], rows), ""]
            rows = [[row] + [_fmt(values["activities"][a]) for a in block["activities"]]
                    for row, values in table.items()]
            lines += [f"### `{name}`: {what} per activity", "",
                      _markdown_table(["sensors"] + block["activities"], rows), ""]
        lines += [f"![ablation]({files['fig6'].name})", ""]

    lines += ["## Tracking and synchronization", ""]
    rows = [[name] + [_fmt(states.get(s), "{:.3f}") for s in TRACKING_STATE_NAMES.values()]
            for name, states in data["tracking_states"].items()]
    lines += [_markdown_table(["method"] + list(TRACKING_STATE_NAMES.values()), rows), ""]
    sync = data["sync"].get(NOMINAL, {})
    if sync:
        lines += [f"Synchronizer (nominal): {sync.get('camera_frames', 0)} frames in, "
                  f"{sync.get('frames_complete', 0)} complete, {sync.get('frames_partial', 0)} partial windows, "
                  f"{sync.get('frames_dropped_no_imu', 0) + sync.get('frames_dropped_too_few', 0)} dropped.", ""]
    timing = data["timing"]
    lines += ["## Timing", "",
              f"Wall {timing['wall_s']:.1f} s ({timing['prepare_s']:.1f} s preparing sequences), "
              f"{timing['tracker_steps']} tracker/filter steps at {timing['steps_per_s']:.1f} steps/s, "
              f"{timing['frames_per_s']:.2f} frames/s end to end, {timing['threads']} thread(s)"
              + (f", networks on {', '.join(sorted(set(timing['backend'].values())))}" if timing.get("backend") else "")
              + ".", ""]
    rows = [[name, _fmt(t["p50_ms"]), _fmt(t["p99_ms"]), _fmt(t["mean_ms"])] for name, t in timing["step_ms"].items()]
    lines += [_markdown_table(["method", "step p50 ms", "p99 ms", "mean ms"], rows), "",
              "Step = one `HandTracker.step` (crop + network + bookkeeping) or one EKF predict/update.", ""]
    lines += ["## Files", ""] + [f"- `{path.name}`" for path in files.values()] + [""]
    return "\n".join(lines)


# -- figures ---------------------------------------------------------------------------------

_COLORS = {"vision_only": "#1f77b4", "ekf": "#ff7f0e", "avi_ht": "#d62728", "imu_only": "#2ca02c"}


def _color(data: dict, method: str, index: int) -> Any:
    import matplotlib

    palette = matplotlib.colormaps["tab10"]
    kinds = [m for m in data["methods"] if data["methods"][m]["kind"] == data["methods"][method]["kind"]]
    if len(kinds) == 1:
        return _COLORS.get(data["methods"][method]["kind"], palette(index % 10))
    return palette(index % 10)


def _plots(data: dict, out: pathlib.Path) -> dict[str, pathlib.Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {}
    methods = list(data["per_joint_angle_error_deg"])

    # Fig. 4: per-DoF joint-angle error bars + CDF
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(14, 8.5), gridspec_kw={"height_ratios": [1.2, 1]})
    width = 0.8 / max(len(methods), 1)
    x = np.arange(NUM_JOINTS)
    for i, name in enumerate(methods):
        values = np.asarray([np.nan if v is None else v for v in data["per_joint_angle_error_deg"][name]], float)
        top.bar(x + (i - (len(methods) - 1) / 2) * width, values, width, label=name, color=_color(data, name, i))
    top.set_xticks(x, [j.replace("_", " ") for j in data["joint_names"]], rotation=60, ha="right", fontsize=8)
    top.set_ylabel("mean |angle error| (°)")
    top.set_title("Absolute joint-angle error per DoF")
    top.legend(fontsize=8)
    top.grid(axis="y", alpha=0.3)
    thresholds = np.asarray(data["angle_cdf"]["thresholds_deg"])
    for i, name in enumerate(methods):
        bottom.plot(thresholds, np.asarray(data["angle_cdf"]["curves"][name], float) * 100, label=name,
                    color=_color(data, name, i))
    bottom.axvline(M.ANGLE_ACCURACY_THRESHOLD_DEG, color="gray", ls=":", lw=1)
    bottom.set_xlabel("joint-angle error threshold (°)")
    bottom.set_ylabel("samples below (%)")
    bottom.set_title("Cumulative distribution of joint-angle errors (all frames × DoF)")
    bottom.set_ylim(0, 100)
    bottom.grid(alpha=0.3)
    bottom.legend(fontsize=8)
    fig.tight_layout()
    files["fig4"] = out / REPORT_FILES["fig4"]
    fig.savefig(files["fig4"], dpi=110)
    plt.close(fig)

    # PCK curves
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    thresholds = np.asarray(data["pck"]["thresholds_mm"])
    for i, name in enumerate(data["pck"]["curves"]):
        curves = data["pck"]["curves"][name]
        overall = data["overall"][name]
        if curves["absolute"] is not None:
            axes[0].plot(thresholds, curves["absolute"], label=f"{name} (P.A {_fmt(overall['pck_auc'], '{:.3f}')})",
                         color=_color(data, name, i))
        axes[1].plot(thresholds, curves["wrist_aligned"],
                     label=f"{name} (P.A.T {_fmt(overall['pck_auc_t'], '{:.3f}')})", color=_color(data, name, i))
    for ax, title in zip(axes, ("PCK (absolute)", "PCK (wrist-aligned, .T)")):
        ax.set_title(title)
        ax.set_xlabel("threshold (mm)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("fraction of keypoints")
    fig.tight_layout()
    files["pck"] = out / REPORT_FILES["pck"]
    fig.savefig(files["pck"], dpi=110)
    plt.close(fig)

    # Occlusion bins
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    bins = list(M.OCCLUSION_BIN_LABELS)
    names = list(data["occlusion_bins"])
    width = 0.8 / max(len(names), 1)
    for ax, key, title in zip(axes, ("mkpe_mm", "mkpe_t_mm"), ("MKPE (mm)", "MKPE.T (mm)")):
        for i, name in enumerate(names):
            values = [data["occlusion_bins"][name][b][key] for b in bins]
            values = np.asarray([np.nan if v is None else v for v in values], float)
            ax.bar(np.arange(len(bins)) + (i - (len(names) - 1) / 2) * width, values, width, label=name,
                   color=_color(data, name, i))
        ax.set_xticks(np.arange(len(bins)), [f"{b}\n({data['occlusion_bins'][names[0]][b]['frames']} fr.)"
                                             for b in bins] if names else bins)
        ax.set_title(f"{title} by ground-truth occlusion")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    files["occlusion"] = out / REPORT_FILES["occlusion"]
    fig.savefig(files["occlusion"], dpi=110)
    plt.close(fig)

    sensitivity = data.get("sensitivity", {})
    if "noise" in sensitivity or "shift" in sensitivity:
        # columns: noise, shift; rows: MKPE (absolute), MKPE.T (wrist-aligned)
        fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex="col")
        for column, (sweep, xlabel, title) in enumerate((
                ("noise", "IMU noise (× native noise floor)", "IMU noise"),
                ("shift", "time shift δ (s): IMU window from t + δ", "camera–glove misalignment"))):
            block = sensitivity.get(sweep)
            for row, (key, label) in enumerate((("mkpe_mm", "MKPE"), ("mkpe_t_mm", "MKPE.T"))):
                ax = axes[row, column]
                if block is None:
                    ax.set_axis_off()
                    ax.text(0.5, 0.5, f"{sweep} sweep not run", ha="center", va="center")
                    continue
                values = np.asarray(block["values"], float)
                for i, (name, curve) in enumerate(block["curves"].items()):
                    if key == "mkpe_mm" and data["methods"][name]["root_relative"]:
                        continue
                    ys = [curve[f"{v:g}"][key] for v in block["values"]]
                    ax.plot(values, np.asarray([np.nan if y is None else y for y in ys], float), "o-",
                            color=_color(data, name, i), label=name)
                if block.get("reference") and block["reference"].get(key) is not None:
                    ax.axhline(block["reference"][key], color="gray", lw=1, ls="--",
                               label=f"{block['reference_method']} (no IMU)")
                ax.set_ylabel(f"{label} (mm)")
                ax.set_title(f"{label} vs {title}")
                ax.grid(alpha=0.3)
                ax.legend(fontsize=7)
                if row == 1:
                    ax.set_xlabel(xlabel)
        fig.tight_layout()
        files["fig7"] = out / REPORT_FILES["fig7"]
        fig.savefig(files["fig7"], dpi=110)
        plt.close(fig)

    if "ablation" in sensitivity:
        block = sensitivity["ablation"]
        name, result = next(iter(block["methods"].items()))
        table = result["gap"] if result["gap"] is not None else result["values"]
        rows = list(table)
        fig, axes = plt.subplots(1, 2, figsize=(14, 0.55 * len(rows) + 2.5),
                                 gridspec_kw={"width_ratios": [len(block["fingers"]), max(len(block["activities"]), 1)]})
        for ax, columns, key, title in ((axes[0], block["fingers"], "fingers", "per evaluated finger"),
                                        (axes[1], block["activities"], "activities", "per activity")):
            grid = np.array([[np.nan if table[r][key][c] is None else table[r][key][c] for c in columns] for r in rows],
                            float)
            finite = grid[np.isfinite(grid)]
            limit = max(float(np.abs(finite).max()) if finite.size else 1.0, 1e-6)
            image = ax.imshow(grid, cmap="RdBu_r", vmin=-limit if result["gap"] is not None else None,
                              vmax=limit if result["gap"] is not None else None, aspect="auto")
            ax.set_xticks(np.arange(len(columns)), columns, rotation=30, ha="right")
            ax.set_yticks(np.arange(len(rows)), rows)
            pattern = "{:.2f}" if limit < 1.0 else "{:.1f}"
            for (r, c), value in np.ndenumerate(grid):
                if np.isfinite(value):
                    dark = result["gap"] is not None and abs(value) > 0.6 * limit
                    ax.text(c, r, pattern.format(value), ha="center", va="center", fontsize=8,
                            color="white" if dark else "black")
            what = "MKPE.T gap (mm)" if result["gap"] is not None else "MKPE.T (mm)"
            ax.set_title(f"{name}: {what} {title}")
            fig.colorbar(image, ax=ax, fraction=0.046)
        axes[0].set_ylabel(f"sensors ({'masked' if block['mode'] == 'drop' else 'only'})")
        fig.tight_layout()
        files["fig6"] = out / REPORT_FILES["fig6"]
        fig.savefig(files["fig6"], dpi=110)
        plt.close(fig)
    return files
