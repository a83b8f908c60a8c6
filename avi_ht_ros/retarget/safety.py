"""Command-stream safety for a retargeted robot hand: limits, watchdog, gating, pinch events.

ROS-free and clock-free: every method takes explicit timestamps (seconds, any monotonic
epoch), so behaviour is deterministic and testable.  The ROS node feeds
:meth:`CommandSafetyFilter.update` with each retargeted target (and the HandPose tracking
state) and calls :meth:`CommandSafetyFilter.step` from its control timer.

Guarantees of every command returned by :meth:`CommandSafetyFilter.step`, in priority order
(position > velocity > acceleration):

1. each joint inside its URDF position limits;
2. ``|q_k - q_(k-1)| <= v_max * dt`` per joint (``v_max`` from the URDF ``<limit velocity>``
   times ``safety.velocity_scale``, or ``safety.max_velocity``);
3. ``|v_k - v_(k-1)| <= a_max * dt`` per joint (``safety.max_acceleration``), with
   ``v_k = (q_k - q_(k-1)) / dt``.  The tracker brakes early enough to stop inside the
   position limits whatever the later control periods are (:func:`_limit_approach_speed`),
   so (1) and (2) never have to override (3), on a jittery control timer too.

``dt`` is capped at ``max_step_s`` (a stalled control loop does not license a big jump), and
a non-increasing timestamp yields the previous command unchanged.

Watchdog states (:class:`FilterState`)::

    IDLE ──valid for engage_confirm_ms──▶ ENGAGING ──within engage_tolerance──▶ TRACKING
      ▲                                      │  ▲                                 │
      │ (initial)                  lost/stale│  └──valid for engage_confirm_ms──┐ │lost/stale
      │                                      ▼                                  │ ▼
      └──────────────────────────── HOLDING (lost_behavior: hold) / OPENING (open) ◀┘

"Lost" = the last input's tracking state is not in ``engage_states`` (TRACKING_LOST always
counts as lost) or its target was unusable, or no input arrived for more than
``stale_timeout_ms``.  HOLDING decelerates to a stop at the acceleration limit and stays
there; OPENING moves to ``open_pose`` at ``lost_velocity_scale`` of the velocity limit.
ENGAGING moves towards the live target at ``engage_velocity_scale`` of the velocity limit,
rising linearly to the full limit over ``engage_ramp_ms`` — never a snap, never stuck slow.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
import numpy as np

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.hand_model import LANDMARK_INDEX
from avi_ht_ros.retarget.config import PinchConfig, SafetyConfig


class TrackingState(enum.IntEnum):
    """Values of ``HandPose.tracking_state`` (msg/HandPose.msg TRACKING_*)."""

    LOST = 0
    OK = 1
    VISION_ONLY = 2
    IMU_ONLY = 3
    DEGRADED = 4


class FilterState(str, enum.Enum):
    IDLE = "idle"
    ENGAGING = "engaging"
    TRACKING = "tracking"
    HOLDING = "holding"
    OPENING = "opening"


@dataclass(frozen=True)
class JointLimits:
    """Per-joint limits used by the safety filter (arrays in ``names`` order)."""

    names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray  # rad/s (or m/s)
    acceleration: np.ndarray  # rad/s^2

    @classmethod
    def from_kinematics(cls, kinematics, config: SafetyConfig, where: str = "safety") -> "JointLimits":
        """URDF position/velocity limits + the config's scale, overrides and accelerations."""
        names = tuple(kinematics.joint_names)
        velocity = np.array(kinematics.velocity_limit, dtype=float)
        for name, value in config.max_velocity.items():
            velocity[names.index(name)] = value
        bad = [n for n, v in zip(names, velocity) if not (np.isfinite(v) and 0 < v < 1e6)]
        if bad:
            raise ConfigError(where, f"safety.max_velocity: no usable URDF velocity limit for {bad}; set one per joint")
        velocity = velocity * config.velocity_scale
        acceleration = np.full(len(names), float(config.max_acceleration))
        for name, value in config.max_acceleration_per_joint.items():
            acceleration[names.index(name)] = value
        return cls(names, np.array(kinematics.lower, dtype=float), np.array(kinematics.upper, dtype=float),
                   velocity, acceleration)

    def open_pose(self, overrides: dict[str, float], where: str = "safety") -> np.ndarray:
        """Zero pose clipped into the limits, with per-joint overrides (must be within limits)."""
        pose = np.clip(np.zeros(len(self.names)), self.lower, self.upper)
        for name, value in overrides.items():
            j = self.names.index(name)
            if not self.lower[j] <= value <= self.upper[j]:
                raise ConfigError(where, f"safety.open_pose.{name}: {value} is outside the joint limits "
                                         f"[{self.lower[j]}, {self.upper[j]}]")
            pose[j] = value
        return pose


def _braking_speed(distance: np.ndarray, acceleration: np.ndarray, dt: float) -> np.ndarray:
    """Largest speed from which a discrete stop (speed lowered by ``a dt`` per step, this
    step included) covers at most ``distance``.

    Braking from ``v`` with ``u = a dt`` moves ``D(v) = dt ((k+1) v - u k (k+1) / 2)`` for
    ``k = floor(v / u)``; this inverts it exactly, so a stream that respects it at a
    constant period can always stop at its goal without exceeding the acceleration limit
    (``D(v) = v dt + D(v - u)``).
    """
    distance = np.maximum(distance, 0.0)
    quantum = acceleration * dt
    k = np.floor(0.5 * (np.sqrt(1.0 + 8.0 * distance / (dt * quantum)) - 1.0))
    speed = (distance / dt + quantum * k * (k + 1) / 2.0) / (k + 1)
    return np.minimum(speed, (k + 1) * quantum)


def _limit_approach_speed(distance: np.ndarray, acceleration: np.ndarray, dt: float) -> np.ndarray:
    """Largest speed towards a position limit ``distance`` away for this step of ``dt``, whatever
    the later periods: the step keeps ``v**2 / (2 a) <= distance left`` (``v**2/(2a) + v dt <=
    distance``). Braking at ``a`` from there over steps of any length moves a right Riemann sum
    of a falling speed, which is at most ``v**2 / (2 a)``; so the position clip at the limit
    never has to act and decelerate harder than ``a``, even on a jittery control timer.
    (:func:`_braking_speed` is exact for a constant period, and is used to approach the goal,
    where a jittered overshoot is harmless.)"""
    quantum = acceleration * dt
    return np.sqrt(quantum * quantum + 2.0 * acceleration * np.maximum(distance, 0.0)) - quantum


def rate_limit(position: np.ndarray, velocity: np.ndarray, target: np.ndarray, dt: float,
               limits: JointLimits, speed_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One control step towards ``target`` under velocity/acceleration/position limits.

    Returns ``(position, velocity)`` after ``dt`` seconds.  The commanded speed never
    exceeds ``speed_scale * limits.velocity``, except that a faster current velocity is
    brought down at the acceleration limit rather than cut (no snap).
    """
    if dt <= 0:
        return position.copy(), np.zeros_like(position)
    goal = np.clip(target, limits.lower, limits.upper)
    error = goal - position
    accel = limits.acceleration
    cruise = limits.velocity * speed_scale
    # Desired speed: reach the goal in this step if possible, else cruise, braking in time.
    speed = np.minimum(np.abs(error) / dt, np.minimum(cruise, _braking_speed(np.abs(error), accel, dt)))
    desired = np.sign(error) * speed
    # Never head towards a position limit faster than allows stopping at it (any later period).
    desired = np.minimum(desired, _limit_approach_speed(limits.upper - position, accel, dt))
    desired = np.maximum(desired, -_limit_approach_speed(position - limits.lower, accel, dt))
    new_velocity = np.clip(desired, velocity - accel * dt, velocity + accel * dt)
    new_velocity = np.clip(new_velocity, -limits.velocity, limits.velocity)
    new_position = np.clip(position + new_velocity * dt, limits.lower, limits.upper)
    return new_position, (new_position - position) / dt


@dataclass(frozen=True)
class SafetyCommand:
    """One output of :meth:`CommandSafetyFilter.step`."""

    stamp: float
    position: np.ndarray
    velocity: np.ndarray
    state: FilterState
    tracking_valid: bool


class CommandSafetyFilter:
    """Watchdog + gating + rate limiting of the retargeted joint stream (see module doc).

    Args:
        limits: joint limits (:meth:`JointLimits.from_kinematics`).
        config: the ``safety`` section of the retargeting config.
        initial_position: where the robot is at start (e.g. its measured joint state);
            default: the open pose.
        max_step_s: cap on the control period used for one step.
    """

    def __init__(self, limits: JointLimits, config: SafetyConfig, initial_position: np.ndarray | None = None,
                 max_step_s: float = 0.05):
        self.limits = limits
        self.config = config
        self.open_pose = limits.open_pose(dict(config.open_pose))
        self.max_step_s = float(max_step_s)
        self._engage_states = {TrackingState[name.upper()] for name in config.engage_states}
        self.reset(initial_position)

    # ------------------------------------------------------------------ state
    def reset(self, position: np.ndarray | None = None) -> None:
        """Back to IDLE at ``position`` (default: open pose), at rest, with no input seen."""
        start = self.open_pose if position is None else np.asarray(position, dtype=float)
        if start.shape != self.open_pose.shape or not np.all(np.isfinite(start)):
            raise ValueError(f"initial position must be {self.open_pose.shape} finite values")
        self._position = np.clip(start, self.limits.lower, self.limits.upper)
        self._velocity = np.zeros_like(self._position)
        self._state = FilterState.IDLE
        self._last_step: float | None = None
        self._target: np.ndarray | None = None
        self._last_input: float | None = None
        self._input_valid = False
        self._valid_since: float | None = None
        self._hold_target: np.ndarray | None = None
        self._engage_start: float | None = None

    @property
    def state(self) -> FilterState:
        return self._state

    @property
    def position(self) -> np.ndarray:
        return self._position.copy()

    # ------------------------------------------------------------------ inputs
    def update(self, stamp: float, target: np.ndarray | None, tracking_state: int) -> bool:
        """Record one retargeted target (``None`` when retargeting failed) with its tracking state.

        Returns whether the input counts as valid tracking.  Inputs older than the last
        one are ignored (returns False).
        """
        stamp = float(stamp)
        if self._last_input is not None and stamp < self._last_input:
            return False
        valid = tracking_state in self._engage_states and target is not None
        if valid:
            target = np.asarray(target, dtype=float)
            valid = target.shape == self._position.shape and bool(np.all(np.isfinite(target)))
        self._last_input = stamp
        self._input_valid = valid
        if valid:
            self._target = np.clip(target, self.limits.lower, self.limits.upper)
            if self._valid_since is None:
                self._valid_since = stamp
        else:
            self._valid_since = None
        return valid

    def tracking_valid(self, now: float) -> bool:
        """Valid input that is not stale at time ``now``."""
        if not self._input_valid or self._last_input is None:
            return False
        return (now - self._last_input) * 1e3 <= self.config.stale_timeout_ms

    # ------------------------------------------------------------------ control tick
    def step(self, now: float) -> SafetyCommand:
        """Advance to time ``now`` and return the command to send."""
        now = float(now)
        if self._last_step is not None and now <= self._last_step:
            return SafetyCommand(now, self._position.copy(), np.zeros_like(self._position), self._state,
                                 self.tracking_valid(now))
        dt = 0.0 if self._last_step is None else min(now - self._last_step, self.max_step_s)
        self._last_step = now
        valid = self.tracking_valid(now)
        if not valid:  # an invalid or stale input breaks the valid streak
            self._valid_since = None
        confirmed = valid and self._valid_since is not None and \
            (now - self._valid_since) * 1e3 >= self.config.engage_confirm_ms

        self._transition(valid, confirmed, now)

        target, scale = self._position, 1.0
        if self._state in (FilterState.ENGAGING, FilterState.TRACKING):
            target = self._target
            if self._state is FilterState.ENGAGING:
                scale = self._engage_scale(now)
        elif self._state is FilterState.HOLDING:
            target = self._hold_target
        elif self._state is FilterState.OPENING:
            target, scale = self.open_pose, self.config.lost_velocity_scale
        elif self._state is FilterState.IDLE:
            target = self._hold_target if self._hold_target is not None else self._position
        if dt > 0:
            self._position, self._velocity = rate_limit(self._position, self._velocity, target, dt,
                                                        self.limits, scale)
        if self._state is FilterState.ENGAGING and \
                np.abs(self._target - self._position).max() <= self.config.engage_tolerance:
            self._state = FilterState.TRACKING
        return SafetyCommand(now, self._position.copy(), self._velocity.copy(), self._state, valid)

    def _engage_scale(self, now: float) -> float:
        """Speed fraction while ENGAGING: ``engage_velocity_scale`` rising linearly to 1
        over ``engage_ramp_ms`` (so a fast-moving target is eventually caught)."""
        start = self.config.engage_velocity_scale
        ramp_s = self.config.engage_ramp_ms * 1e-3
        if ramp_s <= 0:
            return 1.0
        return min(1.0, start + (1.0 - start) * max(0.0, now - self._engage_start) / ramp_s)

    def _transition(self, valid: bool, confirmed: bool, now: float) -> None:
        state = self._state
        if state in (FilterState.ENGAGING, FilterState.TRACKING):
            if not valid:
                self._enter_lost()
        elif confirmed:  # IDLE, HOLDING, OPENING
            self._state = FilterState.ENGAGING
            self._engage_start = now
            self._hold_target = None

    def _enter_lost(self) -> None:
        if self.config.lost_behavior == "open":
            self._state = FilterState.OPENING
        else:
            self._state = FilterState.HOLDING
            # Stop where the current motion can stop at the acceleration limit.
            stop = self._position + self._velocity * np.abs(self._velocity) / (2.0 * self.limits.acceleration)
            self._hold_target = np.clip(stop, self.limits.lower, self.limits.upper)


# ------------------------------------------------------------------------------ pinch events
@dataclass(frozen=True)
class PinchEvent:
    """A pinch between the thumb tip and ``finger``'s tip started or ended."""

    stamp: float
    finger: str
    kind: str  # "start" | "end"
    distance: float  # m, human thumb-finger tip distance at the event (nan on release-on-lost)


class PinchDetector:
    """Per-finger pinch state with hysteresis on the human thumb-tip <-> finger-tip distance.

    A pinch starts when the distance drops below ``start_distance * hand_scale`` and ends
    when it rises above ``end_distance * hand_scale`` (``end > start``).  Non-finite
    distances change nothing; invalid tracking ends active pinches when ``release_on_lost``.
    """

    def __init__(self, config: PinchConfig):
        self.config = config
        self._thumb = LANDMARK_INDEX["thumb_tip"]
        self._tips = np.array([LANDMARK_INDEX[f"{f}_tip"] for f in config.fingers])
        self._active = np.zeros(len(config.fingers), dtype=bool)

    @property
    def active(self) -> dict[str, bool]:
        return {f: bool(a) for f, a in zip(self.config.fingers, self._active)}

    def reset(self) -> None:
        self._active[:] = False

    def update(self, stamp: float, landmarks: np.ndarray | None, valid: bool = True,
               hand_scale: float = 1.0) -> list[PinchEvent]:
        """Feed one frame of 21 landmarks (m); returns the pinch start/end events it causes."""
        events: list[PinchEvent] = []
        if not valid or landmarks is None:
            if self.config.release_on_lost:
                for i in np.flatnonzero(self._active):
                    events.append(PinchEvent(float(stamp), self.config.fingers[i], "end", float("nan")))
                self._active[:] = False
            return events
        points = np.asarray(landmarks, dtype=float)
        distance = np.linalg.norm(points[self._tips] - points[self._thumb], axis=1)
        finite = np.isfinite(distance)
        start = finite & ~self._active & (distance < self.config.start_distance * hand_scale)
        end = finite & self._active & (distance > self.config.end_distance * hand_scale)
        for i in np.flatnonzero(start | end):
            events.append(PinchEvent(float(stamp), self.config.fingers[i], "start" if start[i] else "end",
                                     float(distance[i])))
        self._active = (self._active | start) & ~end
        return events
