"""Synthetic hand–object interaction motion in front of a head-mounted camera.

:func:`generate_sequence` scripts a seated user at a table doing labelled activities with
one hand (``ACTIVITY_LABELS``: grasp, release, pinch, tool_rotate, typing, pointing,
free_motion, wave) and returns a :class:`MotionSequence`: continuous-time trajectories of
the 22 joint angles, the wrist pose, the head pose (and the camera rigidly mounted on it),
the scene objects (spheres, boxes, cylinders; static on the table or held by the hand)
and the activity label at every instant.

World frame (ARCHITECTURE.md): x forward (away from the user), y left, z up, origin on the
floor below the user's head; the table top is ``table_height_m`` high. The scripts are
written for a right hand on the user's right; a left-hand sequence is the exact mirror
image of the world through the x–z plane (positions y → −y, rotations R → S R S), which
maps a right hand onto a left hand with the same joint angles (hand_model's convention).

How the trajectories are built
------------------------------
1. Activity scripts emit *keyframes* (wrist pose + joint angles at a time). Between two
   keyframes the intended motion is a minimum-jerk blend (``10s³ − 15s⁴ + 6s⁵``: position
   lerp, rotation slerp, joint lerp), so an intended motion always lies in the convex hull
   of its keyframes. Grasps are synthesised so fingertips touch the object (see below).
2. The intended motion is sampled every ``control_interval_s`` and the samples become the
   control points of one uniform B-spline of degree ``spline_degree`` (default 7, so every
   channel is C⁶): joint angles, wrist position, wrist rotation vector relative to a fixed
   reference rotation, head position and head rotation vector. A B-spline is a convex
   combination of its control points, so **joint limits hold exactly at every instant**;
   ``degree + 1`` equal control points make the curve exactly constant, which keeps a held
   object exactly still in the hand.
3. Derivatives are exact: the spline's own derivatives for joints and positions, and
   ``ω = R J_r(v) v̇`` (plus its derivative) for rotations ``R = R_ref Exp(v)``
   (:func:`avi_ht_ros.common.rotations.rotvec_curve_body_rates`). ``evaluate(times, order=2)``
   returns them; angular rates are expressed in the world frame.

Held objects follow the *evaluated* wrist (``object = wrist ∘ grasp``), so contact is exact
throughout a hold; they are placed back where the evaluated hand releases them.

Grasp synthesis (right-hand wrist frame): the object is placed against the palm (power
grasp) or between thumb and index pads (pinch); every finger then closes along a flexion
path until one of its sample points touches the object or the table (a finger's skin is
its bone axis plus a per-bone radius matching the renderer's glove), and keeps curling its
distal joints until the distal phalanx touches. Fingers that touched the object are the
grasp's contact fingers (``MotionSequence.contacts``).

The head looks at the hand: its yaw/pitch point the camera's optical axis at a smoothed
point of the palm, plus slow natural sway and jitter, so the hand stays in view.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
from scipy.interpolate import BSpline
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation

from avi_ht_ros.common.camera import CameraMount
from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.hand_model import (
    FINGER_NAMES,
    JOINT_INDEX,
    LANDMARKS_OF_FINGER,
    NUM_JOINTS,
    SIDES,
    ForwardKinematicsResult,
    HandModel,
    default_hand_model,
    forward_kinematics_numpy,
    mirror_landmarks_local,
    mirror_rotations_local,
)
from avi_ht_ros.common.params import param, validate_params
from avi_ht_ros.common.rotations import rotvec_curve_body_rates
from avi_ht_ros.sim.render import HandGeometry

__all__ = [
    "ACTIVITY_LABELS",
    "EPISODE_LABELS",
    "MotionConfig",
    "ObjectShape",
    "SceneObject",
    "ObjectState",
    "ActivitySegment",
    "Contact",
    "MotionSequence",
    "generate_sequence",
    "FINGER_SEGMENT_RADII_M",
    "PALM_HALF_THICKNESS_M",
]

#: Activity labels, in a fixed order (label index = position).
ACTIVITY_LABELS: tuple[str, ...] = (
    "grasp", "release", "pinch", "tool_rotate", "typing", "pointing", "free_motion", "wave",
)
#: Scripted episodes and the labels each produces, in time order. An object that is picked
#: up is also put down, so ``grasp`` and ``pinch`` always come with ``release``.
EPISODE_LABELS: dict[str, tuple[str, ...]] = {
    "pick_and_place": ("grasp", "release"),
    "pinch_and_place": ("pinch", "release"),
    "tool_use": ("grasp", "tool_rotate", "release"),
    "typing": ("typing",),
    "pointing": ("pointing",),
    "free_motion": ("free_motion",),
    "wave": ("wave",),
}


def _finger_skin_radii(geometry: HandGeometry) -> dict[str, tuple[float, float, float]]:
    """Radius of each finger segment (metacarpal/proximal, middle, distal) of the rendered hand."""
    radii, _ = geometry.resolved_radii()
    by_pair = {frozenset(int(i) for i in pair): float(r) for pair, r in zip(geometry.bone_pairs, radii)}
    return {finger: tuple(by_pair[frozenset((chain[k], chain[k + 1]))] for k in range(3))
            for finger, chain in LANDMARKS_OF_FINGER.items()}


#: Skin radius around the bone axis of each finger's 3 segments (reference hand, m) and the
#: palm's half thickness: the renderer's glove (sim/render.py HandGeometry), so that
#: synthesised contacts look like contacts in the images.
FINGER_SEGMENT_RADII_M: dict[str, tuple[float, float, float]] = _finger_skin_radii(HandGeometry())
PALM_HALF_THICKNESS_M: float = HandGeometry().palm_half_thickness
# Where on each segment collisions are tested (fractions from the proximal joint). The
# first segment starts inside the palm (MCP knuckle / thenar), so its base is skipped.
_SEGMENT_SAMPLE_FRACTIONS = ((0.45, 0.75, 1.0), (0.35, 0.7, 1.0), (0.35, 0.7, 1.0))
_FLEX_JOINTS: dict[str, tuple[str, str, str]] = {
    "thumb": ("thumb_cmc_flex", "thumb_mcp_flex", "thumb_ip_flex"),
    **{f: (f"{f}_mcp_flex", f"{f}_pip_flex", f"{f}_dip_flex") for f in FINGER_NAMES[1:]},
}
_PALM_LANDMARKS = (0, 1, 5, 9, 13, 17)

# Spline channels.
_JOINTS = slice(0, NUM_JOINTS)
_WRIST_POSITION = slice(22, 25)
_WRIST_ROTVEC = slice(25, 28)
_HEAD_POSITION = slice(28, 31)
_HEAD_ROTVEC = slice(31, 34)
_NUM_CHANNELS = 34


# ======================================================================================
# Configuration
# ======================================================================================

@dataclass(frozen=True)
class MotionConfig:
    """Motion generator parameters (world frame, SI units)."""

    control_interval_s: float = param(0.03, "spacing of the B-spline control points", range=(0.005, 0.2), unit="s")
    spline_degree: int = param(7, "B-spline degree (odd); 7 makes every trajectory C6", choices=(3, 5, 7))
    evaluation_margin_s: float = param(1.0, "trajectories extend this far beyond [0, duration] (derivative "
                                            "stencils, clock offsets)", range=(0.0, 5.0), unit="s")
    table_height_m: float = param(0.74, "height of the table top", range=(0.3, 1.2), unit="m")
    head_position_m: tuple[float, ...] = param((0.0, 0.0, 1.22), "mean head-frame origin of the seated "
                                                                  "user (world)", unit="m")
    camera_mount_xyz: tuple[float, ...] = param((0.09, 0.0, 0.0), "head -> head_camera translation (same as "
                                                                   "the mount block of config/camera_sim.yaml)",
                                                unit="m")
    camera_mount_rpy: tuple[float, ...] = param((0.0, 0.5236, 0.0), "head -> head_camera URDF roll, pitch, yaw; "
                                                                     "pitch > 0 tilts the camera down", unit="rad")
    hand_scale_range: tuple[float, ...] = param((0.85, 1.15), "hand size drawn per sequence (1 = 18.5 cm hand)")
    speed_range: tuple[float, ...] = param((0.8, 1.25), "motion speed factor drawn per sequence")
    speed_jitter: float = param(0.1, "relative speed variation between episodes", range=(0.0, 0.5))
    head_sway_m: float = param(0.012, "standard deviation of the slow head translation sway", range=(0.0, 0.1),
                               unit="m")
    head_jitter_rad: float = param(0.03, "standard deviation of slow head rotation jitter", range=(0.0, 0.3),
                                   unit="rad")
    gaze_smoothing_s: float = param(0.25, "Gaussian smoothing of the hand point the head looks at",
                                    range=(0.0, 2.0), unit="s")

    def __post_init__(self) -> None:
        validate_params(self)
        for name, size in (("head_position_m", 3), ("camera_mount_xyz", 3), ("camera_mount_rpy", 3),
                           ("hand_scale_range", 2), ("speed_range", 2)):
            value = getattr(self, name)
            if len(value) != size:
                raise ConfigError(f"MotionConfig.{name}", f"expected {size} numbers, got {value!r}")
        for name in ("hand_scale_range", "speed_range"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high:
                raise ConfigError(f"MotionConfig.{name}", f"need 0 < low <= high, got {(low, high)}")

    @property
    def camera_mount(self) -> CameraMount:
        """The head -> camera mount as :class:`avi_ht_ros.common.camera.CameraMount`."""
        return CameraMount(xyz=tuple(self.camera_mount_xyz), rpy=tuple(self.camera_mount_rpy))

    @classmethod
    def with_camera_mount(cls, mount: CameraMount, **changes) -> "MotionConfig":
        """A config using ``mount`` (e.g. ``load_camera_mount(config_path("camera_sim.yaml"))``)."""
        return cls(camera_mount_xyz=tuple(mount.xyz), camera_mount_rpy=tuple(mount.rpy), **changes)


# ======================================================================================
# Scene objects
# ======================================================================================

@dataclass(frozen=True)
class ObjectShape:
    """A primitive in its own frame (origin at its centre).

    ``kind``: ``"sphere"`` (``radius``), ``"cylinder"`` (``radius``, ``half_length`` along
    local z, flat caps) or ``"box"`` (``half_extents`` along local x, y, z). Same
    parametrisation as the renderer's Sphere/Cylinder/Box.
    """

    kind: str
    radius: float = 0.0
    half_length: float = 0.0
    half_extents: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if self.kind not in ("sphere", "cylinder", "box"):
            raise ValueError(f"ObjectShape.kind: {self.kind!r}, expected sphere, cylinder or box")
        positive = {"sphere": (self.radius,), "cylinder": (self.radius, self.half_length),
                    "box": tuple(self.half_extents)}[self.kind]
        if not all(v > 0 for v in positive):
            raise ValueError(f"ObjectShape: {self.kind} needs positive sizes, got {self}")

    def signed_distance(self, points_local: np.ndarray) -> np.ndarray:
        """``[..., 3]`` points in the object frame -> signed distance to the surface (m, < 0 inside)."""
        p = np.asarray(points_local, dtype=float)
        if self.kind == "sphere":
            return np.linalg.norm(p, axis=-1) - self.radius
        if self.kind == "cylinder":
            d = np.stack([np.linalg.norm(p[..., :2], axis=-1) - self.radius,
                          np.abs(p[..., 2]) - self.half_length], axis=-1)
        else:
            d = np.abs(p) - np.asarray(self.half_extents)
        outside = np.linalg.norm(np.maximum(d, 0.0), axis=-1)
        return outside + np.minimum(d.max(axis=-1), 0.0)

    def support_depth(self, rotation: np.ndarray) -> float:
        """How far the lowest point lies below the centre for an object->world ``rotation``."""
        if self.kind == "sphere":
            return self.radius
        if self.kind == "cylinder":
            axis_z = abs(float(rotation[2, 2]))
            return self.radius * math.sqrt(max(0.0, 1.0 - axis_z**2)) + self.half_length * axis_z
        return float(np.abs(rotation[2, :]) @ np.asarray(self.half_extents))


@dataclass(frozen=True)
class SceneObject:
    """An object of the scene: ``name`` (unique), ``category`` (ball, bottle, ...), ``shape``."""

    name: str
    category: str
    shape: ObjectShape


@dataclass(frozen=True)
class ObjectState:
    """An object at one instant: pose in the world and who holds it (``""``, "left", "right")."""

    name: str
    category: str
    shape: ObjectShape
    rotation: np.ndarray
    position: np.ndarray
    held_by: str


@dataclass(frozen=True)
class ActivitySegment:
    """``label`` holds on ``[start, end)`` (s); ``object_name`` is the object involved, if any."""

    label: str
    start: float
    end: float
    object_name: str | None = None


@dataclass(frozen=True)
class Contact:
    """``fingers`` touch ``object_name`` during ``[start, end]`` (the object is held)."""

    object_name: str
    start: float
    end: float
    fingers: tuple[str, ...]


@dataclass(frozen=True)
class _ObjectPhase:
    start: float
    end: float
    held: bool
    rotation: np.ndarray   # static: object -> world; held: object -> wrist
    position: np.ndarray


# ======================================================================================
# The sequence
# ======================================================================================

@dataclass(frozen=True, eq=False)
class MotionSequence:
    """One generated sequence; evaluate it at any times in :attr:`time_range`.

    Attributes:
        duration: nominal length, s (labels/segments cover ``[0, duration]``).
        side: ``"left"`` or ``"right"``.
        scale: hand size (FK ``scale``) of this sequence.
        speed: motion speed factor of this sequence.
        segments: activity segments covering ``[0, duration]`` in time order.
        contacts: grasp contacts (object held, fingers touching it).
        objects: the scene objects (all present for the whole sequence).
        config: the :class:`MotionConfig` used.
        hand_model: the hand model the grasps were synthesised with.
    """

    duration: float
    side: str
    scale: float
    speed: float
    segments: tuple[ActivitySegment, ...]
    contacts: tuple[Contact, ...]
    objects: tuple[SceneObject, ...]
    config: MotionConfig
    hand_model: HandModel = dataclasses.field(repr=False)
    _spline: BSpline = dataclasses.field(repr=False)
    _wrist_reference: np.ndarray = dataclasses.field(repr=False)
    _head_reference: np.ndarray = dataclasses.field(repr=False)
    _object_phases: tuple[tuple[_ObjectPhase, ...], ...] = dataclasses.field(repr=False)

    # ------------------------------------------------------------------ time
    @property
    def time_range(self) -> tuple[float, float]:
        """Times :meth:`evaluate` accepts: ``[-margin, duration + margin]``."""
        margin = self.config.evaluation_margin_s
        return -margin, self.duration + margin

    def _times(self, times) -> np.ndarray:
        times = np.asarray(times, dtype=float)
        low, high = self.time_range
        if times.size and (np.nanmin(times) < low - 1e-9 or np.nanmax(times) > high + 1e-9
                           or not np.all(np.isfinite(times))):
            raise ValueError(f"times must lie in [{low:.3f}, {high:.3f}] s, got "
                             f"[{np.min(times):.3f}, {np.max(times):.3f}]")
        return np.clip(times, low, high)

    # ------------------------------------------------------------------ kinematics
    def evaluate(self, times, order: int = 0) -> dict[str, np.ndarray]:
        """Poses (and exact derivatives) at ``times [T]`` (any shape ``[...]`` works).

        Keys, all in the world frame:

        * order 0: ``joint_angles [...,22]``, ``wrist_rotation [...,3,3]`` (wrist -> world),
          ``wrist_translation [...,3]``, ``head_rotation``, ``head_translation`` (head frame
          -> world), ``camera_rotation``, ``camera_translation`` (head_camera_optical_frame
          -> world);
        * order >= 1 adds ``joint_velocity``, ``wrist_linear_velocity``,
          ``wrist_angular_velocity``, ``head_linear_velocity``, ``head_angular_velocity``;
        * order >= 2 adds ``joint_acceleration``, ``wrist_linear_acceleration``,
          ``wrist_angular_acceleration``, ``head_linear_acceleration``,
          ``head_angular_acceleration``.

        Angular velocities/accelerations are world-frame vectors (``Ṙ Rᵀ = [ω]×``).
        """
        if order not in (0, 1, 2):
            raise ValueError(f"order must be 0, 1 or 2, got {order}")
        times = self._times(times)
        shape = times.shape
        flat = times.reshape(-1)
        values = self._spline(flat)
        wrist_rotation = self._wrist_reference @ Rotation.from_rotvec(values[:, _WRIST_ROTVEC]).as_matrix()
        head_rotation = self._head_reference @ Rotation.from_rotvec(values[:, _HEAD_ROTVEC]).as_matrix()
        head_translation = values[:, _HEAD_POSITION]
        mount = self.config.camera_mount.parent_from_optical()
        out = {
            "joint_angles": values[:, _JOINTS],
            "wrist_rotation": wrist_rotation,
            "wrist_translation": values[:, _WRIST_POSITION],
            "head_rotation": head_rotation,
            "head_translation": head_translation,
            "camera_rotation": head_rotation @ mount[:3, :3],
            "camera_translation": head_translation + head_rotation @ mount[:3, 3],
        }
        if order >= 1:
            first = self._spline_derivative(1)(flat)
            second = self._spline_derivative(2)(flat) if order >= 2 else None
            out["joint_velocity"] = first[:, _JOINTS]
            out["wrist_linear_velocity"] = first[:, _WRIST_POSITION]
            out["head_linear_velocity"] = first[:, _HEAD_POSITION]
            for name, rotation, channels in (("wrist", wrist_rotation, _WRIST_ROTVEC),
                                             ("head", head_rotation, _HEAD_ROTVEC)):
                if second is None:
                    omega = rotvec_curve_body_rates(values[:, channels], first[:, channels])
                else:
                    omega, alpha = rotvec_curve_body_rates(values[:, channels], first[:, channels],
                                                           second[:, channels])
                    out[f"{name}_angular_acceleration"] = (rotation @ alpha[:, :, None])[:, :, 0]
                out[f"{name}_angular_velocity"] = (rotation @ omega[:, :, None])[:, :, 0]
            if second is not None:
                out["joint_acceleration"] = second[:, _JOINTS]
                out["wrist_linear_acceleration"] = second[:, _WRIST_POSITION]
                out["head_linear_acceleration"] = second[:, _HEAD_POSITION]
        return {key: value.reshape(shape + value.shape[1:]) for key, value in out.items()}

    def _spline_derivative(self, order: int) -> BSpline:
        cache = self.__dict__.setdefault("_derivative_cache", {})
        if order not in cache:
            cache[order] = self._spline.derivative(order)
        return cache[order]

    def forward_kinematics(self, times) -> ForwardKinematicsResult:
        """Hand landmarks and bone frames in the world at ``times``."""
        pose = self.evaluate(times)
        return forward_kinematics_numpy(pose["joint_angles"], pose["wrist_rotation"], pose["wrist_translation"],
                                        scale=self.scale, side=self.side, model=self.hand_model)

    def sensor_poses(self, times, glove) -> tuple[np.ndarray, np.ndarray]:
        """World rotations ``[T,N,3,3]`` and positions ``[T,N,3]`` of a glove's IMUs.

        ``functools.partial(sequence.sensor_poses, glove=glove)`` is a pose callable for
        :func:`avi_ht_ros.sim.imu_sim.ideal_imu_signals`.
        """
        return glove.sensor_poses(self.forward_kinematics(times))

    # ------------------------------------------------------------------ labels
    def label_indices_at(self, times) -> np.ndarray:
        """Index into ``ACTIVITY_LABELS`` of the activity at each time (edges clamp)."""
        times = np.asarray(times, dtype=float)
        starts = np.array([segment.start for segment in self.segments])
        which = np.clip(np.searchsorted(starts, times, side="right") - 1, 0, len(self.segments) - 1)
        label_index = np.array([ACTIVITY_LABELS.index(segment.label) for segment in self.segments])
        return label_index[which]

    def labels_at(self, times) -> np.ndarray:
        """Activity label (str) at each time."""
        return np.asarray(ACTIVITY_LABELS, dtype=object)[self.label_indices_at(times)]

    # ------------------------------------------------------------------ objects
    def object_poses(self, times) -> dict[str, np.ndarray]:
        """``rotation [T,M,3,3]``, ``position [T,M,3]`` (object -> world) and ``held [T,M]``
        (bool, held by this sequence's hand) of every object in :attr:`objects` order."""
        times = self._times(np.atleast_1d(times))
        count = len(self.objects)
        rotations = np.zeros((times.size, count, 3, 3))
        positions = np.zeros((times.size, count, 3))
        held = np.zeros((times.size, count), dtype=bool)
        needs_wrist = any(phase.held for phases in self._object_phases for phase in phases)
        wrist = self.evaluate(times) if needs_wrist else None
        for m, phases in enumerate(self._object_phases):
            for phase in phases:
                inside = (times >= phase.start) & (times < phase.end)
                if not np.any(inside):
                    continue
                if phase.held:
                    wrist_rotation = wrist["wrist_rotation"][inside]
                    rotations[inside, m] = wrist_rotation @ phase.rotation
                    positions[inside, m] = wrist["wrist_translation"][inside] + wrist_rotation @ phase.position
                    held[inside, m] = True
                else:
                    rotations[inside, m] = phase.rotation
                    positions[inside, m] = phase.position
        return {"rotation": rotations, "position": positions, "held": held}

    def scene_at(self, time: float) -> list[ObjectState]:
        """All objects at one instant."""
        poses = self.object_poses(np.array([time]))
        return [ObjectState(obj.name, obj.category, obj.shape, poses["rotation"][0, m], poses["position"][0, m],
                            self.side if poses["held"][0, m] else "")
                for m, obj in enumerate(self.objects)]

    def object_index(self, name: str) -> int:
        for m, obj in enumerate(self.objects):
            if obj.name == name:
                return m
        raise KeyError(f"no object {name!r}; objects: {[o.name for o in self.objects]}")


# ======================================================================================
# Small geometry helpers
# ======================================================================================

def _minimum_jerk(s: np.ndarray) -> np.ndarray:
    s = np.clip(s, 0.0, 1.0)
    return s**3 * (10.0 - 15.0 * s + 6.0 * s * s)


def _rotation_zyx(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """R_z(yaw) R_y(pitch) R_x(roll) (URDF rpy order)."""
    return Rotation.from_euler("ZYX", [yaw, pitch, roll]).as_matrix()


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation taking direction ``a`` to direction ``b``."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    axis = np.cross(a, b)
    sin, cos = np.linalg.norm(axis), float(a @ b)
    if sin < 1e-12:
        if cos > 0:
            return np.eye(3)
        perpendicular = np.cross(a, [1.0, 0.0, 0.0])
        if np.linalg.norm(perpendicular) < 1e-6:
            perpendicular = np.cross(a, [0.0, 1.0, 0.0])
        return Rotation.from_rotvec(math.pi * perpendicular / np.linalg.norm(perpendicular)).as_matrix()
    return Rotation.from_rotvec(axis / sin * math.atan2(sin, cos)).as_matrix()


def _frame_from_x_and_up(x_axis: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Rotation with first column along ``x_axis`` and third as close to ``up`` as possible."""
    x = x_axis / np.linalg.norm(x_axis)
    z = up - (up @ x) * x
    if np.linalg.norm(z) < 1e-6:
        z = np.cross(x, [0.0, 1.0, 0.0])
    z = z / np.linalg.norm(z)
    return np.column_stack([x, np.cross(z, x), z])


def _smooth_noise(rng: np.random.Generator, times: np.ndarray, sigma_s: float, amplitude: float,
                  channels: int) -> np.ndarray:
    """Zero-mean Gaussian-smoothed noise ``[T, channels]`` with std ~ ``amplitude``."""
    if amplitude == 0.0 or times.size < 2:
        return np.zeros((times.size, channels))
    step = float(times[1] - times[0])
    white = rng.standard_normal((times.size, channels))
    smooth = gaussian_filter1d(white, sigma=max(sigma_s / step, 1e-3), axis=0, mode="reflect")
    std = smooth.std(axis=0)
    return amplitude * (smooth - smooth.mean(axis=0)) / np.where(std > 0, std, 1.0)


def _finger_sample_points(landmarks: np.ndarray, finger: str, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Collision sample points ``[..., 9, 3]`` of a finger and their skin radii ``[9]``
    (segment of each point: ``_SEGMENT_OF_SAMPLE``)."""
    chain = LANDMARKS_OF_FINGER[finger]
    points, radii = [], []
    for segment, fractions in enumerate(_SEGMENT_SAMPLE_FRACTIONS):
        start, end = landmarks[..., chain[segment], :], landmarks[..., chain[segment + 1], :]
        for fraction in fractions:
            points.append(start + fraction * (end - start))
            radii.append(FINGER_SEGMENT_RADII_M[finger][segment] * scale)
    return np.stack(points, axis=-2), np.array(radii)


_SEGMENT_OF_SAMPLE = np.repeat(np.arange(3), [len(f) for f in _SEGMENT_SAMPLE_FRACTIONS])


# ======================================================================================
# Grasp synthesis (right-hand wrist frame)
# ======================================================================================

Obstacle = Callable[[np.ndarray], np.ndarray]   # points [..., 3] (wrist frame) -> signed distance [...]


@dataclass(frozen=True)
class _Grasp:
    object_rotation: np.ndarray     # object -> wrist
    object_position: np.ndarray     # object centre in the wrist frame
    open_angles: np.ndarray         # pre-shape before closing
    closed_angles: np.ndarray
    contact_fingers: tuple[str, ...]


class _GraspSynthesizer:
    """Closes fingers onto obstacles with batched FK (hand-local, right hand)."""

    scan_steps = 32
    bisection_steps = 10

    def __init__(self, model: HandModel, scale: float) -> None:
        self.model = model
        self.scale = scale

    def local_landmarks(self, angles: np.ndarray) -> np.ndarray:
        angles = np.asarray(angles, dtype=float)
        return forward_kinematics_numpy(angles, np.eye(3), np.zeros(3), scale=self.scale,
                                        model=self.model).landmarks

    def clearance(self, landmarks: np.ndarray, finger: str, obstacles: Sequence[Obstacle]):
        """Skin clearance ``[..., 9]`` of a finger's sample points to the nearest obstacle."""
        points, radii = _finger_sample_points(landmarks, finger, self.scale)
        distance = np.min(np.stack([obstacle(points) for obstacle in obstacles]), axis=0)
        return distance - radii

    def close(self, start: np.ndarray, target: np.ndarray, fingers: Iterable[str],
              obstacles: Sequence[Obstacle]) -> tuple[np.ndarray, dict[str, int | None]]:
        """Close ``fingers`` from ``start`` towards ``target`` angles until they touch.

        Stage 1 moves all joints of a finger proportionally (the thumb also its CMC/MCP
        abduction); while the touching segment is not the distal one, the joints distal to
        it keep curling. Returns the angles and, per finger, the segment (0..2) that
        touches, or None if the finger reached ``target`` without touching.
        """
        angles = np.array(start, dtype=float)
        target = self.model.clip_joint_angles(target)
        touching: dict[str, int | None] = {}
        moving: dict[str, list[int]] = {}
        for finger in fingers:
            joints = [JOINT_INDEX[name] for name in _FLEX_JOINTS[finger]]
            if finger == "thumb":
                joints += [JOINT_INDEX["thumb_cmc_abd"], JOINT_INDEX["thumb_mcp_abd"]]
            else:
                joints += [JOINT_INDEX[f"{finger}_mcp_abd"]]
            moving[finger] = joints
        for _stage in range(3):
            if not moving:
                break
            finger_list = list(moving)
            begin = angles.copy()
            steps = np.linspace(0.0, 1.0, self.scan_steps + 1)

            def pose_at(fractions: np.ndarray) -> np.ndarray:
                # fractions [K, F] -> angles [K, 22]
                poses = np.repeat(begin[None], fractions.shape[0], axis=0)
                for f_index, finger in enumerate(finger_list):
                    joints = moving[finger]
                    poses[:, joints] = begin[joints] + fractions[:, f_index, None] * (target[joints] - begin[joints])
                return poses

            scan = pose_at(np.repeat(steps[:, None], len(finger_list), axis=1))
            landmarks = self.local_landmarks(scan)
            low = np.zeros(len(finger_list))
            high = np.ones(len(finger_list))
            hit = np.zeros(len(finger_list), dtype=bool)
            for f_index, finger in enumerate(finger_list):
                clear = self.clearance(landmarks, finger, obstacles).min(axis=-1)
                inside = np.flatnonzero(clear <= 0.0)
                if inside.size:
                    first = inside[0]
                    hit[f_index] = True
                    low[f_index] = steps[max(first - 1, 0)]
                    high[f_index] = steps[first]
            for _ in range(self.bisection_steps):
                middle = 0.5 * (low + high)
                landmarks = self.local_landmarks(pose_at(middle[None]))[0]
                for f_index, finger in enumerate(finger_list):
                    if not hit[f_index]:
                        continue
                    if self.clearance(landmarks, finger, obstacles).min() <= 0.0:
                        high[f_index] = middle[f_index]
                    else:
                        low[f_index] = middle[f_index]
            final = np.where(hit, low, 1.0)
            angles = pose_at(final[None])[0]
            touch_landmarks = self.local_landmarks(pose_at(np.where(hit, high, 1.0)[None]))[0]
            next_moving: dict[str, list[int]] = {}
            for f_index, finger in enumerate(finger_list):
                if not hit[f_index]:
                    touching.setdefault(finger, None)
                    continue
                clear = self.clearance(touch_landmarks, finger, obstacles)
                segment = int(_SEGMENT_OF_SAMPLE[int(np.argmin(clear))])
                touching[finger] = segment
                if segment < 2:
                    distal = [JOINT_INDEX[name] for name in _FLEX_JOINTS[finger][segment + 1:]]
                    if np.any(np.abs(target[distal] - angles[distal]) > 1e-3):
                        next_moving[finger] = distal
            moving = next_moving
        return angles, touching

    def touching_object(self, angles: np.ndarray, fingers: Iterable[str], obstacle: Obstacle,
                        tolerance: float = 0.002) -> tuple[str, ...]:
        """Fingers whose distal phalanx touches ``obstacle`` (skin within ``tolerance``)."""
        landmarks = self.local_landmarks(angles)
        distal = _SEGMENT_OF_SAMPLE == 2
        return tuple(f for f in fingers if self.clearance(landmarks, f, [obstacle])[distal].min() <= tolerance)


def _object_obstacle(shape: ObjectShape, rotation: np.ndarray, position: np.ndarray) -> Obstacle:
    return lambda points: shape.signed_distance((points - position) @ rotation)


def _plane_obstacle(normal: np.ndarray, point: np.ndarray) -> Obstacle:
    return lambda points: (points - point) @ normal


def _angles(model: HandModel, values: dict[str, float]) -> np.ndarray:
    angles = np.zeros(NUM_JOINTS)
    for name, value in values.items():
        angles[JOINT_INDEX[name]] = value
    return model.clip_joint_angles(angles)


def _finger_curl(model: HandModel, curls: dict[str, float], abductions: dict[str, float] | None = None,
                 thumb: dict[str, float] | None = None, pinky_cmc: float = 0.0) -> np.ndarray:
    """Angles from per-finger curl in [0, 1] (0 straight, 1 fist), abductions and thumb angles."""
    values: dict[str, float] = {"pinky_cmc_flex": pinky_cmc}
    for finger, curl in curls.items():
        values[f"{finger}_mcp_flex"] = 1.35 * curl
        values[f"{finger}_pip_flex"] = 1.55 * curl
        values[f"{finger}_dip_flex"] = 0.95 * curl
    for finger, abduction in (abductions or {}).items():
        values[f"{finger}_mcp_abd"] = abduction
    for joint, value in (thumb or {}).items():
        values[f"thumb_{joint}"] = value
    return _angles(model, values)


_POWER_OPEN_THUMB = {"cmc_abd": 0.15, "cmc_flex": -0.4, "mcp_flex": 0.0, "mcp_abd": 0.0, "ip_flex": 0.05}
_POWER_CLOSED_THUMB = {"cmc_abd": 0.25, "cmc_flex": 0.78, "mcp_flex": 1.0, "mcp_abd": 0.1, "ip_flex": 1.3}


def _power_grasp(synth: _GraspSynthesizer, shape: ObjectShape, axial_offset: float,
                 palm_half_thickness: float, distal_offset: float = 0.064) -> _Grasp:
    """Object against the palm (centred ``distal_offset`` from the wrist on the reference
    hand: 0.064 m is mid-palm, 0.09 m under the knuckles), fingers and thumb wrapped around it."""
    model, scale = synth.model, synth.scale
    gap = palm_half_thickness * scale + 0.002
    palm_centre = np.array([distal_offset, -0.004, 0.0]) * scale
    if shape.kind == "sphere":
        rotation = np.eye(3)
        depth = shape.radius
        spread = {"index": 0.18, "middle": 0.05, "ring": 0.12, "pinky": 0.3}
    elif shape.kind == "cylinder":
        # Oblique palmar grasp: the axis (local z) runs across the palm from the hypothenar
        # towards the index base (the hand's -y turned 20 deg towards the fingers).
        rotation = _rotation_zyx(-0.35) @ np.column_stack([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
        depth = shape.radius
        spread = {"index": 0.02, "middle": 0.0, "ring": 0.02, "pinky": 0.05}
    else:
        # Longest box axis across the palm (hand y), shortest against the palm (hand z).
        shortest, middle, longest = np.argsort(shape.half_extents)
        rotation = np.zeros((3, 3))             # columns: object axes in the wrist frame
        rotation[:, middle] = (1.0, 0.0, 0.0)
        rotation[:, longest] = (0.0, 1.0, 0.0)
        rotation[:, shortest] = (0.0, 0.0, 1.0)
        if np.linalg.det(rotation) < 0:
            rotation[:, middle] *= -1.0
        depth = shape.half_extents[shortest]
        spread = {"index": 0.03, "middle": 0.0, "ring": 0.03, "pinky": 0.06}
    open_angles = _finger_curl(model, {f: -0.05 for f in FINGER_NAMES[1:]}, spread, _POWER_OPEN_THUMB)
    # Against the palm, then lowered until the open hand (knuckles, fingers, thumb
    # phalanges) is clear; the soft thenar (thumb metacarpal) may press against the object.
    open_landmarks = synth.local_landmarks(open_angles)
    palm_points = open_landmarks[[0, 5, 9, 13, 17]]
    thumb_phalanges = slice(len(_SEGMENT_SAMPLE_FRACTIONS[0]), None)
    position = palm_centre + np.array([0.0, axial_offset, -(gap + depth)])
    for _ in range(60):
        obstacle = _object_obstacle(shape, rotation, position)
        clearance = float((obstacle(palm_points) - palm_half_thickness * scale).min())
        for finger in FINGER_NAMES:
            finger_clearance = synth.clearance(open_landmarks, finger, [obstacle])
            if finger == "thumb":
                finger_clearance = finger_clearance[thumb_phalanges]
            clearance = min(clearance, float(finger_clearance.min()))
        if clearance >= 0.001:
            break
        position = position - np.array([0.0, 0.0, max(0.001, 0.001 - clearance)])
    obstacle = _object_obstacle(shape, rotation, position)
    closed_target = _finger_curl(model, {f: 1.0 for f in FINGER_NAMES[1:]}, spread, _POWER_CLOSED_THUMB,
                                 pinky_cmc=0.15)
    closed, _ = synth.close(open_angles, closed_target, FINGER_NAMES, [obstacle])
    contacts = synth.touching_object(closed, FINGER_NAMES, obstacle)
    return _Grasp(rotation, position, open_angles, closed, contacts)


_PINCH_OTHERS = {"middle": 0.9, "ring": 0.95, "pinky": 0.95}
_PINCH_THUMB_OPEN = {"cmc_flex": -0.2, "mcp_flex": 0.0, "mcp_abd": 0.0, "ip_flex": 0.0}
_PINCH_THUMB_CLOSED = {"cmc_flex": 0.78, "mcp_flex": 1.0, "mcp_abd": 0.05, "ip_flex": 1.2}


def _pinch_grasp(synth: _GraspSynthesizer, shape: ObjectShape) -> _Grasp:
    """Object between the thumb and index fingertip pads."""
    model, scale = synth.model, synth.scale
    if shape.kind == "sphere":
        half_width = shape.radius
    elif shape.kind == "cylinder":
        half_width = shape.radius
    else:
        half_width = float(min(shape.half_extents))
    radius_index = FINGER_SEGMENT_RADII_M["index"][2] * scale
    radius_thumb = FINGER_SEGMENT_RADII_M["thumb"][2] * scale
    wanted = 2.0 * half_width + radius_index + radius_thumb
    thumb_joints = [JOINT_INDEX[f"thumb_{j}"] for j in ("cmc_abd", "cmc_flex", "mcp_flex", "mcp_abd", "ip_flex")]
    steps = np.linspace(0.0, 1.0, 81)
    best = None
    # Index curl and thumb opposition, most natural first; the thumb closes until the two
    # pads are one object width apart.
    for index_curl, thumb_abduction in [(c, a) for c in (0.45, 0.5, 0.4, 0.55, 0.35, 0.6, 0.3, 0.65)
                                        for a in (0.5, 0.35, 0.65, 0.2)]:
        open_thumb = dict(_PINCH_THUMB_OPEN, cmc_abd=thumb_abduction)
        closed_thumb = dict(_PINCH_THUMB_CLOSED, cmc_abd=thumb_abduction)
        base = _finger_curl(model, {"index": index_curl, **_PINCH_OTHERS}, None, open_thumb, pinky_cmc=0.1)
        closed = _finger_curl(model, {"index": index_curl, **_PINCH_OTHERS}, None, closed_thumb, pinky_cmc=0.1)
        poses = np.repeat(base[None], steps.size, axis=0)
        poses[:, thumb_joints] = base[thumb_joints] + steps[:, None] * (closed[thumb_joints] - base[thumb_joints])
        landmarks = synth.local_landmarks(poses)
        gap = np.linalg.norm(landmarks[:, 4] - landmarks[:, 8], axis=-1)
        crossing = np.flatnonzero((gap[:-1] > wanted) & (gap[1:] <= wanted))
        if crossing.size:
            k = crossing[0]
            fraction = (gap[k] - wanted) / (gap[k] - gap[k + 1])
            best = (base, poses[k] + fraction * (poses[k + 1] - poses[k]))
            break
    if best is None:
        raise RuntimeError(f"pinch synthesis failed for {shape}")  # cannot happen for pinchable sizes
    open_angles, pose = best
    landmarks = synth.local_landmarks(pose)
    index_tip, thumb_tip = landmarks[8], landmarks[4]
    direction = (thumb_tip - index_tip) / np.linalg.norm(thumb_tip - index_tip)
    centre = index_tip + direction * (radius_index + half_width)
    # Object frame: x along the pinch direction, z as horizontal as possible for a palm-down
    # hand (perpendicular to the pinch direction and to the hand's z).
    z_axis = np.cross(direction, [0.0, 0.0, 1.0])
    z_axis /= np.linalg.norm(z_axis)
    if shape.kind == "box":
        # A box is pinched across its thinnest axis, with another axis along the hand's z.
        z_axis = np.array([0.0, 0.0, 1.0]) - direction[2] * direction
        z_axis /= np.linalg.norm(z_axis)
        shortest = int(np.argmin(shape.half_extents))
        rotation = np.zeros((3, 3))
        rotation[:, shortest] = direction
        rotation[:, (shortest + 2) % 3] = z_axis
        rotation[:, (shortest + 1) % 3] = np.cross(z_axis, direction)
    else:
        rotation = np.column_stack([direction, np.cross(z_axis, direction), z_axis])
    obstacle = _object_obstacle(shape, rotation, centre)
    contacts = synth.touching_object(pose, ("thumb", "index"), obstacle, tolerance=0.003)
    return _Grasp(rotation, centre, open_angles, pose, contacts)


# ======================================================================================
# Planning
# ======================================================================================

@dataclass
class _Key:
    time: float
    wrist_rotation: np.ndarray
    wrist_position: np.ndarray
    joint_angles: np.ndarray


@dataclass
class _Attachment:
    object_index: int
    attach_time: float
    detach_time: float
    grasp: _Grasp


@dataclass
class _PlacedObject:
    obj: SceneObject
    rest_rotation: np.ndarray     # where it rests now (updated when put down)
    rest_position: np.ndarray
    spot: int
    constraint: str   # how it rests: "any", "axis_vertical", "axis_horizontal", "flat", "upright"
    initial_rotation: np.ndarray = dataclasses.field(default=None)
    initial_position: np.ndarray = dataclasses.field(default=None)

    def __post_init__(self) -> None:
        self.initial_rotation = self.rest_rotation.copy()
        self.initial_position = self.rest_position.copy()


# Table spots (right hand; world x, y) where objects rest, and the keypad position.
_SPOTS = np.array([[x, y] for x in (0.38, 0.49) for y in (-0.33, -0.20, -0.07, 0.05)])
_KEYPAD_SPOT = np.array([0.29, -0.13])
_SHOULDER = np.array([-0.04, -0.19, 1.0])
_REST_POSITION = np.array([0.27, -0.17, 0.86])

_OBJECT_CATALOGUE: dict[str, tuple[str, ...]] = {
    "pick_and_place": ("ball", "bottle", "carton"),
    "pinch_and_place": ("marble", "pen", "die"),
    "tool_use": ("screwdriver",),
    "typing": ("keypad",),
}


def _draw_object(category: str, rng: np.random.Generator, name: str) -> tuple[SceneObject, str]:
    u = rng.uniform
    if category == "ball":
        shape, constraint = ObjectShape("sphere", radius=u(0.032, 0.042)), "any"
    elif category == "bottle":
        shape, constraint = ObjectShape("cylinder", radius=u(0.028, 0.036), half_length=u(0.085, 0.11)), \
            "axis_vertical"
    elif category == "carton":   # a juice carton standing upright (longest axis, local y, vertical)
        shape, constraint = ObjectShape("box", half_extents=(u(0.026, 0.034), u(0.06, 0.08), u(0.02, 0.026))), \
            "upright"
    elif category == "marble":
        shape, constraint = ObjectShape("sphere", radius=u(0.010, 0.014)), "any"
    elif category == "pen":
        shape, constraint = ObjectShape("cylinder", radius=u(0.0045, 0.0055), half_length=u(0.065, 0.075)), \
            "axis_horizontal"
    elif category == "die":
        side = u(0.008, 0.011)
        shape, constraint = ObjectShape("box", half_extents=(side, side, side)), "flat"
    elif category == "screwdriver":
        # Standing handle-up in a tool rack (a thin handle lying flat cannot be power-grasped
        # without sliding the fingers under it).
        shape, constraint = ObjectShape("cylinder", radius=u(0.015, 0.018), half_length=u(0.055, 0.07)), \
            "axis_vertical"
    elif category == "keypad":
        shape, constraint = ObjectShape("box", half_extents=(0.05, 0.085, 0.01)), "flat"
    else:
        raise ValueError(f"unknown object category {category!r}")
    return SceneObject(name, category, shape), constraint


class _Planner:
    """Accumulates keyframes, labels, attachments for one (right-hand) sequence."""

    def __init__(self, config: MotionConfig, rng: np.random.Generator, model: HandModel, scale: float,
                 speed: float, duration: float) -> None:
        self.config, self.rng, self.model, self.scale = config, rng, model, scale
        self.speed = speed
        self.duration = duration
        self.synth = _GraspSynthesizer(model, scale)
        self.power_grasp_cache: dict[tuple, _Grasp] = {}
        self.exact_margin = (config.spline_degree + 1) / 2.0 * config.control_interval_s
        self.keys: list[_Key] = []
        self.labels: list[tuple[str, float, str | None]] = []
        self.attachments: list[_Attachment] = []
        self.objects: list[_PlacedObject] = []
        self.episode_speed = speed
        rest_angles = self.relaxed_angles()
        rest_rotation = _rotation_zyx(0.35, 0.15, -0.35)
        start = -config.evaluation_margin_s
        self.keys.append(_Key(start, rest_rotation, _REST_POSITION.copy(), rest_angles))
        self.keys.append(_Key(0.0, rest_rotation, _REST_POSITION.copy(), rest_angles))

    # ---------------------------------------------------------------- primitives
    @property
    def now(self) -> float:
        return self.keys[-1].time

    @property
    def last(self) -> _Key:
        return self.keys[-1]

    def seconds(self, nominal: float) -> float:
        """A scripted duration at this episode's speed."""
        return nominal / self.episode_speed

    def hold_seconds(self, nominal: float) -> float:
        """A hold long enough for the spline to be exactly still in its middle."""
        return max(self.seconds(nominal), 2.0 * self.exact_margin + 0.04)

    def move(self, duration: float, rotation=None, position=None, angles=None) -> None:
        last = self.last
        self.keys.append(_Key(
            last.time + max(duration, 1e-3),
            last.wrist_rotation if rotation is None else np.asarray(rotation, dtype=float),
            last.wrist_position if position is None else np.asarray(position, dtype=float),
            last.joint_angles if angles is None else self.model.clip_joint_angles(angles),
        ))

    def hold(self, duration: float) -> None:
        self.move(duration)

    def reach_seconds(self, position: np.ndarray, rotation: np.ndarray) -> float:
        distance = float(np.linalg.norm(position - self.last.wrist_position))
        angle = float(np.linalg.norm(Rotation.from_matrix(self.last.wrist_rotation.T @ rotation).as_rotvec()))
        return self.seconds(0.45 + 1.1 * distance + 0.18 * angle)

    def label(self, label: str, object_name: str | None = None) -> None:
        assert label in ACTIVITY_LABELS
        self.labels.append((label, self.now, object_name))

    # ---------------------------------------------------------------- postures
    def relaxed_angles(self) -> np.ndarray:
        rng = self.rng
        curls = {f: 0.22 + rng.uniform(-0.06, 0.06) + 0.04 * k for k, f in enumerate(FINGER_NAMES[1:])}
        return _finger_curl(self.model, curls, {f: rng.uniform(0.0, 0.08) for f in FINGER_NAMES[1:]},
                            {"cmc_abd": 0.25, "cmc_flex": 0.15, "mcp_flex": 0.2, "ip_flex": 0.2},
                            pinky_cmc=0.05)

    def natural_yaw(self, target_xy: np.ndarray) -> float:
        """Hand heading when working at ``target_xy``: forearm from the shoulder, turned inwards."""
        direction = target_xy - _SHOULDER[:2]
        return float(math.atan2(direction[1], direction[0])) + self.rng.uniform(0.05, 0.3)

    # ---------------------------------------------------------------- objects
    def create_objects(self, episodes: Iterable[str]) -> None:
        """Put the objects the episodes need on the table (present from the start)."""
        for episode in episodes:
            categories = _OBJECT_CATALOGUE.get(episode)
            if not categories:
                continue
            count = 1 if len(categories) == 1 else int(self.rng.integers(1, 3))
            for category in self.rng.choice(categories, size=count, replace=False):
                self.add_object(str(category))

    def add_object(self, category: str) -> _PlacedObject:
        name = f"{category}_{sum(o.obj.category == category for o in self.objects)}"
        obj, constraint = _draw_object(category, self.rng, name)
        if category == "keypad":
            spot, xy = -1, _KEYPAD_SPOT + self.rng.uniform(-0.015, 0.015, 2)
        else:
            spot = self.free_spot()
            xy = _SPOTS[spot] + self.rng.uniform(-0.015, 0.015, 2)
        rotation = self.resting_rotation(constraint)
        height = self.config.table_height_m + obj.shape.support_depth(rotation)
        placed = _PlacedObject(obj, rotation, np.array([xy[0], xy[1], height]), spot, constraint)
        self.objects.append(placed)
        return placed

    def object_for(self, episode: str) -> _PlacedObject:
        """One of the table's objects suited to ``episode`` (see :meth:`create_objects`)."""
        categories = _OBJECT_CATALOGUE[episode]
        candidates = [o for o in self.objects if o.obj.category in categories]
        return candidates[int(self.rng.integers(len(candidates)))]

    def resting_rotation(self, constraint: str) -> np.ndarray:
        """A resting orientation whose long axis lies roughly across the user's reach
        (world y), so a palm-down hand grasps it naturally."""
        rng = self.rng
        if constraint == "any":
            return Rotation.random(random_state=int(rng.integers(1 << 31))).as_matrix()
        if constraint == "axis_vertical":
            return _rotation_zyx(rng.uniform(-math.pi, math.pi))
        if constraint == "axis_horizontal":   # local z -> along world y (lying)
            return _rotation_zyx(rng.uniform(-0.5, 0.5)) @ _rotation_zyx(0.0, 0.0, math.pi / 2)
        if constraint == "upright":           # local y -> world z
            return _rotation_zyx(rng.uniform(-math.pi, math.pi)) @ _rotation_zyx(0.0, 0.0, math.pi / 2)
        return _rotation_zyx(rng.uniform(-0.5, 0.5) + (math.pi if rng.random() < 0.5 else 0.0))

    def free_spot(self, exclude: int | None = None) -> int:
        taken = {o.spot for o in self.objects}
        free = [s for s in range(len(_SPOTS)) if s not in taken and s != exclude]
        if not free:
            free = [s for s in range(len(_SPOTS)) if s != exclude]
        return int(free[int(self.rng.integers(len(free)))])

    # ---------------------------------------------------------------- grasp placement
    def wrist_options(self, shape: ObjectShape, grasp: _Grasp, object_rotation: np.ndarray,
                      natural: np.ndarray) -> list[np.ndarray]:
        """Wrist rotations realising ``grasp`` on an object resting at ``object_rotation``.

        The grasp only fixes the object up to its symmetries: any rotation for a sphere,
        spin about the axis (and flipping it) for a cylinder, half turns for a box.
        """
        if shape.kind == "sphere":
            return [natural]
        if shape.kind == "cylinder":
            axis_in_hand = grasp.object_rotation[:, 2]
            axis = object_rotation[:, 2]
            return [_rotation_between(natural @ axis_in_hand, sign * axis) @ natural for sign in (1.0, -1.0)]
        flips = [np.eye(3), np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]), np.diag([-1.0, -1.0, 1.0])]
        return [object_rotation @ flip @ grasp.object_rotation.T for flip in flips]

    def place_grasp(self, placed: _PlacedObject, grasp_kind: str) -> tuple[_Grasp, np.ndarray, np.ndarray]:
        """A grasp of the object where it rests, and the wrist pose (rotation, position).

        The object is not moved. Power grasps try a few object positions along the palm
        (mid-palm to under the knuckles); for each, the most natural wrist orientation
        (among natural poses and the object's symmetries) whose open hand clears the table
        is chosen, the fingers close onto object and table, and the grasp touching the
        object with the most fingers (thumb counting double) wins.
        """
        shape = placed.obj.shape
        yaw = self.natural_yaw(placed.rest_position[:2])
        standing = placed.constraint in ("axis_vertical", "upright")
        if standing:
            # side grasp: thumb up, palm towards the object
            naturals = [_rotation_zyx(yaw + dy, 0.0, math.pi / 2 + dr) for dy in (0.0, 0.3, -0.3) for dr in (0.0, -0.25)]
        else:
            pitches = (0.45, 0.25, 0.7, 0.95, 1.2, 1.4) if grasp_kind == "pinch" else (0.35, 0.15, 0.6, 0.85)
            rolls = (-0.15, 0.1, -0.45, -0.8, -1.1) if grasp_kind == "pinch" else (-0.15, 0.1, -0.45)
            naturals = [_rotation_zyx(yaw + dy, pitch, roll) for pitch in pitches for roll in rolls for dy in (0.0, 0.3)]
        if grasp_kind == "pinch":
            grasp = _pinch_grasp(self.synth, shape)
            wrist_rotation, wrist_position, grasp = self.orient_grasp(placed, grasp, naturals, allow_lift=False)[0]
            object_obstacle = _object_obstacle(shape, grasp.object_rotation, grasp.object_position)
            contacts = self.synth.touching_object(grasp.closed_angles, ("thumb", "index"), object_obstacle,
                                                  tolerance=0.003)
            return dataclasses.replace(grasp, contact_fingers=contacts), wrist_rotation, wrist_position
        axial = 0.0
        if standing:
            # grasp a standing bottle or carton around its upper middle, pinky side down
            half_height = shape.half_length if shape.kind == "cylinder" else max(shape.half_extents)
            axial = -min(0.35 * half_height, 0.03)
        best_score, best = None, None
        for distal_offset in (0.064, 0.08, 0.095, 0.05):
            key = (shape, axial, distal_offset)
            if key not in self.power_grasp_cache:
                self.power_grasp_cache[key] = _power_grasp(self.synth, shape, axial,
                                                           PALM_HALF_THICKNESS_M, distal_offset)
            grasp = self.power_grasp_cache[key]
            for rank, (wrist_rotation, wrist_position, oriented) in enumerate(
                    self.orient_grasp(placed, grasp, naturals, allow_lift=True, count=3)):
                closed = self.close_on_table(oriented, shape, wrist_rotation, wrist_position)
                score = len(closed.contact_fingers) + ("thumb" in closed.contact_fingers) - 0.1 * rank
                if best_score is None or score > best_score:
                    best_score, best = score, (closed, wrist_rotation, wrist_position)
                if score >= 4:   # e.g. thumb and two fingers, or four fingers
                    return best
        return best

    def orient_grasp(self, placed: _PlacedObject, grasp: _Grasp, naturals: Sequence[np.ndarray],
                     allow_lift: bool, count: int = 1) -> list[tuple[np.ndarray, np.ndarray, _Grasp]]:
        """The ``count`` best distinct wrist poses realising ``grasp`` on the resting
        object, most natural first.

        With ``allow_lift`` a low object may be held further from the palm (the wrist
        higher, up to 4 cm) so that the open hand clears the table.
        """
        shape = placed.obj.shape
        open_landmarks = self.synth.local_landmarks(grasp.open_angles)
        closed_landmarks = self.synth.local_landmarks(grasp.closed_angles)
        ranked = []
        for preference, natural in enumerate(naturals):
            for wrist_rotation in self.wrist_options(shape, grasp, placed.rest_rotation, natural):
                wrist_position = placed.rest_position - wrist_rotation @ grasp.object_position
                clearance = self.table_clearance(open_landmarks, wrist_rotation, wrist_position)
                lift = 0.0
                if not allow_lift:
                    clearance = min(clearance, self.table_clearance(closed_landmarks, wrist_rotation, wrist_position))
                elif clearance < 0.002 and wrist_rotation[2, 2] > 0.3:
                    lift = (0.002 - clearance) / wrist_rotation[2, 2]
                    clearance = self.table_clearance(open_landmarks, wrist_rotation,
                                                     wrist_position + lift * wrist_rotation[:, 2])
                strain = float(np.linalg.norm(Rotation.from_matrix(natural.T @ wrist_rotation).as_rotvec()))
                key = (clearance < -0.002 or lift > 0.04, strain + 0.1 * preference + 4.0 * lift, -clearance)
                ranked.append((key, len(ranked), wrist_rotation, wrist_position + lift * wrist_rotation[:, 2], lift))
        ranked.sort(key=lambda item: item[:2])
        result = []
        for _, _, wrist_rotation, wrist_position, lift in ranked:
            if len(result) == count:
                break
            if any(np.allclose(wrist_rotation, r) and np.allclose(wrist_position, p) for r, p, _ in result):
                continue
            result.append((wrist_rotation, wrist_position, dataclasses.replace(
                grasp, object_rotation=wrist_rotation.T @ placed.rest_rotation,
                object_position=grasp.object_position - lift * np.array([0.0, 0.0, 1.0]))))
        return result

    def close_on_table(self, grasp: _Grasp, shape: ObjectShape, wrist_rotation: np.ndarray,
                       wrist_position: np.ndarray) -> _Grasp:
        """Close the power grasp from its pre-shape onto the object and the table."""
        object_obstacle = _object_obstacle(shape, grasp.object_rotation, grasp.object_position)
        up_local = wrist_rotation.T @ np.array([0.0, 0.0, 1.0])
        table_point_local = wrist_rotation.T @ (np.array([0.0, 0.0, self.config.table_height_m]) - wrist_position)
        target = _finger_curl(self.model, {f: 1.0 for f in FINGER_NAMES[1:]},
                              {f: grasp.open_angles[JOINT_INDEX[f"{f}_mcp_abd"]] for f in FINGER_NAMES[1:]},
                              _POWER_CLOSED_THUMB, pinky_cmc=0.15)
        closed, _ = self.synth.close(grasp.open_angles, target, FINGER_NAMES,
                                     [object_obstacle, _plane_obstacle(up_local, table_point_local)])
        contacts = self.synth.touching_object(closed, FINGER_NAMES, object_obstacle)
        return dataclasses.replace(grasp, closed_angles=closed, contact_fingers=contacts)

    def table_clearance(self, landmarks_local: np.ndarray, rotation: np.ndarray, position: np.ndarray) -> float:
        """Smallest height of the hand's skin above the table (m, < 0 = through it)."""
        world = landmarks_local @ rotation.T + position
        clearance = world[list(_PALM_LANDMARKS), 2].min() - PALM_HALF_THICKNESS_M * self.scale
        for finger in FINGER_NAMES:
            points, radii = _finger_sample_points(world, finger, self.scale)
            clearance = min(clearance, float((points[:, 2] - radii).min()))
        return float(clearance - self.config.table_height_m)

    # ---------------------------------------------------------------- shared moves
    def pick(self, placed: _PlacedObject, grasp_kind: str, label: str) -> tuple[_Grasp, int]:
        """Reach, pre-shape, close and lift; returns the grasp and the attachment index."""
        object_index = self.objects.index(placed)
        self.label(label, placed.obj.name)
        grasp, wrist_rotation, wrist_position = self.place_grasp(placed, grasp_kind)
        retreat = 0.055 * self.scale * wrist_rotation[:, 2] + np.array([0.0, 0.0, 0.035])
        pre_position = wrist_position + retreat
        self.move(self.reach_seconds(pre_position, wrist_rotation), wrist_rotation, pre_position, grasp.open_angles)
        self.move(self.seconds(0.45), position=wrist_position)
        self.move(self.seconds(0.35), angles=grasp.closed_angles)
        close_end = self.now
        self.hold(self.hold_seconds(0.3))
        attach_time = close_end + self.exact_margin
        self.attachments.append(_Attachment(object_index, attach_time, math.inf, grasp))
        lift = np.array([0.0, 0.0, self.rng.uniform(0.08, 0.14)])
        self.move(self.seconds(0.55), position=wrist_position + lift)
        return grasp, len(self.attachments) - 1

    def place(self, placed: _PlacedObject, attachment: int, label: str | None = "release") -> None:
        """Carry to a free spot, put down, open the hand and withdraw."""
        grasp = self.attachments[attachment].grasp
        spot = self.free_spot(exclude=placed.spot)
        placed.spot = spot
        target_xy = _SPOTS[spot] + self.rng.uniform(-0.015, 0.015, 2)
        spin = _rotation_zyx(self._lateral_spin(placed))
        object_rotation = spin @ placed.rest_rotation
        wrist_rotation = object_rotation @ grasp.object_rotation.T
        centre = np.array([target_xy[0], target_xy[1],
                           self.config.table_height_m + placed.obj.shape.support_depth(object_rotation)])
        wrist_position = centre - wrist_rotation @ grasp.object_position
        above = wrist_position + np.array([0.0, 0.0, self.rng.uniform(0.07, 0.12)])
        self.move(self.reach_seconds(above, wrist_rotation), wrist_rotation, above)
        if label:
            self.label(label, placed.obj.name)
        self.move(self.seconds(0.5), position=wrist_position)
        arrive = self.now
        self.hold(self.hold_seconds(0.3))
        self.attachments[attachment].detach_time = arrive + self.exact_margin
        placed.rest_rotation, placed.rest_position = object_rotation, centre
        self.move(self.seconds(0.35), angles=grasp.open_angles)
        retreat = 0.06 * self.scale * wrist_rotation[:, 2] + np.array([0.0, 0.0, 0.05])
        self.move(self.seconds(0.45), position=wrist_position + retreat, angles=self.relaxed_angles())

    def _lateral_spin(self, placed: _PlacedObject) -> float:
        """Yaw to turn an object by when putting it down: random, but pulling elongated
        objects back towards lying across the user's reach."""
        spin = self.rng.uniform(-0.35, 0.35)
        shape = placed.obj.shape
        if shape.kind == "sphere" or placed.constraint in ("axis_vertical", "upright"):
            return spin
        if shape.kind == "cylinder":
            axis = placed.rest_rotation[:, 2]
        else:
            axis = placed.rest_rotation[:, int(np.argmax(shape.half_extents))]
        heading = math.atan2(axis[1], axis[0])
        off_lateral = heading % math.pi - math.pi / 2   # deviation from lying across, [-pi/2, pi/2)
        return float(np.clip(-0.6 * off_lateral + spin, -0.8, 0.8))

    # ---------------------------------------------------------------- episodes
    def pick_and_place(self) -> None:
        placed = self.object_for("pick_and_place")
        _, attachment = self.pick(placed, "power", "grasp")
        self.place(placed, attachment)

    def pinch_and_place(self) -> None:
        placed = self.object_for("pinch_and_place")
        _, attachment = self.pick(placed, "pinch", "pinch")
        self.place(placed, attachment)

    def tool_use(self) -> None:
        placed = self.object_for("tool_use")
        _, attachment = self.pick(placed, "power", "grasp")
        rng = self.rng
        work = np.array([rng.uniform(0.32, 0.42), rng.uniform(-0.22, -0.08), rng.uniform(0.90, 0.98)])
        base = _rotation_zyx(self.natural_yaw(work[:2]), rng.uniform(0.1, 0.4), rng.uniform(-0.9, -0.4))
        self.move(self.reach_seconds(work, base), base, work)
        self.label("tool_rotate", placed.obj.name)
        amplitude = rng.uniform(0.45, 0.8)
        half_period = self.seconds(rng.uniform(0.3, 0.5))
        turns = int(rng.integers(4, 8))
        for k in range(turns):
            sign = 1.0 if k % 2 == 0 else -1.0
            push = work + base[:, 0] * 0.01 * (k % 2)
            self.move(half_period, base @ _rotation_zyx(0.0, 0.0, sign * amplitude), push)
        self.move(half_period * 0.6, base, work)
        self.place(placed, attachment)

    def typing(self) -> None:
        placed = self.object_for("typing")
        self.label("typing", placed.obj.name)
        rng = self.rng
        shape = placed.obj.shape
        pad_top = placed.rest_position[2] + shape.half_extents[2]
        curls = {"index": 0.3, "middle": 0.32, "ring": 0.34, "pinky": 0.36}
        typing_angles = _finger_curl(self.model, curls, {"index": 0.0, "middle": 0.0, "ring": 0.02, "pinky": 0.05},
                                     {"cmc_abd": 0.35, "cmc_flex": 0.2, "mcp_flex": 0.25, "ip_flex": 0.2})
        rotation = _rotation_zyx(self.natural_yaw(placed.rest_position[:2]) - 0.1, rng.uniform(0.12, 0.25),
                                 rng.uniform(-0.15, 0.0))
        landmarks = self.synth.local_landmarks(typing_angles) @ rotation.T
        tips = landmarks[[8, 12, 16]]
        hover = 0.012 * self.scale
        radius = FINGER_SEGMENT_RADII_M["middle"][2] * self.scale
        position = np.array([placed.rest_position[0], placed.rest_position[1], 0.0]) - np.array(
            [tips[:, 0].mean(), tips[:, 1].mean(), 0.0])
        position[2] = pad_top + radius + hover - tips[:, 2].min()
        self.move(self.reach_seconds(position, rotation), rotation, position, typing_angles)
        # Tap depths: extra MCP/PIP flexion bringing each fingertip onto the pad.
        tap_depth = {}
        for finger in ("index", "middle", "ring", "pinky"):
            extra = np.linspace(0.0, 0.9, 91)
            poses = np.repeat(typing_angles[None], extra.size, axis=0)
            poses[:, JOINT_INDEX[f"{finger}_mcp_flex"]] += extra
            poses[:, JOINT_INDEX[f"{finger}_pip_flex"]] += 0.5 * extra
            poses = self.model.clip_joint_angles(poses)
            tip_heights = (self.synth.local_landmarks(poses)[:, LANDMARKS_OF_FINGER[finger][-1]] @ rotation.T)[:, 2]
            reached = np.flatnonzero(tip_heights + position[2] <= pad_top + radius)
            tap_depth[finger] = poses[reached[0]] if reached.size else poses[-1]
        end = self.now + self.seconds(rng.uniform(2.5, 4.0))
        fingers = ("index", "middle", "ring", "pinky")
        weights = np.array([0.35, 0.3, 0.22, 0.13])
        home = position.copy()
        while self.now < end:
            finger = fingers[int(rng.choice(4, p=weights))]
            self.move(self.seconds(rng.uniform(0.08, 0.11)), angles=tap_depth[finger])
            self.move(self.seconds(rng.uniform(0.1, 0.13)), angles=typing_angles)
            if rng.random() < 0.25:
                shift = home + np.array([rng.uniform(-0.015, 0.015), rng.uniform(-0.025, 0.025), 0.0])
                self.move(self.seconds(0.25), position=shift)
            else:
                self.hold(self.seconds(rng.uniform(0.02, 0.14)))
        lift = self.last.wrist_position + np.array([0.0, 0.0, 0.05])
        self.move(self.seconds(0.4), position=lift, angles=self.relaxed_angles())

    def pointing(self) -> None:
        self.label("pointing")
        rng = self.rng
        pointing_angles = _finger_curl(self.model, {"index": 0.03, "middle": 0.95, "ring": 0.98, "pinky": 0.95},
                                       {"index": 0.0, "ring": 0.0, "pinky": 0.05},
                                       {"cmc_abd": 0.05, "cmc_flex": 0.45, "mcp_flex": 0.6, "ip_flex": 0.5},
                                       pinky_cmc=0.15)
        local = self.synth.local_landmarks(pointing_angles)
        index_direction = local[8] - local[5]
        index_frame = _frame_from_x_and_up(index_direction, np.array([0.0, 0.0, 1.0]))
        for _ in range(int(rng.integers(3, 6))):
            if rng.random() < 0.5 and self.objects:
                # at an object on the table, from behind and above it
                target = self.objects[int(rng.integers(len(self.objects)))].rest_position
                towards = target[:2] - _SHOULDER[:2]
                towards /= np.linalg.norm(towards)
                back = rng.uniform(0.14, 0.22)
                position = np.array([target[0] - back * towards[0], target[1] - back * towards[1],
                                     target[2] + rng.uniform(0.12, 0.2)])
            else:
                # at something across the room
                position = np.array([rng.uniform(0.28, 0.42), rng.uniform(-0.26, -0.04), rng.uniform(0.88, 1.02)])
                target = np.array([rng.uniform(1.2, 2.5), rng.uniform(-0.9, 0.6), rng.uniform(0.8, 1.7)])
            up = np.array([0.0, rng.uniform(0.2, 0.6), 1.0])
            rotation = _frame_from_x_and_up(target - position, up) @ index_frame.T
            self.move(self.reach_seconds(position, rotation), rotation, position, pointing_angles)
            self.hold(self.seconds(rng.uniform(0.3, 0.7)))

    def free_motion(self) -> None:
        self.label("free_motion")
        rng = self.rng
        model = self.model
        for _ in range(int(rng.integers(3, 7))):
            position = np.array([rng.uniform(0.25, 0.45), rng.uniform(-0.32, 0.0), rng.uniform(0.84, 1.06)])
            rotation = _rotation_zyx(self.natural_yaw(position[:2]) + rng.uniform(-0.3, 0.3),
                                     rng.uniform(-0.4, 0.6), rng.uniform(-1.4, 0.4))
            curls = {f: float(rng.uniform(0.0, 1.0)) for f in FINGER_NAMES[1:]}
            abductions = {f: float(rng.uniform(-0.5, 1.0) * model.joint_upper[JOINT_INDEX[f"{f}_mcp_abd"]])
                          for f in FINGER_NAMES[1:]}
            thumb_names = ("cmc_flex", "cmc_abd", "mcp_flex", "mcp_abd", "ip_flex")
            thumb = {j: float(rng.uniform(model.joint_lower[JOINT_INDEX[f"thumb_{j}"]] * 0.5,
                                          model.joint_upper[JOINT_INDEX[f"thumb_{j}"]] * 0.8)) for j in thumb_names}
            angles = _finger_curl(model, curls, abductions, thumb, pinky_cmc=float(rng.uniform(0.0, 0.3)))
            self.move(self.seconds(rng.uniform(0.5, 1.0)) + 0.3 * self.reach_seconds(position, rotation),
                      rotation, position, angles)
            if rng.random() < 0.6:
                self.hold(self.seconds(rng.uniform(0.05, 0.3)))

    def wave(self) -> None:
        self.label("wave")
        rng = self.rng
        position = np.array([rng.uniform(0.34, 0.44), rng.uniform(-0.24, -0.10), rng.uniform(1.0, 1.1)])
        # Fingers up, palm facing away from the user (the camera sees the back of the hand).
        upright = np.column_stack([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
        base = _rotation_zyx(rng.uniform(0.0, 0.35)) @ upright @ _rotation_zyx(0.0, rng.uniform(-0.15, 0.15))
        angles = _finger_curl(self.model, {f: 0.05 for f in FINGER_NAMES[1:]},
                              {"index": 0.2, "middle": 0.05, "ring": 0.12, "pinky": 0.3},
                              {"cmc_abd": 0.5, "cmc_flex": 0.0, "mcp_flex": 0.1, "ip_flex": 0.1})
        self.move(self.reach_seconds(position, base), base, position, angles)
        amplitude = rng.uniform(0.3, 0.5)
        half_period = self.seconds(rng.uniform(0.22, 0.35))
        for k in range(int(rng.integers(4, 9))):
            sign = 1.0 if k % 2 == 0 else -1.0
            sway = position + np.array([0.0, 0.015 * sign, 0.0])
            self.move(half_period, base @ _rotation_zyx(sign * amplitude), sway)
        self.move(half_period, base, position)
        self.move(self.seconds(0.5), position=position + np.array([-0.04, 0.0, -0.12]), angles=self.relaxed_angles())


# ======================================================================================
# Building the sequence
# ======================================================================================

def _sample_keys(keys: Sequence[_Key], times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intended motion (minimum-jerk between keyframes) at ``times``."""
    key_times = np.array([k.time for k in keys])
    angles = np.stack([k.joint_angles for k in keys])
    positions = np.stack([k.wrist_position for k in keys])
    rotations = np.stack([k.wrist_rotation for k in keys])
    segment = np.clip(np.searchsorted(key_times, times, side="right") - 1, 0, len(keys) - 2)
    span = key_times[segment + 1] - key_times[segment]
    s = _minimum_jerk((times - key_times[segment]) / span)
    joint_angles = angles[segment] + s[:, None] * (angles[segment + 1] - angles[segment])
    wrist_positions = positions[segment] + s[:, None] * (positions[segment + 1] - positions[segment])
    steps = Rotation.from_matrix(np.swapaxes(rotations[:-1], -1, -2) @ rotations[1:]).as_rotvec()
    wrist_rotations = rotations[segment] @ Rotation.from_rotvec(s[:, None] * steps[segment]).as_matrix()
    return joint_angles, wrist_positions, wrist_rotations


def _head_trajectory(config: MotionConfig, rng: np.random.Generator, times: np.ndarray,
                     wrist_rotations: np.ndarray, wrist_positions: np.ndarray, scale: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Head poses looking at the (smoothed) palm, with sway and jitter."""
    step = float(times[1] - times[0])
    palm_point = wrist_positions + wrist_rotations[:, :, 0] * (0.07 * scale)
    if config.gaze_smoothing_s > 0:
        palm_point = gaussian_filter1d(palm_point, sigma=config.gaze_smoothing_s / step, axis=0, mode="nearest")
    base = np.asarray(config.head_position_m, dtype=float)
    lean = np.clip(0.12 * (palm_point[:, 0] - 0.35), -0.02, 0.04)
    head_positions = base + _smooth_noise(rng, times, 1.2, config.head_sway_m, 3)
    head_positions[:, 0] += lean
    mount = config.camera_mount.parent_from_body()
    mount_pitch = float(config.camera_mount_rpy[1])
    yaw = np.zeros(times.size)
    pitch = np.zeros(times.size)
    for _ in range(2):   # the camera position depends on the head rotation: iterate once
        head_rotations = Rotation.from_euler("ZYX", np.column_stack([yaw, pitch, np.zeros_like(yaw)])).as_matrix()
        camera = head_positions + head_rotations @ mount[:3, 3]
        d = palm_point - camera
        yaw = np.arctan2(d[:, 1], d[:, 0])
        pitch = np.arctan2(-d[:, 2], np.hypot(d[:, 0], d[:, 1])) - mount_pitch
    jitter = _smooth_noise(rng, times, 0.6, config.head_jitter_rad, 3)
    euler = np.column_stack([yaw + jitter[:, 0], np.clip(pitch + jitter[:, 1], -0.6, 1.0), 0.5 * jitter[:, 2]])
    return Rotation.from_euler("ZYX", euler).as_matrix(), head_positions


def _rotvecs_about(reference: np.ndarray, rotations: np.ndarray, what: str) -> np.ndarray:
    rotvecs = Rotation.from_matrix(reference.T @ rotations).as_rotvec()
    if np.linalg.norm(rotvecs, axis=-1).max() > 0.9 * math.pi:
        raise RuntimeError(f"{what} rotations span more than 0.9 pi around their mean")
    return rotvecs


_EPISODE_METHODS = {
    "pick_and_place": _Planner.pick_and_place,
    "pinch_and_place": _Planner.pinch_and_place,
    "tool_use": _Planner.tool_use,
    "typing": _Planner.typing,
    "pointing": _Planner.pointing,
    "free_motion": _Planner.free_motion,
    "wave": _Planner.wave,
}


def _episodes_for(activities: Iterable[str] | None) -> list[str]:
    if activities is None:
        return list(EPISODE_LABELS)
    wanted = list(activities)
    unknown = [a for a in wanted if a not in ACTIVITY_LABELS]
    if unknown or not wanted:
        raise ConfigError("activities", f"unknown or empty {unknown or wanted}; choose from {list(ACTIVITY_LABELS)}")
    return [episode for episode, labels in EPISODE_LABELS.items() if set(labels) & set(wanted)]


def generate_sequence(rng: np.random.Generator | int, duration: float, side: str = "right",
                      activities: Iterable[str] | None = None, config: MotionConfig | None = None,
                      scale: float | None = None, speed: float | None = None,
                      model: HandModel | None = None) -> MotionSequence:
    """Script a hand–object interaction sequence.

    Args:
        rng: ``numpy.random.Generator`` or an integer seed (same seed, same sequence).
        duration: nominal length in s (>= 1).
        side: ``"right"`` or ``"left"`` hand.
        activities: labels to include (subset of ``ACTIVITY_LABELS``); None = all. Episodes
            producing any requested label are used (``grasp``/``pinch`` bring ``release``).
            Every eligible episode type is used once, in random order, before any repeats.
        config: :class:`MotionConfig` (defaults when None).
        scale: hand size; drawn from ``config.hand_scale_range`` when None.
        speed: speed factor; drawn from ``config.speed_range`` when None.
        model: hand model (default reference hand).
    """
    rng = np.random.default_rng(rng)
    config = config or MotionConfig()
    model = model or default_hand_model()
    if side not in SIDES:
        raise ConfigError("side", f"{side!r}, expected 'left' or 'right'")
    if not (math.isfinite(duration) and duration >= 1.0):
        raise ConfigError("duration", f"must be >= 1 s, got {duration!r}")
    episodes = _episodes_for(activities)
    scale = float(rng.uniform(*config.hand_scale_range)) if scale is None else float(scale)
    speed = float(rng.uniform(*config.speed_range)) if speed is None else float(speed)
    if not (0.5 <= scale <= 2.0 and 0.2 <= speed <= 5.0):
        raise ConfigError("scale/speed", f"out of range: scale {scale}, speed {speed}")

    planner = _Planner(config, rng, model, scale, speed, duration)
    planner.create_objects(episodes)
    order = list(rng.permutation(episodes))
    end_time = duration + config.evaluation_margin_s
    while planner.now < end_time:
        if not order:
            order = list(rng.permutation(episodes))
        episode = order.pop(0)
        planner.episode_speed = speed * (1.0 + rng.uniform(-config.speed_jitter, config.speed_jitter))
        _EPISODE_METHODS[episode](planner)
    planner.hold(config.evaluation_margin_s)

    # Control grid: B_i is centred on control time tau_i; the spline is valid on
    # [-margin, duration + margin].
    step = config.control_interval_s
    degree = config.spline_degree
    low, high = -config.evaluation_margin_s, duration + config.evaluation_margin_s
    first = low - (degree - 1) / 2 * step
    count = int(math.ceil((high - low) / step)) + degree + 1
    control_times = first + step * np.arange(count)
    knots = first + step * (np.arange(count + degree + 1) - (degree + 1) / 2)
    joint_angles, wrist_positions, wrist_rotations = _sample_keys(planner.keys, control_times)
    head_rotations, head_positions = _head_trajectory(config, rng, control_times, wrist_rotations, wrist_positions,
                                                      scale)
    mirrored = side == "left"
    if mirrored:   # the whole world through its x-z plane: a right hand becomes a left hand
        wrist_rotations, head_rotations = mirror_rotations_local(wrist_rotations), mirror_rotations_local(head_rotations)
        wrist_positions, head_positions = mirror_landmarks_local(wrist_positions), mirror_landmarks_local(head_positions)
    wrist_reference = Rotation.from_matrix(wrist_rotations).mean().as_matrix()
    head_reference = Rotation.from_matrix(head_rotations).mean().as_matrix()
    controls = np.zeros((count, _NUM_CHANNELS))
    controls[:, _JOINTS] = model.clip_joint_angles(joint_angles)
    controls[:, _WRIST_POSITION] = wrist_positions
    controls[:, _WRIST_ROTVEC] = _rotvecs_about(wrist_reference, wrist_rotations, "wrist")
    controls[:, _HEAD_POSITION] = head_positions
    controls[:, _HEAD_ROTVEC] = _rotvecs_about(head_reference, head_rotations, "head")
    spline = BSpline(knots, controls, degree, extrapolate=False)

    objects = tuple(p.obj for p in planner.objects)
    segments = _segments(planner.labels, duration)
    sequence = MotionSequence(duration, side, scale, speed, segments, (), objects, config, model, spline,
                              wrist_reference, head_reference, ())
    phases, contacts = _object_phases(sequence, planner, mirrored)
    return dataclasses.replace(sequence, _object_phases=phases, contacts=contacts)


def _segments(labels: list[tuple[str, float, str | None]], duration: float) -> tuple[ActivitySegment, ...]:
    segments = []
    for k, (label, start, object_name) in enumerate(labels):
        end = labels[k + 1][1] if k + 1 < len(labels) else math.inf
        start, end = max(start, 0.0), min(end, duration)
        if end > start:
            segments.append(ActivitySegment(label, start, end, object_name))
    if segments:
        segments[0] = dataclasses.replace(segments[0], start=0.0)
    return tuple(segments)


def _object_phases(sequence: MotionSequence, planner: _Planner, mirrored: bool):
    """Static/held phases of every object and the grasp contacts.

    While held, an object is rigidly attached to the wrist (its grasp pose). Its static
    poses are where the *evaluated* hand takes and leaves it, so nothing jumps at attach
    or detach (the wrist and fingers are exactly still there, see ``_Planner.pick``).
    """
    def mirror(rotation, position):
        if not mirrored:
            return rotation, position
        return mirror_rotations_local(rotation), mirror_landmarks_local(position)

    def object_pose_at(time: float, grasp_rotation, grasp_position):
        wrist = sequence.evaluate(np.array([time]))
        wrist_rotation = wrist["wrist_rotation"][0]
        return wrist_rotation @ grasp_rotation, wrist["wrist_translation"][0] + wrist_rotation @ grasp_position

    _, end_of_range = sequence.time_range
    phases: list[list[_ObjectPhase]] = [[] for _ in planner.objects]
    since = [-math.inf] * len(planner.objects)          # start of the current static phase
    resting = [mirror(p.initial_rotation, p.initial_position) for p in planner.objects]
    contacts = []
    for attachment in sorted(planner.attachments, key=lambda a: a.attach_time):
        m = attachment.object_index
        if attachment.attach_time >= end_of_range or since[m] == math.inf:
            continue
        grasp_rotation, grasp_position = mirror(attachment.grasp.object_rotation, attachment.grasp.object_position)
        attach, detach = attachment.attach_time, attachment.detach_time
        phases[m].append(_ObjectPhase(since[m], attach, False, *object_pose_at(attach, grasp_rotation, grasp_position)))
        if detach >= end_of_range:
            detach = math.inf
        phases[m].append(_ObjectPhase(attach, detach, True, grasp_rotation, grasp_position))
        if attachment.grasp.contact_fingers and attach < sequence.duration:
            contacts.append(Contact(planner.objects[m].obj.name, attach, min(detach, sequence.duration),
                                    attachment.grasp.contact_fingers))
        since[m] = detach
        if math.isfinite(detach):
            resting[m] = object_pose_at(detach, grasp_rotation, grasp_position)
    for m in range(len(planner.objects)):
        if since[m] < math.inf:
            phases[m].append(_ObjectPhase(since[m], math.inf, False, *resting[m]))
    return tuple(tuple(p) for p in phases), tuple(contacts)
