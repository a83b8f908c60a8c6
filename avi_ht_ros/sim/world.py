"""The synthetic world: one headset camera (optionally two), one or two gloved hands, objects -> rosbag2.

:func:`simulate_sequence` ties the simulator's pieces into one sequence, and
:func:`write_sequence_bag` writes it with exactly the topics, types and frames the live
nodes use (docs/SIMULATION.md has the full description):

* motion -- :func:`avi_ht_ros.sim.motion.generate_sequence` per hand (joint angles, wrist,
  head, table objects, activity labels), evaluated once for all camera frames (vectorized
  FK);
* glove IMUs -- :func:`avi_ht_ros.sim.imu_sim.simulate_glove_imu` on the glove's own
  device clock (offset + drift), from the exact sensor poses of the motion (FK in chunks);
* images and visibility ground truth -- :class:`avi_ht_ros.sim.render.HandRenderer`, with
  the table objects (held ones follow the hand), optionally the table top, *occluders*
  (objects passing between the camera and the hand, the occlusion-level control) and,
  with two hands, the other hand;
* optionally a second headset camera (``second_camera_config``): the same scene rendered
  from a second mount on the head at the same instants, with its own per-view ground truth.

Clocks: the camera stamps frames with the true (simulation) time ``start_time_s + t``.
The glove samples on its device clock (``device = offset + (1 + drift) t``); its
``GloveSample`` header stamps are what an ideal driver mapping produces *minus* the
configured camera-glove offset: ``stamp = start_time_s + t_true - time_offset_s``, so
``t_camera = t_glove + time_offset_s`` (the convention of ``SyncedFrame.time_offset``).

Determinism: everything is drawn from ``numpy.random.default_rng([seed, stream])`` with
one fixed stream per purpose (motion per hand, IMU per hand, occluders, scene appearance,
head, renderer), so changing e.g. the occlusion level keeps the motion and the IMU data of
a seed, and the same (config, seed) always gives identical images and IMU arrays.

Use :class:`SequenceSimulator` directly to plan a sequence without rendering it (labels,
poses, IMU), to render single frames, or to stream a long sequence into a bag without
holding its images in memory (:meth:`SequenceSimulator.write_bag`).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import pathlib
import shutil
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import yaml
from scipy.ndimage import gaussian_filter1d, minimum_filter1d
from scipy.spatial.transform import Rotation

from avi_ht_ros.common import topics
from avi_ht_ros.common.camera import (
    CameraMount,
    PinholeCamera,
    load_camera_mount,
    load_camera_yaml,
)
from avi_ht_ros.common.config_file import load_yaml_mapping
from avi_ht_ros.common.errors import AviHtError, ConfigError
from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.common.hand_model import (
    LANDMARKS_OF_FINGER,
    NUM_LANDMARKS,
    SIDES,
    forward_kinematics_numpy,
)
from avi_ht_ros.common.params import param, param_specs, validate_params
from avi_ht_ros.common.paths import config_path
from avi_ht_ros.common.topics import SIM_CONFIG_TOPIC  # re-exported (defined in topics)
from avi_ht_ros.driver.calibration import (CalibrationError, MountingCalibration, StillHandCollector, StillnessLimits,
                                           solve_mounting_calibration)
from avi_ht_ros.driver.health import STATUS_OK
from avi_ht_ros.io import convert
from avi_ht_ros.io.bag import BagError, BagWriter
from avi_ht_ros.sim.imu_sim import (DeviceClock, ImuErrorModel, SimulatedImuArray, load_imu_error_model,
                                    simulate_glove_imu)
from avi_ht_ros.sim.motion import ACTIVITY_LABELS, MotionConfig, MotionSequence, generate_sequence
from avi_ht_ros.sim.render import (
    DEFAULT_BONE_PAIRS,
    Box,
    Cylinder,
    HandGeometry,
    REFERENCE_PALM_LENGTH_M,
    HandRenderer,
    RenderConfig,
    RenderResult,
    Sphere,
)

__all__ = [
    "WORLD_CONFIG_FILE",
    "OCCLUSION_LEVELS",
    "STATIC_ACTIVITY",
    "SIM_CONFIG_TOPIC",
    "WorldConfig",
    "load_world_config",
    "world_with_changes",
    "OccluderPhase",
    "HandTruth",
    "GloveStream",
    "SimSequence",
    "FrameRender",
    "SequenceSimulator",
    "simulate_sequence",
    "write_sequence_bag",
    "occlusion_strip_frames",
    "write_occlusion_strip",
]

WORLD_CONFIG_FILE = "sim_world.yaml"
#: Activity label of every frame of a ``motion: static`` sequence.
STATIC_ACTIVITY = "static"

#: Occlusion presets (``occlusion: <level>`` in the YAML, ``--occlusion`` on the CLI):
#: values of the ``occluder_*`` fields. "low" adds no occluders: only the hand's own
#: occlusion and that of the objects it manipulates remain.
OCCLUSION_LEVELS: dict[str, dict[str, Any]] = {
    "low": {"occluder_rate_per_min": 0.0, "occluder_duration_s": (0.8, 2.0),
            "occluder_size_m": (0.015, 0.035), "occluder_coverage": (0.3, 0.8)},
    "medium": {"occluder_rate_per_min": 4.0, "occluder_duration_s": (0.8, 2.0),
               "occluder_size_m": (0.015, 0.035), "occluder_coverage": (0.3, 0.8)},
    "heavy": {"occluder_rate_per_min": 12.0, "occluder_duration_s": (1.5, 3.5),
              "occluder_size_m": (0.025, 0.05), "occluder_coverage": (0.5, 1.0)},
}

# Independent random streams: default_rng([seed, stream]).
_MOTION_STREAM = {"right": 1, "left": 2}
_IMU_STREAM = {"right": 3, "left": 4}
_OCCLUDER_STREAM = 5
_SCENE_STREAM = 6
_HEAD_STREAM = 7
_RENDER_STREAM = 8            # view 0: [seed, 8]; the second camera: [seed, 8, 1]
_WEARING_STREAM = {"right": 9, "left": 10}   # glove mount errors and the calibration posture of a wearing
_MAX_WEARINGS = 20    # glove put on again after a refused calibration, at most this often per hand

_CALIBRATION_S = 3.0           # the flat-hand mounting calibration recording (glove_mount_calibration)
_GLOVE_LEAD_S = 0.5            # glove samples start this long before the first frame (and end after the last)
_OCCLUDER_CLEARANCE_M = 0.02   # occluder surface stays this far in front of the nearest hand point
_OCCLUDER_NEAR_M = 0.08        # ... and this far beyond the camera
_SHOULDER_RIGHT = np.array([-0.04, -0.19, 1.0])   # world, seated user (as the motion scripts assume)
_UPPER_ARM_M = 0.30
_FOREARM_M = 0.26
_ELBOW_HINT = np.array([-0.35, 0.45, -1.0])        # elbow drops, a little back and out (y scaled by side)
_PALM_LANDMARKS = (0, 5, 9, 13, 17)


# ======================================================================================
# Configuration
# ======================================================================================

@dataclass(frozen=True)
class WorldConfig:
    """Everything that defines a simulated scenario except the seed (see config/sim_world.yaml)."""

    duration_s: float = param(30.0, "length of the sequence (camera time span)", range=(1.0, 3600.0), unit="s")
    sides: tuple[str, ...] = param(("right",), "hands (each with a glove) in the scene", choices=SIDES)
    motion: str = param("scripted", "scripted: labelled hand-object activities; static: the hand rests still "
                                     "(constant pose, for gravity/bias checks)", choices=("scripted", "static"))
    activities: tuple[str, ...] = param(ACTIVITY_LABELS, "activity labels the motion scripts draw episodes from",
                                        choices=ACTIVITY_LABELS)
    hand_scale_range: tuple[float, ...] = param((0.85, 1.15), "hand size drawn per hand and sequence "
                                                              "(1 = 18.5 cm reference hand)", range=(0.5, 2.0))
    speed_range: tuple[float, ...] = param((0.8, 1.25), "motion speed factor drawn per hand and sequence",
                                           range=(0.2, 5.0))
    head_motion_scale: float = param(1.0, "multiplies the head sway and rotation jitter of the motion generator "
                                          "(0 = head only turns to look at the hands)", range=(0.0, 5.0))
    two_hand_separation_m: float = param(0.06, "with two hands: each hand's workspace is moved this far away from "
                                               "the body midline", range=(0.0, 0.3), unit="m")
    camera_config: str = param("camera_sim.yaml", "camera calibration + head mount (config/ name or path)")
    second_camera_config: str = param("", "second headset camera, calibration + head mount (config/ name or "
                                          "path, e.g. camera_sim_2.yaml), rendered at the first camera's "
                                          "instants; empty = one camera")
    camera_rate_hz: float = param(60.0, "camera frame rate", range=(1.0, 240.0), unit="Hz")
    image_scale: float = param(1.0, "resizes the camera (image size and intrinsics) by this factor",
                               range=(0.1, 2.0))
    render_table: bool = param(False, "draw the table top as a lit 3D box (2-4x slower per frame; else objects "
                                             "stand over the painted background)")
    glove_config: str = param("glove_12imu.yaml", "glove sensor layout (config/ name or path)")
    imu_rate_hz: float = param(200.0, "glove sample rate (device clock)", range=(10.0, 2000.0), unit="Hz")
    imu_noise_config: str = param("imu_noise.yaml", "IMU error-model presets (config/ name or path)")
    imu_noise_preset: str = param("native_noise_floor", "IMU error-model preset")
    noise_scale: float = param(1.0, "multiplies every IMU error magnitude (0 = error-free)", range=(0.0, 10.0))
    dropout_rate: float = param(0.0, "long-run fraction of samples each IMU misses (resent as STALE); replaces "
                                     "the preset's", range=(0.0, 0.5))
    dropout_burst_length: float = param(3.0, "mean length of a dropout burst", range=(1.0, 1000.0), unit="samples")
    dead_sensors: tuple[str, ...] = param((), "dead IMUs: site name or index, optionally '@onset_s' "
                                              "(e.g. 'index_distal', '3@2.5'); replaces the preset's")
    glove_mount_error_deg: float = param(10.0, "per-wearing sensor-to-bone mounting error: sigma of each "
                                              "rotation-vector component of a rotation drawn per IMU, hand and "
                                              "sequence (the glove sits differently each time it is put on); "
                                              "0 = every IMU exactly on its nominal mount",
                                         range=(0.0, 30.0), unit="deg")
    glove_mount_calibration: bool = param(True, "the recorded glove samples are corrected by a flat-hand "
                                                 "mounting calibration of the same wearing (the glove driver's "
                                                 "calibrate service, avi_ht_ros.driver.calibration), simulated "
                                                 "before the sequence")
    glove_calibration_posture_deg: float = param(3.0, "sigma of each joint angle's and of the wrist tilt's "
                                                      "deviation from flat, palm down while the calibration is "
                                                      "recorded (a real hand is never exactly flat)",
                                                 range=(0.0, 15.0), unit="deg")
    glove_clock_offset_s: float = param(1000.0, "glove device clock reading at true time 0",
                                        range=(1.0, 1.0e7), unit="s")
    glove_clock_drift_ppm: float = param(20.0, "glove device clock rate error (> 0: runs fast)",
                                         range=(-1000.0, 1000.0), unit="ppm")
    time_offset_s: float = param(0.0, "true camera-glove stamp offset, t_camera = t_glove + offset "
                                      "(glove stamps = true time - offset)", range=(-2.0, 2.0), unit="s")
    start_time_s: float = param(1.7e9, "ROS time of the first camera frame", range=(0.0, 4.0e9), unit="s")
    occluder_rate_per_min: float = param(4.0, "occluder phases per minute (objects passing between the camera "
                                              "and a hand)", range=(0.0, 60.0), unit="1/min")
    occluder_duration_s: tuple[float, ...] = param((0.8, 2.0), "duration of one occluder phase",
                                                   range=(0.2, 30.0), unit="s")
    occluder_size_m: tuple[float, ...] = param((0.015, 0.035), "occluder size (sphere radius, box half "
                                                             "extent, cylinder length scale)",
                                               range=(0.005, 0.3), unit="m")
    occluder_coverage: tuple[float, ...] = param((0.3, 0.8), "how centred an occluder sits on its target "
                                                             "(1: on the line of sight)", range=(0.0, 1.0))

    def __post_init__(self) -> None:
        validate_params(self)
        where = "WorldConfig"
        if not self.sides or len(set(self.sides)) != len(self.sides):
            raise ConfigError(f"{where}.sides", f"need one or two distinct sides, got {list(self.sides)}")
        if not self.activities:
            raise ConfigError(f"{where}.activities", "must name at least one activity")
        for name in ("hand_scale_range", "speed_range", "occluder_duration_s", "occluder_size_m",
                     "occluder_coverage"):
            value = getattr(self, name)
            if len(value) != 2 or value[0] > value[1]:
                raise ConfigError(f"{where}.{name}", f"expected [low, high] with low <= high, got {list(value)}")

    # ------------------------------------------------------------------ variants
    def replace(self, **changes: Any) -> "WorldConfig":
        """A validated copy with some fields changed (lists become tuples)."""
        return dataclasses.replace(self, **{k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()})

    def with_occlusion(self, level: str) -> "WorldConfig":
        """This config with the ``occluder_*`` fields of an :data:`OCCLUSION_LEVELS` preset."""
        if level not in OCCLUSION_LEVELS:
            raise ConfigError("occlusion", f"{level!r} is not one of {list(OCCLUSION_LEVELS)}")
        return self.replace(**OCCLUSION_LEVELS[level])

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-able values (tuples as lists), in field order."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}

    @property
    def num_frames(self) -> int:
        """Camera frames in the sequence (frame k at ``k / camera_rate_hz``)."""
        return int(math.floor(self.duration_s * self.camera_rate_hz + 1e-9))


def load_world_config(path: str | os.PathLike | None = None, **overrides: Any) -> WorldConfig:
    """Read a world YAML (default ``config/sim_world.yaml``) and apply ``overrides``.

    Keys are the :class:`WorldConfig` fields, plus ``occlusion: low|medium|heavy`` which
    sets the ``occluder_*`` fields (explicit ``occluder_*`` keys in the same file win).
    Bad content raises ``ConfigError(<file>, "<field>: <problem>")``.
    """
    file = config_path(WORLD_CONFIG_FILE) if path is None else pathlib.Path(path)
    where = str(file)
    doc = load_yaml_mapping(file)
    values: dict[str, Any] = {}
    level = doc.get("occlusion")
    if level is not None:
        if level not in OCCLUSION_LEVELS:
            raise ConfigError(where, f"occlusion: {level!r} is not one of {list(OCCLUSION_LEVELS)}")
        values.update(OCCLUSION_LEVELS[level])
    values.update(_coerce_world_fields(doc, where, extra_keys=("occlusion",)))
    config = _validated_world(lambda: WorldConfig(**values), where)
    return config.replace(**overrides) if overrides else config


def world_with_changes(world: WorldConfig, changes: Mapping[str, Any], where: str) -> WorldConfig:
    """``world.replace(**changes)`` for changes written in YAML (e.g. a benchmark's overrides):
    unknown keys refused, values coerced like :func:`load_world_config` does, errors
    ``ConfigError(where, "<field>: <problem>")``."""
    values = _coerce_world_fields(changes, where)
    return _validated_world(lambda: world.replace(**values) if values else world, where)


def _coerce_world_fields(doc: Mapping[str, Any], where: str, extra_keys: Sequence[str] = ()) -> dict[str, Any]:
    """:class:`WorldConfig` field values from a YAML mapping (``extra_keys`` are the caller's, skipped)."""
    specs = {spec.name: spec for spec in param_specs(WorldConfig)}
    values: dict[str, Any] = {}
    for key, raw in doc.items():
        if key in extra_keys:
            continue
        if key not in specs:
            raise ConfigError(where, f"{key}: unknown key; known: {sorted([*specs, *extra_keys])}")
        if key == "dead_sensors" and isinstance(raw, list):
            raw = [str(v) for v in raw]          # indices may be written as numbers
        try:
            values[key] = specs[key].coerce(key, raw)
        except ConfigError as exc:
            raise ConfigError(where, f"{key}: {exc.problem}") from None
    return values


def _validated_world(build: Callable[[], WorldConfig], where: str) -> WorldConfig:
    """``build()``, its validation errors prefixed with ``where``."""
    try:
        return build()
    except ConfigError as exc:
        raise ConfigError(where, f"{exc.where}: {exc.problem}") from None


def _dead_sensor_onsets(entries: Sequence[str], glove: GloveModel) -> dict[int, float]:
    """``WorldConfig.dead_sensors`` entries -> ``{sensor index: onset s}``."""
    onsets: dict[int, float] = {}
    for entry in entries:
        name, _, onset_text = str(entry).partition("@")
        name = name.strip()
        try:
            index = int(name) if name.isdigit() else glove.site_index(name)
        except KeyError:
            raise ConfigError("WorldConfig.dead_sensors", f"{entry!r}: glove {glove.name!r} has no site {name!r}; "
                                                          f"sites: {list(glove.sensor_names)}") from None
        if not 0 <= index < glove.num_sensors:
            raise ConfigError("WorldConfig.dead_sensors", f"{entry!r}: index outside 0..{glove.num_sensors - 1}")
        try:
            onset = float(onset_text) if onset_text else 0.0
        except ValueError:
            raise ConfigError("WorldConfig.dead_sensors", f"{entry!r}: onset after '@' must be seconds") from None
        if not (math.isfinite(onset) and onset >= 0.0):
            raise ConfigError("WorldConfig.dead_sensors", f"{entry!r}: onset must be >= 0 s")
        onsets[index] = onset
    return onsets


def _load_head_camera(name: str, frames: tuple[str, str, str], image_scale: float
                      ) -> tuple[PinholeCamera, CameraMount]:
    """A camera YAML (``config/`` name or path) -> (camera resized by ``image_scale``, mount).

    The mount's (parent, body, optical) frames must be ``frames``: the frames the nodes use.
    """
    camera_file = config_path(name)
    camera = _scaled_camera(load_camera_yaml(camera_file), image_scale)
    mount = load_camera_mount(camera_file)
    names = (mount.parent_frame, mount.child_frame, mount.optical_frame)
    if names != frames:
        raise ConfigError(str(camera_file), f"mount: frames {names} must be {frames} (the frames the nodes use)")
    return camera, mount


def _scaled_camera(camera: PinholeCamera, factor: float) -> PinholeCamera:
    """The camera resampled by ``factor`` (pixel-centre convention: u' + 0.5 = s (u + 0.5))."""
    if factor == 1.0:
        return camera
    width, height = max(1, round(camera.width * factor)), max(1, round(camera.height * factor))
    sx, sy = width / camera.width, height / camera.height
    projection = None
    if camera.projection is not None:
        projection = camera.projection.copy()
        projection[0] *= sx
        projection[1] *= sy
        projection[0, 2] += 0.5 * sx - 0.5
        projection[1, 2] += 0.5 * sy - 0.5
    return camera.replace(width=width, height=height, fx=camera.fx * sx, fy=camera.fy * sy,
                          cx=(camera.cx + 0.5) * sx - 0.5, cy=(camera.cy + 0.5) * sy - 0.5, projection=projection)


# ======================================================================================
# Results
# ======================================================================================

@dataclass(frozen=True)
class OccluderPhase:
    """An object that passes between the camera and one hand during ``[start_s, end_s)``.

    It slides in from outside the view, follows its ``target`` (landmark indices of
    ``side``, smoothed) at the depth just in front of the hand, and slides out; ``coverage``
    in [0, 1] sets how centred on the line of sight it sits. ``kind``/sizes as the
    renderer's primitives (sphere ``radius``; cylinder ``radius``, ``half_length``; box
    ``half_extents``).
    """

    start_s: float
    end_s: float
    side: str
    target: tuple[int, ...]
    kind: str
    radius: float
    half_length: float
    half_extents: tuple[float, float, float]
    coverage: float
    albedo: float
    texture_amplitude: float
    texture_period_m: float

    @property
    def bounding_radius(self) -> float:
        if self.kind == "sphere":
            return self.radius
        if self.kind == "cylinder":
            return math.hypot(self.radius, self.half_length)
        return float(np.linalg.norm(self.half_extents))


@dataclass(frozen=True, eq=False)
class HandTruth:
    """Ground truth of one hand at every camera frame (camera optical frame, SI units).

    ``joint_angles [F,22]``, ``hand_scale``, ``wrist_rotation [F,3,3]`` (wrist -> optical),
    ``wrist_position [F,3]``, ``landmarks [F,21,3]``, ``activity [F]`` (str), and from the
    renderer (filled as frames are rendered): ``visibility [F,21]`` bool,
    ``landmark_occlusion [F,21]`` int8 (render.VISIBLE / OUT_OF_VIEW / OCCLUDED_SELF /
    OCCLUDED_OBJECT), ``occlusion_ratio [F]``, ``object_pixel_occlusion_ratio [F]``;
    ``rendered [F]`` says which frames have them.

    With a second camera, the ``*_2`` fields hold the same truth for that view
    (``head_camera_2_optical_frame``; visibility from that view's own render pass, recorded
    together with the first view's); without one they are None.
    """

    side: str
    hand_scale: float
    joint_angles: np.ndarray
    wrist_rotation: np.ndarray
    wrist_position: np.ndarray
    landmarks: np.ndarray
    activity: np.ndarray
    visibility: np.ndarray
    landmark_occlusion: np.ndarray
    occlusion_ratio: np.ndarray
    object_pixel_occlusion_ratio: np.ndarray
    rendered: np.ndarray
    wrist_rotation_2: np.ndarray | None = None
    wrist_position_2: np.ndarray | None = None
    landmarks_2: np.ndarray | None = None
    visibility_2: np.ndarray | None = None
    landmark_occlusion_2: np.ndarray | None = None
    occlusion_ratio_2: np.ndarray | None = None
    object_pixel_occlusion_ratio_2: np.ndarray | None = None

    @functools.cached_property
    def wrist_quaternion_xyzw(self) -> np.ndarray:
        """``[F, 4]`` wrist orientation in the optical frame."""
        return Rotation.from_matrix(self.wrist_rotation).as_quat()

    @functools.cached_property
    def wrist_quaternion_xyzw_2(self) -> np.ndarray | None:
        """``[F, 4]`` wrist orientation in the second camera's optical frame (None without it)."""
        return None if self.wrist_rotation_2 is None else Rotation.from_matrix(self.wrist_rotation_2).as_quat()


@dataclass(frozen=True, eq=False)
class GloveStream:
    """One glove's samples as the driver would publish them.

    ``stamps_ns [T]`` header stamps (true time - camera-glove offset), ``true_time_s [T]``
    sampling instants on the true clock (relative to the first frame), ``device_time_us [T]``
    uint64, ``sequence [T]`` uint32, ``accel``/``gyro [T,N,3]`` measured (SI, sensor frames),
    ``accel_true``/``gyro_true`` error-free, ``status [T,N]`` uint8 (GloveSample.STATUS_*),
    per-axis white-noise variances for the ``sensor_msgs/Imu`` covariances.
    """

    side: str
    frame_ids: tuple[str, ...]
    stamps_ns: np.ndarray
    true_time_s: np.ndarray
    device_time_us: np.ndarray
    sequence: np.ndarray
    accel: np.ndarray
    gyro: np.ndarray
    accel_true: np.ndarray
    gyro_true: np.ndarray
    status: np.ndarray
    accel_variance: float
    gyro_variance: float

    @property
    def num_samples(self) -> int:
        return int(self.stamps_ns.size)


@dataclass(frozen=True, eq=False)
class SimSequence:
    """One simulated sequence in memory (``images`` is None when it was streamed to a bag).

    Frame k is at true time ``frame_times_s[k]`` (s after the first frame) and camera stamp
    ``camera_stamps_ns[k]``. Head and camera poses are in the world frame
    (``head_*``: head -> world; ``camera_*``: head_camera_optical_frame -> world).

    With a second camera (``config.second_camera_config``): ``camera_2``, ``camera_mount_2``,
    ``images_2 [F, H2, W2]`` (same frame instants and stamps), ``camera_2_rotation`` /
    ``camera_2_translation`` (head_camera_2_optical_frame -> world) and
    ``camera_2_from_camera`` (4x4, first optical frame -> second optical frame); all None
    without one.
    """

    config: WorldConfig
    seed: int
    camera: PinholeCamera
    camera_mount: CameraMount
    glove: GloveModel
    frame_times_s: np.ndarray
    camera_stamps_ns: np.ndarray
    images: np.ndarray | None
    head_rotation: np.ndarray
    head_translation: np.ndarray
    camera_rotation: np.ndarray
    camera_translation: np.ndarray
    hands: dict[str, HandTruth]
    gloves: dict[str, GloveStream]
    occluders: tuple[OccluderPhase, ...]
    hand_scales: dict[str, float]
    camera_2: PinholeCamera | None = None
    camera_mount_2: CameraMount | None = None
    images_2: np.ndarray | None = None
    camera_2_rotation: np.ndarray | None = None
    camera_2_translation: np.ndarray | None = None
    camera_2_from_camera: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return int(self.camera_stamps_ns.size)

    @property
    def sides(self) -> tuple[str, ...]:
        return tuple(self.hands)

    @property
    def has_second_camera(self) -> bool:
        return self.camera_2 is not None

    def summary(self) -> dict[str, Any]:
        """Counts and occlusion statistics (what ``avi-ht simulate`` prints)."""
        out: dict[str, Any] = {"seed": self.seed, "frames": self.num_frames, "duration_s": self.config.duration_s,
                               "occluder_phases": len(self.occluders)}
        for side, hand in self.hands.items():
            rendered = hand.rendered
            out[f"{side}_mean_occlusion"] = float(hand.occlusion_ratio[rendered].mean()) if rendered.any() else math.nan
            if hand.occlusion_ratio_2 is not None:
                out[f"{side}_mean_occlusion_2"] = (float(hand.occlusion_ratio_2[rendered].mean()) if rendered.any()
                                                   else math.nan)
            out[f"{side}_activities"] = sorted(set(hand.activity.tolist()))
        for side, glove in self.gloves.items():
            out[f"{side}_glove_samples"] = glove.num_samples
        return out


@dataclass(frozen=True, eq=False)
class FrameRender:
    """One rendered frame: the image (all hands) and each hand's render pass.

    With a second camera, ``image_2`` / ``results_2`` are the same for its view (else None).
    """

    index: int
    image: np.ndarray
    results: dict[str, RenderResult]
    image_2: np.ndarray | None = None
    results_2: dict[str, RenderResult] | None = None


# ======================================================================================
# Geometry helpers
# ======================================================================================

def _minimum_jerk(s: np.ndarray) -> np.ndarray:
    s = np.clip(s, 0.0, 1.0)
    return s**3 * (10.0 - 15.0 * s + 6.0 * s * s)


def _smooth_noise(rng: np.random.Generator, count: int, sigma_samples: float, amplitude: float,
                  channels: int) -> np.ndarray:
    """Zero-mean Gaussian-smoothed noise ``[count, channels]`` with standard deviation ``amplitude``."""
    white = rng.standard_normal((count, channels))
    if amplitude == 0.0 or count < 2:
        return np.zeros((count, channels))
    smooth = gaussian_filter1d(white, sigma=max(sigma_samples, 1e-3), axis=0, mode="reflect")
    std = smooth.std(axis=0)
    return amplitude * (smooth - smooth.mean(axis=0)) / np.where(std > 0, std, 1.0)


def _to_camera(points: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """World points ``[F, ..., 3]`` -> optical frame, camera pose ``R [F,3,3]``, ``p [F,3]`` (optical -> world)."""
    shape = points.shape
    flat = points.reshape(shape[0], -1, 3) - translation[:, None, :]
    return np.einsum("fni,fij->fnj", flat, rotation).reshape(shape)


def _moved_primitive(primitive, rotation: np.ndarray, translation: np.ndarray):
    """A renderer primitive expressed in another frame: ``p' = rotation @ p + translation``."""
    centre = rotation @ np.asarray(primitive.center, dtype=np.float64) + translation
    if isinstance(primitive, Sphere):
        return dataclasses.replace(primitive, center=centre)
    if isinstance(primitive, Cylinder):
        return dataclasses.replace(primitive, center=centre, axis=rotation @ np.asarray(primitive.axis, np.float64))
    if isinstance(primitive, Box):
        return dataclasses.replace(primitive, center=centre,
                                   rotation=rotation @ np.asarray(primitive.rotation, np.float64))
    raise TypeError(f"unsupported primitive {type(primitive).__name__}")


def _elbow_directions(wrist: np.ndarray, shoulder: np.ndarray, outward: float) -> np.ndarray:
    """Unit vectors wrist -> elbow ``[F,3]`` (world) of a relaxed two-link arm.

    The elbow lies on the circle where the upper-arm sphere around the shoulder meets the
    forearm sphere around the wrist; the point of that circle furthest along
    :data:`_ELBOW_HINT` (down, a little back and ``outward`` = -1 right / +1 left, away
    from the body) is taken. Out of reach, the arm is straight.
    """
    axis = wrist - shoulder
    distance = np.maximum(np.linalg.norm(axis, axis=-1), 1e-6)
    unit = axis / distance[:, None]
    reach = np.minimum(distance, _UPPER_ARM_M + _FOREARM_M - 1e-6)
    along = (_UPPER_ARM_M**2 - _FOREARM_M**2 + reach**2) / (2.0 * reach)
    radius = np.sqrt(np.maximum(_UPPER_ARM_M**2 - along**2, 0.0))
    hint = _ELBOW_HINT * np.array([1.0, outward, 1.0])
    perpendicular = hint - (unit @ hint)[:, None] * unit
    norm = np.linalg.norm(perpendicular, axis=-1, keepdims=True)
    perpendicular = np.where(norm > 1e-6, perpendicular / np.maximum(norm, 1e-12), np.array([1.0, 0.0, 0.0]))
    elbow = shoulder + unit * along[:, None] + perpendicular * radius[:, None]
    direction = elbow - wrist
    return direction / np.maximum(np.linalg.norm(direction, axis=-1, keepdims=True), 1e-9)


def _hand_proxies(landmarks: np.ndarray, forearm_direction: np.ndarray, geometry: HandGeometry) -> list:
    """Renderer primitives lying inside the rendered hand of ``landmarks`` (optical frame).

    Used to let one hand occlude the other in the other hand's render pass. Every proxy
    is a subset of the true rendered hand (same capsules for the fingers and the forearm,
    capsules and balls inside the palm slab), which is what makes the two-pass composite
    in :meth:`SequenceSimulator.render_frame` exact.
    """
    bone_radii, _ = geometry.resolved_radii()
    scale = float(np.linalg.norm(landmarks[9] - landmarks[0])) / REFERENCE_PALM_LENGTH_M
    palm_r = geometry.palm_half_thickness * scale
    hypothenar = landmarks[0] + 0.35 * (landmarks[17] - landmarks[5])   # render.py's palm fan corner
    points = np.vstack([landmarks, hypothenar, landmarks[0] + forearm_direction * geometry.forearm_length * scale])
    balls: dict[int, float] = {}        # point index -> radius (one ball per joint: the thickest end)
    proxies: list = []

    def capsule(i: int, j: int, r: float, end: np.ndarray | None = None) -> None:
        a, b = points[i], points[j] if end is None else end
        length = float(np.linalg.norm(b - a))
        if length > 1e-6:
            proxies.append(Cylinder(center=0.5 * (a + b), axis=b - a, radius=r, half_length=0.5 * length))
        balls[i] = max(balls.get(i, 0.0), r)
        if end is None:
            balls[j] = max(balls.get(j, 0.0), r)
        else:
            proxies.append(Sphere(center=end, radius=r))

    palm_members = {0, 1, 5, 9, 13, 17}
    for (i, j), radius in zip(geometry.bone_pairs, bone_radii * scale):
        if i in palm_members and j in palm_members:
            continue
        if j in (4, 8, 12, 16, 20):   # the renderer insets the fingertip end of the distal capsule
            a, b = points[i], points[j]
            length = float(np.linalg.norm(b - a))
            capsule(i, j, radius, end=b - (b - a) * min(0.8 * radius, 0.45 * length) / max(length, 1e-12))
        else:
            capsule(i, j, radius)
    fan = [1, 5, 9, 13, 17, NUM_LANDMARKS]
    for k in fan:
        capsule(0, k, palm_r)
    for a, b in zip(fan[:-1], fan[1:]):
        capsule(a, b, palm_r)
        proxies.append(Sphere(center=(points[0] + points[a] + points[b]) / 3.0, radius=palm_r))
    if geometry.forearm_radius > 0:
        capsule(0, NUM_LANDMARKS + 1, geometry.forearm_radius * scale)
    proxies.extend(Sphere(center=points[i], radius=r) for i, r in balls.items())
    return proxies


# ======================================================================================
# The simulator
# ======================================================================================

class SequenceSimulator:
    """Plans one sequence at construction; renders frames and simulates the gloves on demand.

    Construction (cheap, no pixels): loads camera/glove/IMU configs, generates the motion of
    every hand, evaluates FK for all camera frames, the head/camera poses, the scene
    objects and the occluder schedule. :attr:`gloves` simulates the IMUs (cached);
    :meth:`render_frame` renders one frame; :meth:`run` renders all into a
    :class:`SimSequence`; :meth:`write_bag` streams everything into a bag.
    """

    def __init__(self, config: WorldConfig, seed: int):
        if isinstance(seed, bool) or int(seed) != seed or seed < 0:
            raise ConfigError("seed", f"must be an integer >= 0, got {seed!r}")
        self.config = config
        self.seed = int(seed)
        self.camera, self.camera_mount = _load_head_camera(
            config.camera_config, (topics.HEAD_FRAME, topics.CAMERA_FRAME, topics.CAMERA_OPTICAL_FRAME),
            config.image_scale)
        # Optional second camera, rigid on the head: everything is planned in the first camera's
        # optical frame and moved into the second's by camera_2_from_camera (4x4).
        self.camera_2: PinholeCamera | None = None
        self.camera_mount_2: CameraMount | None = None
        self.camera_2_from_camera: np.ndarray | None = None
        if config.second_camera_config:
            self.camera_2, self.camera_mount_2 = _load_head_camera(
                config.second_camera_config,
                (topics.HEAD_FRAME, topics.CAMERA_2_FRAME, topics.CAMERA_2_OPTICAL_FRAME), config.image_scale)
            self.camera_2_from_camera = (np.linalg.inv(self.camera_mount_2.parent_from_optical())
                                         @ self.camera_mount.parent_from_optical())
        self.glove = GloveModel.from_yaml(config_path(config.glove_config))
        self.glove_mount_errors: dict[str, np.ndarray] = {}        # per side, [N, 3, 3] (see mount_errors)
        self.glove_wearings: dict[str, int] = {}                   # per side: 1 + calibrations refused before
        self.glove_calibrations: dict[str, MountingCalibration] = {}  # per side, with glove_mount_calibration
        if any(site.imu != self.glove.sites[0].imu for site in self.glove.sites):
            # imu_sim applies one ADC (range, bits) to every sensor of a glove
            raise ConfigError(self.glove.source, "sites: the simulator needs the same imu spec on every site")
        self.imu_model: ImuErrorModel = (
            load_imu_error_model(config.imu_noise_preset, config_path(config.imu_noise_config),
                                 noise_scale=config.noise_scale)
            .with_imu_spec(self.glove.sites[0].imu)
            .with_faults(dropout_rate=config.dropout_rate, mean_dropout_length=config.dropout_burst_length,
                         dead_sensors=_dead_sensor_onsets(config.dead_sensors, self.glove)))
        base = MotionConfig()
        self.motion_config = MotionConfig.with_camera_mount(
            self.camera_mount, hand_scale_range=tuple(config.hand_scale_range), speed_range=tuple(config.speed_range),
            head_sway_m=base.head_sway_m * config.head_motion_scale,
            head_jitter_rad=base.head_jitter_rad * config.head_motion_scale)
        activities = None if set(config.activities) == set(ACTIVITY_LABELS) else tuple(config.activities)
        self.sides = tuple(s for s in SIDES if s in config.sides)
        self.motions: dict[str, MotionSequence] = {
            side: generate_sequence(np.random.default_rng([self.seed, _MOTION_STREAM[side]]), config.duration_s,
                                    side, activities, self.motion_config)
            for side in self.sides}
        # Two hands: each hand's workspace moves away from the midline (rigid shift: no IMU effect).
        separation = config.two_hand_separation_m if len(self.sides) > 1 else 0.0
        self.hand_offsets = {side: np.array([0.0, separation if side == "left" else -separation, 0.0])
                             for side in self.sides}

        count = config.num_frames
        self.frame_times_s = np.arange(count) / config.camera_rate_hz
        start_ns = int(round(config.start_time_s * 1e9))
        self.start_ns = start_ns
        self.camera_stamps_ns = start_ns + np.rint(self.frame_times_s * 1e9).astype(np.int64)
        motion_times = self.motion_time(self.frame_times_s)

        poses = {side: self.motions[side].evaluate(motion_times) for side in self.sides}
        fk = {side: forward_kinematics_numpy(poses[side]["joint_angles"], poses[side]["wrist_rotation"],
                                             poses[side]["wrist_translation"] + self.hand_offsets[side],
                                             scale=self.motions[side].scale, side=side,
                                             model=self.motions[side].hand_model)
              for side in self.sides}
        if len(self.sides) == 1:
            pose = poses[self.sides[0]]
            self.head_rotation, self.head_translation = pose["head_rotation"], pose["head_translation"]
        else:
            self.head_rotation, self.head_translation = self._shared_head(poses, fk)
        optical = self.camera_mount.parent_from_optical()
        self.camera_rotation = self.head_rotation @ optical[:3, :3]
        self.camera_translation = self.head_translation + self.head_rotation @ optical[:3, 3]
        r_cam, p_cam = self.camera_rotation, self.camera_translation
        self.camera_2_rotation: np.ndarray | None = None
        self.camera_2_translation: np.ndarray | None = None
        if self.camera_mount_2 is not None:
            optical_2 = self.camera_mount_2.parent_from_optical()
            self.camera_2_rotation = self.head_rotation @ optical_2[:3, :3]
            self.camera_2_translation = self.head_translation + self.head_rotation @ optical_2[:3, 3]

        self.hands: dict[str, HandTruth] = {}
        self.forearm_directions: dict[str, np.ndarray] = {}
        self.forearm_directions_2: dict[str, np.ndarray] = {}
        for side in self.sides:
            wrist_world = poses[side]["wrist_translation"] + self.hand_offsets[side]
            labels = (np.full(count, STATIC_ACTIVITY, dtype=object) if config.motion == "static"
                      else self.motions[side].labels_at(motion_times))
            wrist_rotation = np.swapaxes(r_cam, -1, -2) @ poses[side]["wrist_rotation"]
            wrist_position = _to_camera(wrist_world[:, None], r_cam, p_cam)[:, 0]
            landmarks = _to_camera(fk[side].landmarks, r_cam, p_cam)
            view_2: dict[str, np.ndarray] = {}
            if self.camera_2_from_camera is not None:
                rotation_21, offset_21 = self.camera_2_from_camera[:3, :3], self.camera_2_from_camera[:3, 3]
                view_2 = dict(
                    wrist_rotation_2=rotation_21 @ wrist_rotation,
                    wrist_position_2=wrist_position @ rotation_21.T + offset_21,
                    landmarks_2=landmarks @ rotation_21.T + offset_21,
                    visibility_2=np.zeros((count, NUM_LANDMARKS), bool),
                    landmark_occlusion_2=np.zeros((count, NUM_LANDMARKS), np.int8),
                    occlusion_ratio_2=np.zeros(count), object_pixel_occlusion_ratio_2=np.zeros(count))
            self.hands[side] = HandTruth(
                side=side, hand_scale=float(self.motions[side].scale),
                joint_angles=poses[side]["joint_angles"],
                wrist_rotation=wrist_rotation,
                wrist_position=wrist_position,
                landmarks=landmarks,
                activity=np.asarray(labels, dtype=object),
                visibility=np.zeros((count, NUM_LANDMARKS), bool),
                landmark_occlusion=np.zeros((count, NUM_LANDMARKS), np.int8),
                occlusion_ratio=np.zeros(count), object_pixel_occlusion_ratio=np.zeros(count),
                rendered=np.zeros(count, bool), **view_2)
            shoulder = _SHOULDER_RIGHT * np.array([1.0, -1.0 if side == "left" else 1.0, 1.0])
            shoulder = shoulder + self.head_translation - np.asarray(self.motion_config.head_position_m)
            elbow = _elbow_directions(wrist_world, shoulder, 1.0 if side == "left" else -1.0)
            self.forearm_directions[side] = np.einsum("fi,fij->fj", elbow, r_cam)
            if self.camera_2_from_camera is not None:
                self.forearm_directions_2[side] = self.forearm_directions[side] @ self.camera_2_from_camera[:3, :3].T

        scene_rng = np.random.default_rng([self.seed, _SCENE_STREAM])
        self._scene_objects = self._plan_scene_objects(motion_times, scene_rng)
        self.occluders = self._plan_occluders(np.random.default_rng([self.seed, _OCCLUDER_STREAM]))
        self._occluder_objects = self._place_occluders()
        self.render_config = RenderConfig()
        self.hand_geometry = HandGeometry()
        render_seed = int(np.random.default_rng([self.seed, _RENDER_STREAM]).integers(2**31))
        self.renderer = HandRenderer(self.camera, self.render_config, seed=render_seed)
        self.renderer_2: HandRenderer | None = None
        if self.camera_2 is not None:
            # Its own sensor (exposure, gamma, noise, vignetting), illuminator and painted
            # background from its own stream; the glove is the same material in both views.
            render_seed_2 = int(np.random.default_rng([self.seed, _RENDER_STREAM, 1]).integers(2**31))
            self.renderer_2 = HandRenderer(self.camera_2, self.render_config, seed=render_seed_2)
            self.renderer_2.appearance = dataclasses.replace(self.renderer_2.appearance,
                                                             hand_albedo=self.renderer.appearance.hand_albedo)

    # ------------------------------------------------------------------ time
    def motion_time(self, true_time_s: np.ndarray) -> np.ndarray:
        """Motion-script time of true times (``static``: frozen at 0)."""
        true_time_s = np.asarray(true_time_s, dtype=np.float64)
        return np.zeros_like(true_time_s) if self.config.motion == "static" else true_time_s

    @property
    def num_frames(self) -> int:
        return int(self.frame_times_s.size)

    # ------------------------------------------------------------------ head (two hands)
    def _shared_head(self, poses: dict, fk: dict) -> tuple[np.ndarray, np.ndarray]:
        """Head poses looking between both hands (the motion generator's head follows one hand).

        Translation: the first hand's generated head path (sway, lean). Rotation: yaw and
        pitch aim the optical axis at the smoothed midpoint of the palms, plus smooth jitter
        and a little roll, as the motion generator does for one hand.
        """
        config, motion = self.config, self.motion_config
        rate = config.camera_rate_hz
        head_translation = poses[self.sides[0]]["head_translation"]
        gaze = np.mean([fk[s].landmarks[:, list(_PALM_LANDMARKS)].mean(axis=1) for s in self.sides], axis=0)
        if motion.gaze_smoothing_s > 0 and gaze.shape[0] > 1:
            gaze = gaussian_filter1d(gaze, sigma=motion.gaze_smoothing_s * rate, axis=0, mode="nearest")
        mount = self.camera_mount.parent_from_body()
        mount_pitch = float(self.camera_mount.rpy[1])
        yaw = np.zeros(gaze.shape[0])
        pitch = np.zeros(gaze.shape[0])
        for _ in range(2):   # the camera position depends on the head rotation
            rotation = Rotation.from_euler("ZYX", np.column_stack([yaw, pitch, np.zeros_like(yaw)])).as_matrix()
            d = gaze - (head_translation + rotation @ mount[:3, 3])
            yaw = np.arctan2(d[:, 1], d[:, 0])
            pitch = np.arctan2(-d[:, 2], np.hypot(d[:, 0], d[:, 1])) - mount_pitch
        rng = np.random.default_rng([self.seed, _HEAD_STREAM])
        jitter = _smooth_noise(rng, gaze.shape[0], 0.6 * rate, motion.head_jitter_rad, 3)
        if config.motion == "static":
            jitter[:] = jitter[:1]
        euler = np.column_stack([yaw + jitter[:, 0], np.clip(pitch + jitter[:, 1], -0.6, 1.0), 0.5 * jitter[:, 2]])
        return Rotation.from_euler("ZYX", euler).as_matrix(), head_translation

    # ------------------------------------------------------------------ scene
    def _plan_scene_objects(self, motion_times: np.ndarray, rng: np.random.Generator) -> list[tuple]:
        """Per object: (kind, sizes, albedo, texture amplitude, texture period, rotations [F,3,3],
        centres [F,3]), poses in the optical frame."""
        r_cam, p_cam = self.camera_rotation, self.camera_translation
        objects = []
        if self.config.render_table:
            width = 0.75 + (self.config.two_hand_separation_m if len(self.sides) > 1 else 0.0)
            thickness = 0.03
            centre = np.array([0.58, 0.0, self.motion_config.table_height_m - thickness / 2])
            half = (0.42, width, thickness / 2)
            count = self.num_frames
            rotation = np.swapaxes(r_cam, -1, -2) @ np.eye(3)
            position = _to_camera(np.broadcast_to(centre, (count, 1, 3)), r_cam, p_cam)[:, 0]
            objects.append(("box", (half,), float(rng.uniform(0.25, 0.6)), float(rng.uniform(0.05, 0.15)),
                            float(rng.uniform(0.01, 0.05)), rotation, position))
        for side in self.sides:
            motion = self.motions[side]
            if not motion.objects:
                continue
            poses = motion.object_poses(motion_times)
            for m, obj in enumerate(motion.objects):
                rotation = np.swapaxes(r_cam, -1, -2) @ poses["rotation"][:, m]
                position = _to_camera(poses["position"][:, m, None] + self.hand_offsets[side], r_cam, p_cam)[:, 0]
                shape = obj.shape
                sizes = {"sphere": (shape.radius,), "cylinder": (shape.radius, shape.half_length),
                         "box": (tuple(shape.half_extents),)}[shape.kind]
                objects.append((shape.kind, sizes, float(rng.uniform(0.2, 0.9)), float(rng.uniform(0.0, 0.3)),
                                float(rng.uniform(0.004, 0.03)), rotation, position))
        return objects

    def _plan_occluders(self, rng: np.random.Generator) -> tuple[OccluderPhase, ...]:
        """Occluder phases on a jittered regular schedule of ``occluder_rate_per_min``."""
        config = self.config
        if config.occluder_rate_per_min <= 0.0:
            return ()
        period = 60.0 / config.occluder_rate_per_min
        phases = []
        groups = [tuple(LANDMARKS_OF_FINGER[f][-3:]) for f in LANDMARKS_OF_FINGER] + [_PALM_LANDMARKS]
        weights = np.array([1.0] * (len(groups) - 1) + [1.5])
        k = 0
        while True:
            start = (k + rng.uniform(0.05, 0.45)) * period
            duration = min(rng.uniform(*config.occluder_duration_s), 0.95 * period)
            # fixed number of draws per phase (common random numbers across settings)
            side = self.sides[int(rng.integers(len(self.sides)))]
            target = groups[int(rng.choice(len(groups), p=weights / weights.sum()))]
            kind = ("sphere", "cylinder", "box")[int(rng.integers(3))]
            size = rng.uniform(*config.occluder_size_m)
            shape_draws = rng.uniform(0.0, 1.0, 3)
            coverage = rng.uniform(*config.occluder_coverage)
            albedo, amplitude, texture_period = rng.uniform(0.15, 0.9), rng.uniform(0.0, 0.25), rng.uniform(0.004, 0.03)
            if start >= config.duration_s:
                break
            radius = half_length = 0.0
            half_extents = (0.0, 0.0, 0.0)
            if kind == "sphere":
                radius = size
            elif kind == "cylinder":
                radius = size * (0.35 + 0.35 * shape_draws[0])
                half_length = size * (0.9 + 0.9 * shape_draws[1])
            else:
                half_extents = tuple(float(size * (0.3 + 0.7 * d)) for d in shape_draws)
            phases.append(OccluderPhase(float(start), float(min(start + duration, config.duration_s)), side, target,
                                        kind, float(radius), float(half_length), half_extents, float(coverage),
                                        float(albedo), float(amplitude), float(texture_period)))
            k += 1
        return tuple(phases)

    def _place_occluders(self) -> dict[int, list]:
        """Renderer primitives of the occluders, per frame index (optical frame)."""
        out: dict[int, list] = {}
        rate = self.config.camera_rate_hz
        times = self.frame_times_s
        all_landmarks = np.concatenate([self.hands[s].landmarks for s in self.sides], axis=1)   # [F, 21*S, 3]
        for index, phase in enumerate(self.occluders):
            frames = np.flatnonzero((times >= phase.start_s) & (times < phase.end_s))
            if frames.size == 0:
                continue
            rng = np.random.default_rng([self.seed, _OCCLUDER_STREAM, index])
            t = times[frames]
            target = self.hands[phase.side].landmarks[frames][:, list(phase.target)].mean(axis=1)
            in_front = all_landmarks[frames][:, :, 2]
            nearest = np.min(np.where(in_front > 0.0, in_front, np.inf), axis=1)
            nearest = np.where(np.isfinite(nearest), nearest, target[:, 2])
            if frames.size > 1:
                sigma = 0.08 * rate
                target = gaussian_filter1d(target, sigma=sigma, axis=0, mode="nearest")
                # smooth the nearest depth without ever exceeding it: minimum over the kernel first
                nearest = minimum_filter1d(nearest, size=2 * int(math.ceil(3 * sigma)) + 1, mode="nearest")
                nearest = gaussian_filter1d(nearest, sigma=sigma, mode="nearest")
            bound = phase.bounding_radius
            depth = np.maximum(nearest - _OCCLUDER_CLEARANCE_M - bound, _OCCLUDER_NEAR_M + bound)
            ray = target / np.maximum(target[:, 2:3], 1e-3)
            centre = ray * depth[:, None]
            angle_offset, angle_entry = rng.uniform(0.0, 2.0 * math.pi, 2)
            offset_dir = np.array([math.cos(angle_offset), math.sin(angle_offset), 0.0])
            entry_dir = np.array([math.cos(angle_entry), math.sin(angle_entry), 0.0])
            centre = centre + (1.0 - phase.coverage) * 1.6 * bound * offset_dir
            ramp = min(0.35, 0.3 * (phase.end_s - phase.start_s))
            shown = np.minimum(_minimum_jerk((t - phase.start_s) / ramp), _minimum_jerk((phase.end_s - t) / ramp))
            entry = np.linalg.norm(centre[:, :2], axis=1) + 1.3 * depth + bound
            centre = centre + ((1.0 - shown) * entry)[:, None] * entry_dir
            spin_axis = rng.normal(size=3)
            spin = spin_axis / np.linalg.norm(spin_axis) * rng.uniform(0.0, 1.5)
            initial = Rotation.random(random_state=int(rng.integers(2**31)))
            rotations = (initial * Rotation.from_rotvec(np.outer(t - phase.start_s, spin))).as_matrix()
            style = {"albedo": phase.albedo, "texture_amplitude": phase.texture_amplitude,
                     "texture_period_m": phase.texture_period_m}
            for k, frame in enumerate(frames):
                if phase.kind == "sphere":
                    primitive = Sphere(center=centre[k], radius=phase.radius, **style)
                elif phase.kind == "cylinder":
                    primitive = Cylinder(center=centre[k], axis=rotations[k][:, 2], radius=phase.radius,
                                         half_length=phase.half_length, **style)
                else:
                    primitive = Box(center=centre[k], half_extents=phase.half_extents, rotation=rotations[k], **style)
                out.setdefault(int(frame), []).append(primitive)
        return out

    @property
    def num_views(self) -> int:
        """Cameras rendered per frame: 1, or 2 with ``second_camera_config``."""
        return 1 if self.camera_2 is None else 2

    def _check_view(self, view: int) -> None:
        if view not in range(self.num_views):
            raise ValueError(f"view {view!r}: this simulator renders views 0..{self.num_views - 1}")

    def scene_primitives(self, k: int, view: int = 0) -> list:
        """Renderer primitives of frame ``k``: table, scene objects, occluders (not the hands),
        in the optical frame of camera ``view`` (0: the first camera, 1: the second)."""
        self._check_view(view)
        primitives = []
        near = self.render_config.near_m
        moved = self.camera_2_from_camera if view == 1 else None
        for kind, sizes, albedo, amplitude, period, rotations, positions in self._scene_objects:
            centre, rotation = positions[k], rotations[k]
            if moved is not None:
                centre, rotation = moved[:3, :3] @ centre + moved[:3, 3], moved[:3, :3] @ rotation
            style = {"albedo": albedo, "texture_amplitude": amplitude, "texture_period_m": period}
            if kind == "sphere":
                bound = sizes[0]
            elif kind == "cylinder":
                bound = math.hypot(*sizes)
            else:
                bound = float(np.linalg.norm(sizes[0]))
            if centre[2] + bound <= near:   # entirely behind the camera
                continue
            if kind == "sphere":
                primitives.append(Sphere(center=centre, radius=sizes[0], **style))
            elif kind == "cylinder":
                primitives.append(Cylinder(center=centre, axis=rotation[:, 2], radius=sizes[0], half_length=sizes[1],
                                           **style))
            else:
                primitives.append(Box(center=centre, half_extents=sizes[0], rotation=rotation, **style))
        occluders = self._occluder_objects.get(int(k), [])
        if moved is not None:
            occluders = [_moved_primitive(p, moved[:3, :3], moved[:3, 3]) for p in occluders]
        primitives.extend(occluders)
        return primitives

    # ------------------------------------------------------------------ rendering
    def render_frame(self, k: int) -> FrameRender:
        """Render frame ``k`` (deterministic: same image for the same frame, in any order).

        One hand: one render pass. Two hands: one pass per hand, each with the other hand
        as occluding proxy primitives (:func:`_hand_proxies`, a subset of its rendered
        shape); the image takes, per pixel, the pass whose own hand is visible and nearest
        (or pass 0): identical background and per-frame noise make that composite exact.
        With a second camera, the same is done for its view (``image_2``, ``results_2``).
        """
        if not 0 <= k < self.num_frames:
            raise IndexError(f"frame {k} outside 0..{self.num_frames - 1}")
        image, results = self.render_view(k, 0)
        if self.camera_2 is None:
            return FrameRender(int(k), image, results)
        image_2, results_2 = self.render_view(k, 1)
        return FrameRender(int(k), image, results, image_2, results_2)

    def render_view(self, k: int, view: int = 0) -> tuple[np.ndarray, dict[str, RenderResult]]:
        """Frame ``k`` seen by camera ``view`` only: (image, per-hand render pass)."""
        if not 0 <= k < self.num_frames:
            raise IndexError(f"frame {k} outside 0..{self.num_frames - 1}")
        self._check_view(view)
        scene = self.scene_primitives(k, view)
        renderer = self.renderer if view == 0 else self.renderer_2
        forearms = self.forearm_directions if view == 0 else self.forearm_directions_2
        landmarks = {side: (hand.landmarks if view == 0 else hand.landmarks_2)[k] for side, hand in self.hands.items()}
        results: dict[str, RenderResult] = {}
        for side in self.sides:
            others = [p for other in self.sides if other != side
                      for p in _hand_proxies(landmarks[other], forearms[other][k], self.hand_geometry)]
            results[side] = renderer.render(landmarks[side], scene + others, self.hand_geometry,
                                            forearm_direction=forearms[side][k], frame_index=k)
        passes = list(results.values())
        image = passes[0].image
        if len(passes) > 1:
            image = image.copy()
            best = np.where(passes[0].hand_mask, passes[0].depth, np.inf)
            for result in passes[1:]:
                own = np.where(result.hand_mask, result.depth, np.inf)
                take = own < best
                image[take] = result.image[take]
                best = np.minimum(best, own)
        return image, results

    def record(self, frame: FrameRender) -> None:
        """Store a rendered frame's visibility ground truth in :attr:`hands`."""
        k = frame.index
        for side, result in frame.results.items():
            hand = self.hands[side]
            hand.visibility[k] = result.landmark_visibility
            hand.landmark_occlusion[k] = result.landmark_occlusion
            hand.occlusion_ratio[k] = result.occlusion_ratio
            hand.object_pixel_occlusion_ratio[k] = result.object_pixel_occlusion_ratio
            hand.rendered[k] = True
        for side, result in (frame.results_2 or {}).items():
            hand = self.hands[side]
            hand.visibility_2[k] = result.landmark_visibility
            hand.landmark_occlusion_2[k] = result.landmark_occlusion
            hand.occlusion_ratio_2[k] = result.occlusion_ratio
            hand.object_pixel_occlusion_ratio_2[k] = result.object_pixel_occlusion_ratio

    # ------------------------------------------------------------------ gloves
    @functools.cached_property
    def gloves(self) -> dict[str, GloveStream]:
        """Simulated glove streams of every hand (computed on first access; also fills
        :attr:`glove_mount_errors` and, with ``glove_mount_calibration``, :attr:`glove_calibrations`)."""
        config = self.config
        clock = DeviceClock(config.glove_clock_offset_s, config.glove_clock_drift_ppm)
        rate = config.imu_rate_hz
        variances = self.imu_model.measurement_variance(rate)
        start, end = -_GLOVE_LEAD_S, config.duration_s + _GLOVE_LEAD_S
        out = {}
        for side in self.sides:
            motion, offset = self.motions[side], self.hand_offsets[side]
            wearing_rng = np.random.default_rng([self.seed, _WEARING_STREAM[side]])
            device_us, _ = clock.sample_schedule(start, end, rate)
            first_sequence = int(round(float(device_us[0]) * 1e-6 * rate)) % 2**32
            refused: list[str] = []
            while True:   # one pass per wearing: the stream depends on the mounts, so it is simulated again
                mount_errors = self.mount_errors(side, wearing_rng)

                def pose_at(times, motion=motion, offset=offset, mount_errors=mount_errors):
                    rotations, positions = motion.sensor_poses(self.motion_time(times), self.glove)
                    return rotations @ mount_errors, positions + offset

                sensors = SimulatedImuArray(self.imu_model, self.glove.num_sensors,
                                            np.random.default_rng([self.seed, _IMU_STREAM[side]]), rate)
                stream = simulate_glove_imu(pose_at, start, end, sensors, clock=clock, rate_hz=rate,
                                            first_sequence=first_sequence)
                if not config.glove_mount_calibration:
                    break
                try:
                    calibration = self.flat_hand_calibration(side, sensors, mount_errors, wearing_rng)
                    break
                except CalibrationError as exc:
                    # the driver refuses a sensor tilted beyond its largest correction: the user puts
                    # the glove on again (the next wearing of the same stream; the same physical glove)
                    refused.append(str(exc))
                    if len(refused) >= _MAX_WEARINGS:
                        raise ConfigError("glove_mount_error_deg", (
                            f"{config.glove_mount_error_deg} deg: the {side} glove's flat-hand calibration was "
                            f"refused on {_MAX_WEARINGS} wearings in a row (seed {self.seed}); last: {refused[-1]}"
                        )) from exc
            stamps = self.start_ns + np.rint((stream.true_time_s - config.time_offset_s) * 1e9).astype(np.int64)
            imu = stream.imu
            accel, gyro = imu.accel, imu.gyro
            self.glove_mount_errors[side] = mount_errors
            self.glove_wearings[side] = len(refused) + 1
            if config.glove_mount_calibration:
                self.glove_calibrations[side] = calibration
                accel, gyro = calibration.apply(accel, gyro, imu.status)   # as the glove driver does
            out[side] = GloveStream(side, self.glove.frame_ids(side), stamps, stream.true_time_s,
                                    stream.device_time_us, stream.sequence, accel, gyro, imu.accel_true,
                                    imu.gyro_true, imu.status, float(variances[0]), float(variances[1]))
        return out

    def mount_errors(self, side: str, wearing_rng: np.random.Generator) -> np.ndarray:
        """``[N, 3, 3]`` per-wearing mounting errors (actual sensor frame -> nominal mount frame)
        of one hand's IMUs: rotation vectors with i.i.d. N(0, ``glove_mount_error_deg``)
        components, the first draws of the wearing's generator (identity when the σ is 0)."""
        sigma = math.radians(self.config.glove_mount_error_deg)
        rotvecs = wearing_rng.standard_normal((self.glove.num_sensors, 3)) * sigma
        return Rotation.from_rotvec(rotvecs).as_matrix()

    def flat_hand_calibration(self, side: str, sensors: SimulatedImuArray, mount_errors: np.ndarray,
                              wearing_rng: np.random.Generator) -> MountingCalibration:
        """The mounting calibration the glove driver would store for this wearing.

        The user holds the hand "flat, palm down, still" for :data:`_CALIBRATION_S` before the
        sequence: every joint angle and the wrist tilt deviate from flat by
        N(0, ``glove_calibration_posture_deg``); the same physical glove (``sensors``: its
        biases, scale and misalignment errors) with the same mounts measures it, and
        :func:`~avi_ht_ros.driver.calibration.solve_mounting_calibration` turns the still
        recording into corrections — exactly what the driver's ``calibrate`` service does.
        Sensors without usable samples (dead from power-on) get no correction (the driver would
        refuse; their samples stay DEAD either way).
        """
        sigma = math.radians(self.config.glove_calibration_posture_deg)
        motion = self.motions[side]
        angles = wearing_rng.standard_normal(22) * sigma
        tilt = Rotation.from_rotvec(wearing_rng.standard_normal(3) * sigma).as_matrix()
        fk = forward_kinematics_numpy(angles, tilt, np.zeros(3), scale=motion.scale, side=side,
                                      model=motion.hand_model)
        rotations, positions = self.glove.sensor_poses(fk)
        rotations = rotations @ mount_errors

        def still(times):
            count = np.asarray(times).size
            return (np.broadcast_to(rotations, (count, *rotations.shape)),
                    np.broadcast_to(positions, (count, *positions.shape)))

        recording = simulate_glove_imu(still, 0.0, _CALIBRATION_S, sensors, rate_hz=sensors.rate_hz)
        imu = recording.imu
        usable = imu.status == STATUS_OK
        alive = np.nonzero(usable.sum(axis=0) >= StillnessLimits().min_samples)[0]
        collector = StillHandCollector(alive.size)
        for k in range(imu.accel.shape[0]):
            collector.add(imu.accel[k, alive], imu.gyro[k, alive], usable[k, alive])
        names = self.glove.sensor_names
        solved = solve_mounting_calibration(collector, self.glove.flat_hand_up_vectors(side)[alive],
                                            sensor_names=[names[i] for i in alive], handedness=side)

        def every_sensor(values: np.ndarray) -> np.ndarray:  # zeros (no correction) where not calibrated
            full = np.zeros((self.glove.num_sensors, *values.shape[1:]))
            full[alive] = values
            return full

        return MountingCalibration(Rotation.from_rotvec(every_sensor(solved.rotations.as_rotvec())),
                                   every_sensor(solved.gyro_bias), tuple(names), every_sensor(solved.residual_deg),
                                   every_sensor(solved.accel_norm_m_s2), solved.common_tilt_deg, side)

    # ------------------------------------------------------------------ outputs
    def sequence(self, images: np.ndarray | None, images_2: np.ndarray | None = None) -> SimSequence:
        """The :class:`SimSequence` view of this simulator (ground truth arrays are shared)."""
        return SimSequence(
            config=self.config, seed=self.seed, camera=self.camera, camera_mount=self.camera_mount, glove=self.glove,
            frame_times_s=self.frame_times_s, camera_stamps_ns=self.camera_stamps_ns, images=images,
            head_rotation=self.head_rotation, head_translation=self.head_translation,
            camera_rotation=self.camera_rotation, camera_translation=self.camera_translation,
            hands=self.hands, gloves=self.gloves, occluders=self.occluders,
            hand_scales={s: self.hands[s].hand_scale for s in self.sides},
            camera_2=self.camera_2, camera_mount_2=self.camera_mount_2, images_2=images_2,
            camera_2_rotation=self.camera_2_rotation, camera_2_translation=self.camera_2_translation,
            camera_2_from_camera=self.camera_2_from_camera)

    def run(self, progress: Callable[[int], None] | None = None) -> SimSequence:
        """Render every frame and return the sequence with its images ``[F, H, W]`` (and ``images_2``)."""
        images = np.empty((self.num_frames, self.camera.height, self.camera.width), np.uint8)
        images_2 = (None if self.camera_2 is None else
                    np.empty((self.num_frames, self.camera_2.height, self.camera_2.width), np.uint8))
        for k in range(self.num_frames):
            frame = self.render_frame(k)
            self.record(frame)
            images[k] = frame.image
            if images_2 is not None:
                images_2[k] = frame.image_2
            if progress is not None:
                progress(1)
        return self.sequence(images, images_2)

    def write_bag(self, path: str | os.PathLike, *, storage: str = "mcap",
                  progress: Callable[[int], None] | None = None) -> SimSequence:
        """Render and write the sequence frame by frame (images are not kept: ``images=None``)."""
        sequence = self.sequence(None)

        def images_of(k: int) -> tuple[np.ndarray, ...]:
            frame = self.render_frame(k)
            self.record(frame)
            if progress is not None:
                progress(1)
            return (frame.image,) if frame.image_2 is None else (frame.image, frame.image_2)

        _write_bag(sequence, path, storage, images_of)
        return sequence


def simulate_sequence(config: WorldConfig, seed: int,
                      progress: Callable[[int], None] | None = None) -> SimSequence:
    """Simulate one sequence in memory: images, per-hand ground truth, glove streams, head poses."""
    return SequenceSimulator(config, seed).run(progress)


# ======================================================================================
# Bag writing
# ======================================================================================

def write_sequence_bag(seq: SimSequence, path: str | os.PathLike, *, storage: str = "mcap") -> dict[str, int]:
    """Write an in-memory sequence as a rosbag2 (never overwrites); returns ``{topic: count}``."""
    if seq.images is None or (seq.has_second_camera and seq.images_2 is None):
        raise ValueError("write_sequence_bag: this sequence has no images (it was streamed by "
                         "SequenceSimulator.write_bag)")
    if seq.has_second_camera:
        return _write_bag(seq, path, storage, lambda k: (seq.images[k], seq.images_2[k]))
    return _write_bag(seq, path, storage, lambda k: (seq.images[k],))


def _static_transforms(seq: SimSequence, stamp_ns: int) -> list:
    """Camera mount chains (head -> body -> optical, both cameras) and every IMU mount (offsets scaled
    with each hand)."""
    transforms = []
    for mount in (seq.camera_mount, seq.camera_mount_2):
        if mount is None:
            continue
        parent_from_body = mount.parent_from_body()
        body_from_optical = np.linalg.inv(parent_from_body) @ mount.parent_from_optical()
        transforms += [
            convert.transform_stamped_msg(stamp_ns, mount.parent_frame, mount.child_frame, parent_from_body[:3, 3],
                                          Rotation.from_matrix(parent_from_body[:3, :3]).as_quat()),
            convert.transform_stamped_msg(stamp_ns, mount.child_frame, mount.optical_frame, body_from_optical[:3, 3],
                                          Rotation.from_matrix(body_from_optical[:3, :3]).as_quat()),
        ]
    for side in seq.sides:
        rotations = Rotation.from_matrix(seq.glove.mount_rotations(side)).as_quat()
        offsets = seq.glove.mount_offsets(side) * seq.hand_scales[side]
        for site, frame_id, quat, offset in zip(seq.glove.sites, seq.glove.frame_ids(side), rotations, offsets):
            # The palm's frame is the wrist frame (docs/HAND_MODEL.md).
            parent = topics.hand_frame(side, "wrist" if site.bone == "palm" else site.bone)
            transforms.append(convert.transform_stamped_msg(stamp_ns, parent, frame_id, offset, quat))
    return transforms


def _config_text(seq: SimSequence) -> str:
    return yaml.safe_dump({"generator": "avi_ht_ros.sim.world", "seed": seq.seed, "world": seq.config.to_dict()},
                          sort_keys=False)


def _write_bag(seq: SimSequence, path: str | os.PathLike, storage: str,
               images_of: Callable[[int], tuple[np.ndarray, ...]]) -> dict[str, int]:
    """All messages in stamp order (log time = header stamp) into a new bag at ``path``.

    ``images_of(k)``: frame k's image of every camera (one, or two with a second camera;
    it renders and records the frame when streaming, so it is called before the frame's
    ground truth is written). Written inside a hidden sibling directory first and moved to
    ``path`` when complete (same file names), so ``path`` never holds a partial bag.
    """
    path = pathlib.Path(path)
    if path.exists():
        raise BagError(f"{path}: already exists (bags are never overwritten)")
    staging = path.parent / f".{path.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    partial = staging / path.name
    optical = seq.camera_mount.optical_frame
    info = seq.camera.to_camera_info_fields()
    two_cameras = seq.has_second_camera
    optical_2 = seq.camera_mount_2.optical_frame if two_cameras else ""
    info_2 = seq.camera_2.to_camera_info_fields() if two_cameras else None
    tracking_ok = int(convert.typestore().types[convert.HAND_POSE].TRACKING_OK)
    head_quat = Rotation.from_matrix(seq.head_rotation).as_quat()
    sides = seq.sides
    gloves = [seq.gloves[s] for s in sides]
    # Event list: camera frames (kind 0) and glove samples (kind 1 + side index), by stamp.
    stamps = np.concatenate([seq.camera_stamps_ns] + [g.stamps_ns for g in gloves])
    kinds = np.concatenate([np.zeros(seq.num_frames, np.int64)]
                           + [np.full(g.num_samples, 1 + i, np.int64) for i, g in enumerate(gloves)])
    indices = np.concatenate([np.arange(seq.num_frames)] + [np.arange(g.num_samples) for g in gloves])
    order = np.lexsort((kinds, stamps))
    first_ns = int(stamps.min())
    try:
        with BagWriter(partial, storage=storage) as bag:
            bag.write(topics.TF_STATIC, convert.TF_MESSAGE, first_ns,
                      convert.tf_message(_static_transforms(seq, first_ns)), latched=True)
            bag.write(topics.SIM_CONFIG_TOPIC, "std_msgs/msg/String", first_ns,
                      convert.new_message("std_msgs/msg/String", data=_config_text(seq)), latched=True)
            glove_topics = [topics.hand_topic(s, topics.GLOVE_SAMPLES) for s in sides]
            truth_topics = [topics.hand_topic(s, topics.HAND_GROUND_TRUTH) for s in sides]
            truth_topics_2 = [topics.hand_topic(s, topics.HAND_GROUND_TRUTH_2) for s in sides]
            for event in order:
                stamp, kind, i = int(stamps[event]), int(kinds[event]), int(indices[event])
                if kind == 0:
                    bag.write(topics.TF, convert.TF_MESSAGE, stamp, convert.tf_message([
                        convert.transform_stamped_msg(stamp, topics.WORLD_FRAME, topics.HEAD_FRAME,
                                                      seq.head_translation[i], head_quat[i])]))
                    images = images_of(i)
                    bag.write(topics.IMAGE, convert.IMAGE, stamp, convert.image_msg(stamp, optical, images[0]))
                    bag.write(topics.CAMERA_INFO, convert.CAMERA_INFO, stamp,
                              convert.camera_info_msg(stamp, optical, info))
                    if two_cameras:   # hardware-synchronized: the same stamp
                        bag.write(topics.IMAGE_2, convert.IMAGE, stamp, convert.image_msg(stamp, optical_2, images[1]))
                        bag.write(topics.CAMERA_INFO_2, convert.CAMERA_INFO, stamp,
                                  convert.camera_info_msg(stamp, optical_2, info_2))
                    for side, topic in zip(sides, truth_topics):
                        hand = seq.hands[side]
                        pose = convert.hand_pose_msg(stamp, optical, side, tracking_ok, hand.joint_angles[i],
                                                     hand.hand_scale, hand.wrist_position[i],
                                                     hand.wrist_quaternion_xyzw[i], hand.landmarks[i])
                        bag.write(topic, convert.HAND_GROUND_TRUTH, stamp, convert.hand_ground_truth_msg(
                            pose, hand.visibility[i].astype(np.float32), hand.occlusion_ratio[i], hand.activity[i]))
                    for side, topic in zip(sides, truth_topics_2 if two_cameras else ()):
                        hand = seq.hands[side]
                        pose = convert.hand_pose_msg(stamp, optical_2, side, tracking_ok, hand.joint_angles[i],
                                                     hand.hand_scale, hand.wrist_position_2[i],
                                                     hand.wrist_quaternion_xyzw_2[i], hand.landmarks_2[i])
                        bag.write(topic, convert.HAND_GROUND_TRUTH, stamp, convert.hand_ground_truth_msg(
                            pose, hand.visibility_2[i].astype(np.float32), hand.occlusion_ratio_2[i],
                            hand.activity[i]))
                else:
                    glove = gloves[kind - 1]
                    bag.write(glove_topics[kind - 1], convert.GLOVE_SAMPLE, stamp, convert.glove_sample_msg(
                        stamp, glove.side, glove.frame_ids, glove.accel[i], glove.gyro[i], glove.status[i],
                        int(glove.sequence[i]), int(glove.device_time_us[i]), glove.accel_variance,
                        glove.gyro_variance))
            counts = dict(bag.counts)
        partial.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts


# ======================================================================================
# Picture strip
# ======================================================================================

def occlusion_strip_frames(seq: SimSequence, count: int = 8, margin_s: float = 0.4) -> np.ndarray:
    """``count`` frame indices spanning the most occluded phase of a (rendered) sequence.

    The occluder phase with the highest mean landmark occlusion, padded by ``margin_s`` on
    both sides so the strip shows the occluder arriving and leaving (phases whose padding
    fits in the sequence are preferred); without occluders, the 2 s window with the
    highest mean occlusion ratio (e.g. a grasp).
    """
    if seq.num_frames == 0:
        raise ValueError("occlusion_strip_frames: empty sequence")
    rendered = np.all([h.rendered for h in seq.hands.values()], axis=0)
    occlusion = np.mean([h.occlusion_ratio for h in seq.hands.values()], axis=0)
    occlusion = np.where(rendered, occlusion, 0.0)
    times = seq.frame_times_s
    best, window = -1.0, (0.0, min(2.0, float(times[-1])))
    for phase in seq.occluders:
        inside = (times >= phase.start_s) & (times < phase.end_s)
        if not inside.any():
            continue
        fits = phase.start_s - margin_s >= 0.0 and phase.end_s + margin_s <= times[-1]
        score = float(occlusion[inside].mean()) + (1.0 if fits else 0.0)
        if score > best:
            best, window = score, (phase.start_s - margin_s, phase.end_s + margin_s)
    if best < 0.0:
        span = max(1, int(round(2.0 * seq.config.camera_rate_hz)))
        mean = np.convolve(occlusion, np.ones(span) / span, mode="valid")
        start = int(np.argmax(mean)) if mean.size else 0
        window = (float(times[start]), float(times[min(start + span, seq.num_frames) - 1]))
    low, high = max(window[0], 0.0), min(window[1], float(times[-1]))
    wanted = np.linspace(low, high, count)
    return np.clip(np.rint(wanted * seq.config.camera_rate_hz).astype(int), 0, seq.num_frames - 1)


def write_occlusion_strip(simulator: SequenceSimulator, seq: SimSequence, path: str | os.PathLike,
                          count: int = 8, tile_px: int = 240) -> list[int]:
    """A PNG strip of ``count`` frames over the most occluded phase, occluded landmarks marked.

    Frames are re-rendered (deterministic: identical to the bag's images), cropped around
    the hands (one square crop size for the whole strip, magnified to ``tile_px``) and
    drawn by :func:`avi_ht_ros.sim.strip.draw_strip`: visible landmarks green dots,
    occluded ones red crosses. Returns the frame indices used.
    """
    import cv2

    from avi_ht_ros.sim.strip import draw_strip

    frames = occlusion_strip_frames(seq, count)
    camera = seq.camera
    renders = [simulator.render_frame(int(k)) for k in frames]
    uv = np.stack([np.concatenate([r.landmark_uv for r in f.results.values()]) for f in renders])
    visibility = np.stack([np.concatenate([r.landmark_visibility for r in f.results.values()]) for f in renders])
    inside = camera.in_image(uv)
    # One crop size for all tiles: 1.8 x the largest hand extent, within the image; each crop
    # is magnified to tile_px here so draw_strip's markers stay thin on a large hand.
    extents = [np.ptp(uv[i][inside[i]], axis=0).max() for i in range(len(frames)) if inside[i].sum() >= 2]
    size = int(min(max(1.8 * max(extents, default=0.0), 96.0), camera.width, camera.height))
    zoom = tile_px / size
    centre = np.array([camera.width / 2.0, camera.height / 2.0])
    images, shifted, labels = [], [], []
    for i, (k, frame) in enumerate(zip(frames, renders)):
        if inside[i].any():
            centre = 0.5 * (uv[i][inside[i]].min(axis=0) + uv[i][inside[i]].max(axis=0))
        u0 = int(np.clip(round(centre[0] - size / 2), 0, camera.width - size))
        v0 = int(np.clip(round(centre[1] - size / 2), 0, camera.height - size))
        crop = frame.image[v0:v0 + size, u0:u0 + size]
        images.append(cv2.resize(crop, (tile_px, tile_px), interpolation=cv2.INTER_LINEAR if zoom > 1 else
                                 cv2.INTER_AREA))
        shifted.append((uv[i] - np.array([u0, v0]) + 0.5) * zoom - 0.5)   # pixel-centre convention
        ratio = np.mean([r.occlusion_ratio for r in frame.results.values()])
        labels.append(f"{seq.frame_times_s[k]:.2f}s occ {ratio:.2f}")
    edges = [(a + NUM_LANDMARKS * i, b + NUM_LANDMARKS * i) for i in range(len(seq.sides))
             for a, b in DEFAULT_BONE_PAIRS]
    strip = draw_strip(images, np.stack(shifted), visibility, edges=edges, labels=labels)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), strip, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise AviHtError(f"{path}: cannot write the strip (extension must be an image format, e.g. .png)")
    return [int(k) for k in frames]
