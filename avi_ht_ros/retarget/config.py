"""Retargeting + safety configuration: YAML -> validated, frozen dataclasses.

One YAML file describes one robot hand (``config/retarget_<robot>.yaml``); the full schema
with every default is in docs/RETARGETING.md.  Top-level sections:

``retargeting``
    robot URDF and links, human side/mirroring, scaling, the task terms of the three
    methods (``vector``, ``position``, ``dexpilot``), solver, uncertainty weighting,
    low-pass filter and input validation.
``safety``
    velocity/acceleration limits, watchdog (stale timeout, hold/open on loss,
    re-engagement) and pinch-event hysteresis, used by :mod:`avi_ht_ros.retarget.safety`.

Every problem (missing key, unknown key, wrong type, out-of-range value, a link that is not
in the URDF, an unknown landmark or joint name) raises one
:class:`~avi_ht_ros.common.errors.ConfigError` whose ``where`` is the YAML file and whose
``problem`` starts with the dotted field, e.g.
``config/retarget_x.yaml: retargeting.vector.terms[2].task_link: link 'index_nail' is not in ...``.

Landmarks are named by :data:`avi_ht_ros.common.hand_model.LANDMARK_NAMES` (MediaPipe order)
or given as indices 0..20.  Relative paths (the URDF) are relative to the YAML file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from avi_ht_ros.common.config_file import load_yaml_mapping
from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.hand_model import FINGER_NAMES, LANDMARK_INDEX, LANDMARK_NAMES, SIDES

METHODS = ("vector", "position", "dexpilot")
LOST_BEHAVIORS = ("hold", "open")
INVALID_LANDMARK_POLICIES = ("reject", "drop")
#: HandPose.tracking_state names accepted in ``safety.engage_states`` (TRACKING_<NAME>).
TRACKING_STATE_NAMES = ("ok", "vision_only", "imu_only", "degraded")


# ------------------------------------------------------------------------------ dataclasses
@dataclass(frozen=True)
class TaskTerm:
    """One task vector: robot ``task_link - origin_link`` should equal
    ``scaling * (human[task_landmark] - human[origin_landmark])`` (rotated into the robot)."""

    origin_landmark: int
    task_landmark: int
    origin_link: str
    task_link: str
    weight: float = 1.0


@dataclass(frozen=True)
class DexPilotConfig:
    """DexPilot-style pinch closing (Handa et al. 2020), see docs/RETARGETING.md."""

    fingertip_landmarks: tuple[int, ...]  # thumb first
    fingertip_links: tuple[str, ...]
    wrist_weight: float = 10.0
    pinch_weight: float = 200.0
    separation_weight: float = 400.0
    project_distance: float = 0.03
    escape_distance: float = 0.05
    pinch_distance: float = 1e-4
    separation_distance: float = 0.03


@dataclass(frozen=True)
class SolverConfig:
    """Projected Levenberg-Marquardt on the weighted (Huber-robust) task residuals."""

    max_iterations: int = 6
    first_frame_iterations: int = 60
    step_tolerance: float = 1e-3
    cost_tolerance: float = 1e-4
    regularization: float = 1e-3
    damping: float = 1e-3
    huber_delta: float = 0.02


@dataclass(frozen=True)
class UncertaintyConfig:
    """Per-term weight ``sigma0^2 / (sigma0^2 + sigma_a^2 + sigma_b^2)`` + prior on lost weight."""

    enabled: bool = True
    sigma0: float = 0.01
    prior_gain: float = 0.05


@dataclass(frozen=True)
class PinchConfig:
    """Thumb-finger pinch events with hysteresis (human landmarks, metres)."""

    fingers: tuple[str, ...] = ("index", "middle", "ring")
    start_distance: float = 0.02
    end_distance: float = 0.035
    release_on_lost: bool = True


@dataclass(frozen=True)
class SafetyConfig:
    """Command-stream limits and watchdog of :class:`~avi_ht_ros.retarget.safety.CommandSafetyFilter`."""

    velocity_scale: float = 1.0
    max_velocity: Mapping[str, float] = field(default_factory=dict)
    max_acceleration: float = 40.0
    max_acceleration_per_joint: Mapping[str, float] = field(default_factory=dict)
    stale_timeout_ms: float = 150.0
    lost_behavior: str = "hold"
    open_pose: Mapping[str, float] = field(default_factory=dict)
    lost_velocity_scale: float = 0.3
    engage_confirm_ms: float = 100.0
    engage_velocity_scale: float = 0.3
    engage_ramp_ms: float = 500.0
    engage_tolerance: float = 0.05
    engage_states: tuple[str, ...] = TRACKING_STATE_NAMES
    pinch: PinchConfig = field(default_factory=PinchConfig)


@dataclass(frozen=True)
class RetargetConfig:
    """Everything :class:`~avi_ht_ros.retarget.optimizer.Retargeter` needs (see module doc)."""

    source: str
    urdf_path: str
    wrist_link: str
    side: str = "right"
    mirror: bool = False
    wrist_to_robot: np.ndarray = field(default_factory=lambda: np.eye(3))
    scaling_factor: float = 1.0
    method: str = "vector"
    driven_joints: tuple[str, ...] | None = None
    mimic_joints: tuple = ()  # tuple[MimicJoint]; URDF <mimic> tags are always included
    fixed_joint_positions: Mapping[str, float] = field(default_factory=dict)
    extra_frames: tuple = ()  # tuple[ExtraFrame]
    vector_terms: tuple[TaskTerm, ...] = ()
    position_terms: tuple[TaskTerm, ...] = ()
    dexpilot: DexPilotConfig | None = None
    solver: SolverConfig = field(default_factory=SolverConfig)
    uncertainty: UncertaintyConfig = field(default_factory=UncertaintyConfig)
    low_pass_alpha: float = 1.0
    invalid_landmarks: str = "reject"
    max_landmark_distance: float = 1.0
    safety: SafetyConfig = field(default_factory=SafetyConfig)

    def terms(self, method: str) -> tuple[TaskTerm, ...]:
        """Configured terms of the vector or position method."""
        return {"vector": self.vector_terms, "position": self.position_terms}.get(method, ())


# ------------------------------------------------------------------------------ reader
_MISSING = object()


class _Section:
    """Typed access to one mapping of the YAML with error messages naming file and field."""

    def __init__(self, source: str, path: str, data: Any):
        self.source, self.path = source, path
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            self.fail(None, f"must be a mapping, got {type(data).__name__}")
        self.data = dict(data)
        self.used: set[str] = set()

    def field(self, key: str | None) -> str:
        if key is None:
            return self.path
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str | None, problem: str):
        raise ConfigError(self.source, f"{self.field(key)}: {problem}")

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            if default is _MISSING:
                self.fail(key, "missing (required)")
            return default
        return self.data[key]

    def has(self, key: str) -> bool:
        """Key present and not null (a null key counts as given-but-empty, not unknown)."""
        self.used.add(key)
        return key in self.data and self.data[key] is not None

    def number(self, key: str, default: Any = _MISSING, *, minimum: float | None = None,
               maximum: float | None = None, strict_minimum: bool = False) -> float:
        value = self.raw(key, default)
        return _as_number(value, lambda p: self.fail(key, p), minimum, maximum, strict_minimum)

    def integer(self, key: str, default: Any = _MISSING, *, minimum: int | None = None) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            self.fail(key, f"expected an integer, got {value!r}")
        if minimum is not None and value < minimum:
            self.fail(key, f"must be >= {minimum}, got {value}")
        return int(value)

    def boolean(self, key: str, default: Any = _MISSING) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {value!r}")
        return value

    def string(self, key: str, default: Any = _MISSING, *, choices: tuple[str, ...] | None = None) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str) or not value:
            self.fail(key, f"expected a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            self.fail(key, f"must be one of {list(choices)}, got {value!r}")
        return value

    def vector(self, key: str, length: int, default: Any = _MISSING) -> tuple[float, ...]:
        value = self.raw(key, default)
        if not isinstance(value, (list, tuple)) or len(value) != length:
            self.fail(key, f"expected a list of {length} numbers, got {value!r}")
        return tuple(_as_number(v, lambda p: self.fail(key, p)) for v in value)

    def string_list(self, key: str, default: Any = _MISSING) -> tuple[str, ...]:
        value = self.raw(key, default)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            self.fail(key, f"expected a list of names, got {value!r}")
        return tuple(value)

    def number_map(self, key: str, default: Any = _MISSING) -> dict[str, float]:
        value = self.raw(key, default)
        if not isinstance(value, Mapping):
            self.fail(key, f"expected a mapping name -> number, got {value!r}")
        out = {}
        for name, number in value.items():
            if not isinstance(name, str):
                self.fail(key, f"keys must be names, got {name!r}")
            out[name] = _as_number(number, lambda p, n=name: self.fail(f"{key}.{n}", p))
        return out

    def section(self, key: str, default: Any = _MISSING) -> "_Section":
        return _Section(self.source, self.field(key), self.raw(key, default))

    def sections(self, key: str, default: Any = _MISSING) -> list["_Section"]:
        value = self.raw(key, default)
        if not isinstance(value, (list, tuple)):
            self.fail(key, f"expected a list, got {type(value).__name__}")
        return [_Section(self.source, f"{self.field(key)}[{i}]", item) for i, item in enumerate(value)]

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            self.fail(unknown[0], f"unknown key (known here: {sorted(self.used)})")


def _as_number(value: Any, fail: Callable[[str], None], minimum: float | None = None,
               maximum: float | None = None, strict_minimum: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        fail(f"expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        fail(f"must be finite, got {value}")
    if minimum is not None and (value <= minimum if strict_minimum else value < minimum):
        fail(f"must be {'>' if strict_minimum else '>='} {minimum}, got {value}")
    if maximum is not None and value > maximum:
        fail(f"must be <= {maximum}, got {value}")
    return value


def _landmark(section: _Section, key: str) -> int:
    value = section.raw(key)
    if isinstance(value, str):
        if value not in LANDMARK_INDEX:
            section.fail(key, f"unknown landmark {value!r}; known: {list(LANDMARK_NAMES)}")
        return LANDMARK_INDEX[value]
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < len(LANDMARK_NAMES):
        return int(value)
    section.fail(key, f"expected a landmark name or an index 0..{len(LANDMARK_NAMES) - 1}, got {value!r}")
    raise AssertionError  # unreachable


def _rpy_matrix(rpy: tuple[float, float, float]) -> np.ndarray:
    """URDF convention: R = Rz(yaw) Ry(pitch) Rx(roll)."""
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


# ------------------------------------------------------------------------------ parsing
def load_retarget_config(path: str | Path) -> RetargetConfig:
    """Read and validate a retargeting YAML file (also checks links/joints against the URDF).

    ``path`` is a file, or the name of a shipped config (``retarget_avi_hand_16dof.yaml``,
    found in ``config/`` of the source tree or the install space).
    """
    from avi_ht_ros.common.paths import config_path

    path = config_path(str(path))
    return parse_retarget_config(load_yaml_mapping(path), source=str(path), base_dir=path.parent)


def parse_retarget_config(data: Any, source: str = "<dict>", base_dir: str | Path = ".") -> RetargetConfig:
    """Validate an already-loaded mapping (``{"retargeting": ..., "safety": ...}``)."""
    from avi_ht_ros.retarget.kinematics import ExtraFrame, JointCoupling, MimicJoint, RobotHandKinematics

    top = _Section(source, "", data)
    rt = top.section("retargeting")
    safety_section = top.section("safety", {})
    top.finish()

    robot = rt.section("robot")
    urdf = Path(robot.string("urdf"))
    if not urdf.is_absolute():
        urdf = (Path(base_dir) / urdf).resolve()
    if not urdf.is_file():
        robot.fail("urdf", f"file not found: {urdf}")
    extra_frames = []
    for item in robot.sections("extra_frames", []):
        extra_frames.append(ExtraFrame(item.string("name"), item.string("link"),
                                       item.vector("offset", 3, (0.0, 0.0, 0.0))))
        item.finish()
    try:
        kinematics = RobotHandKinematics(urdf, ())
    except ConfigError as exc:
        robot.fail("urdf", f"{exc.where}: {exc.problem}")
    for i, extra in enumerate(extra_frames):
        where = f"extra_frames[{i}]"
        if kinematics.has_frame(extra.name):
            robot.fail(f"{where}.name", f"{extra.name!r} already names a link of {urdf.name}")
        if extra.link not in kinematics.link_names:
            robot.fail(f"{where}.link", f"link {extra.link!r} is not in {urdf}; links: {list(kinematics.link_names)}")
        kinematics.add_frame(extra)

    def check_link(section: _Section, key: str) -> str:
        name = section.string(key)
        if not kinematics.has_frame(name):
            section.fail(key, f"link {name!r} is not in {urdf} (nor an extra frame); "
                              f"links: {list(kinematics.link_names)}")
        return name

    def check_joint(section: _Section, key: str, name: str) -> str:
        if name not in kinematics.joint_names:
            section.fail(key, f"joint {name!r} is not a movable joint of {urdf}; "
                              f"movable joints: {list(kinematics.joint_names)}")
        return name

    wrist_link = check_link(robot, "wrist_link")
    if kinematics.frame_parent_joint(kinematics.frame_id(wrist_link)) != 0:
        robot.fail("wrist_link", f"{wrist_link!r} must be fixed to the robot root (not moved by a joint)")
    driven = None
    if robot.has("driven_joints"):
        driven = robot.string_list("driven_joints")
        for name in driven:
            check_joint(robot, "driven_joints", name)
    mimic = list(kinematics.mimic_joints)
    for item in robot.sections("mimic_joints", []):
        relation = MimicJoint(check_joint(item, "joint", item.string("joint")),
                              check_joint(item, "source", item.string("source")),
                              item.number("multiplier", 1.0), item.number("offset", 0.0))
        item.finish()
        mimic = [m for m in mimic if m.joint != relation.joint] + [relation]
    fixed = robot.number_map("fixed_joint_positions", {})
    for name in fixed:
        check_joint(robot, "fixed_joint_positions", name)
    robot.finish()
    try:
        JointCoupling(kinematics, driven, mimic, fixed, where=source)
    except ConfigError as exc:
        robot.fail("driven_joints" if driven is not None else "mimic_joints", exc.problem)

    human = rt.section("human", {})
    side = human.string("side", "right", choices=SIDES)
    mirror = human.boolean("mirror", False)
    wrist_to_robot = _rpy_matrix(human.vector("wrist_to_robot_rpy", 3, (0.0, 0.0, 0.0)))
    human.finish()

    scaling = rt.number("scaling_factor", 1.0, minimum=0.0, strict_minimum=True)
    method = rt.string("method", "vector", choices=METHODS)

    def parse_terms(section: _Section, positions: bool) -> tuple[TaskTerm, ...]:
        terms = []
        for item in section.sections("terms"):
            if positions:
                term = TaskTerm(LANDMARK_INDEX["wrist"], _landmark(item, "landmark"), wrist_link,
                                check_link(item, "link"), item.number("weight", 1.0, minimum=0.0))
            else:
                term = TaskTerm(_landmark(item, "origin"), _landmark(item, "task"),
                                check_link(item, "origin_link"), check_link(item, "task_link"),
                                item.number("weight", 1.0, minimum=0.0))
                if term.origin_landmark == term.task_landmark:
                    item.fail("task", "origin and task landmarks are the same")
            item.finish()
            terms.append(term)
        if not terms:
            section.fail("terms", "needs at least one term")
        section.finish()
        return tuple(terms)

    vector_terms = parse_terms(rt.section("vector"), False) if rt.has("vector") else ()
    position_terms = parse_terms(rt.section("position"), True) if rt.has("position") else ()

    dexpilot = None
    if rt.has("dexpilot"):
        dp = rt.section("dexpilot")
        tips = dp.sections("fingertips")
        if not 2 <= len(tips) <= 5:
            dp.fail("fingertips", f"needs 2..5 fingertips (thumb first), got {len(tips)}")
        landmarks, links = [], []
        for item in tips:
            landmarks.append(_landmark(item, "landmark"))
            links.append(check_link(item, "link"))
            item.finish()
        project = dp.number("project_distance", 0.03, minimum=0.0, strict_minimum=True)
        escape = dp.number("escape_distance", 0.05, minimum=0.0, strict_minimum=True)
        if escape <= project:
            dp.fail("escape_distance", f"must be > project_distance ({project}), got {escape}")
        dexpilot = DexPilotConfig(
            tuple(landmarks), tuple(links),
            wrist_weight=dp.number("wrist_weight", 10.0, minimum=0.0),
            pinch_weight=dp.number("pinch_weight", 200.0, minimum=1.0),
            separation_weight=dp.number("separation_weight", 400.0, minimum=1.0),
            project_distance=project, escape_distance=escape,
            pinch_distance=dp.number("pinch_distance", 1e-4, minimum=0.0),
            separation_distance=dp.number("separation_distance", 0.03, minimum=0.0))
        dp.finish()
    available = {"vector": vector_terms, "position": position_terms, "dexpilot": dexpilot}
    if not available[method]:
        rt.fail("method", f"method {method!r} needs a retargeting.{method} section")

    sv = rt.section("solver", {})
    solver = SolverConfig(
        max_iterations=sv.integer("max_iterations", 6, minimum=1),
        first_frame_iterations=sv.integer("first_frame_iterations", 60, minimum=1),
        step_tolerance=sv.number("step_tolerance", 1e-3, minimum=0.0),
        cost_tolerance=sv.number("cost_tolerance", 1e-4, minimum=0.0),
        regularization=sv.number("regularization", 1e-3, minimum=0.0),
        damping=sv.number("damping", 1e-3, minimum=0.0),
        huber_delta=sv.number("huber_delta", 0.02, minimum=0.0))
    sv.finish()
    un = rt.section("uncertainty", {})
    uncertainty = UncertaintyConfig(
        enabled=un.boolean("enabled", True),
        sigma0=un.number("sigma0", 0.01, minimum=0.0, strict_minimum=True),
        prior_gain=un.number("prior_gain", 0.05, minimum=0.0))
    un.finish()
    low_pass_alpha = rt.number("low_pass_alpha", 1.0, minimum=0.0, maximum=1.0, strict_minimum=True)
    invalid = rt.string("invalid_landmarks", "reject", choices=INVALID_LANDMARK_POLICIES)
    max_distance = rt.number("max_landmark_distance", 1.0, minimum=0.0, strict_minimum=True)
    rt.finish()

    safety = _parse_safety(safety_section, kinematics.joint_names, check_joint)
    return RetargetConfig(
        source=source, urdf_path=str(urdf), wrist_link=wrist_link, side=side, mirror=mirror,
        wrist_to_robot=wrist_to_robot, scaling_factor=scaling, method=method,
        driven_joints=driven, mimic_joints=tuple(mimic), fixed_joint_positions=fixed,
        extra_frames=tuple(extra_frames), vector_terms=vector_terms, position_terms=position_terms,
        dexpilot=dexpilot, solver=solver, uncertainty=uncertainty, low_pass_alpha=low_pass_alpha,
        invalid_landmarks=invalid, max_landmark_distance=max_distance, safety=safety)


def _parse_safety(section: _Section, joint_names, check_joint) -> SafetyConfig:
    velocity = section.number_map("max_velocity", {})
    for name, value in velocity.items():
        check_joint(section, "max_velocity", name)
        if value <= 0:
            section.fail(f"max_velocity.{name}", f"must be > 0, got {value}")
    accel = section.raw("max_acceleration", 40.0)
    accel_map: dict[str, float] = {}
    if isinstance(accel, Mapping):
        accel_map = section.number_map("max_acceleration")
        for name, value in accel_map.items():
            if name != "default":
                check_joint(section, "max_acceleration", name)
            if value <= 0:
                section.fail(f"max_acceleration.{name}", f"must be > 0, got {value}")
        accel_default = accel_map.pop("default", 40.0)
    else:
        accel_default = section.number("max_acceleration", minimum=0.0, strict_minimum=True)
    open_pose = section.number_map("open_pose", {})
    for name in open_pose:
        check_joint(section, "open_pose", name)
    states = section.string_list("engage_states", TRACKING_STATE_NAMES)
    for state in states:
        if state not in TRACKING_STATE_NAMES:
            section.fail("engage_states", f"unknown tracking state {state!r}; known: {list(TRACKING_STATE_NAMES)}")
    pinch_section = section.section("pinch", {})
    fingers = pinch_section.string_list("fingers", ("index", "middle", "ring"))
    for finger in fingers:
        if finger not in FINGER_NAMES or finger == "thumb":
            pinch_section.fail("fingers", f"unknown finger {finger!r}; known: {list(FINGER_NAMES[1:])}")
    start = pinch_section.number("start_distance", 0.02, minimum=0.0, strict_minimum=True)
    end = pinch_section.number("end_distance", 0.035, minimum=0.0, strict_minimum=True)
    if end <= start:
        pinch_section.fail("end_distance", f"must be > start_distance ({start}) for hysteresis, got {end}")
    pinch = PinchConfig(fingers, start, end, pinch_section.boolean("release_on_lost", True))
    pinch_section.finish()
    config = SafetyConfig(
        velocity_scale=section.number("velocity_scale", 1.0, minimum=0.0, maximum=1.0, strict_minimum=True),
        max_velocity=velocity,
        max_acceleration=accel_default,
        max_acceleration_per_joint=accel_map,
        stale_timeout_ms=section.number("stale_timeout_ms", 150.0, minimum=0.0, strict_minimum=True),
        lost_behavior=section.string("lost_behavior", "hold", choices=LOST_BEHAVIORS),
        open_pose=open_pose,
        lost_velocity_scale=section.number("lost_velocity_scale", 0.3, minimum=0.0, maximum=1.0,
                                           strict_minimum=True),
        engage_confirm_ms=section.number("engage_confirm_ms", 100.0, minimum=0.0),
        engage_velocity_scale=section.number("engage_velocity_scale", 0.3, minimum=0.0, maximum=1.0,
                                             strict_minimum=True),
        engage_ramp_ms=section.number("engage_ramp_ms", 500.0, minimum=0.0),
        engage_tolerance=section.number("engage_tolerance", 0.05, minimum=0.0, strict_minimum=True),
        engage_states=states,
        pinch=pinch)
    section.finish()
    return config
