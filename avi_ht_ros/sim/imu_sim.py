"""Glove IMU simulation at 200 Hz: exact kinematics, then a consumer-MEMS error model.

Pipeline (:func:`simulate_glove_imu` runs all of it):

1. **Sample instants.** The glove samples on its own clock: uniformly in *device* time
   (200 Hz nominal).  :class:`DeviceClock` maps device ↔ true time (offset + drift in
   ppm); :meth:`DeviceClock.sample_schedule` gives the device stamps (µs, what the glove
   sends) and the true instants at which the sensors are sampled.
2. **Kinematics** (:func:`ideal_imu_signals`). From world-frame sensor poses
   ``R_ws(t)``, ``p_ws(t)`` (a callable ``pose_at(times) -> (R [T,S,3,3], p [T,S,3])``;
   dense samples go through :func:`pose_function_from_samples`):

   * accelerometer: specific force in the sensor frame ``f_s = R_wsᵀ (p̈_ws − g)``,
     ``g = (0, 0, −9.81)`` — a static sensor reads +9.81 m/s² along its axis pointing up;
   * gyroscope: ``ω_s = vee(R_wsᵀ Ṙ_ws)``, the angular rate in the sensor frame.

   Derivatives come from the pose callable evaluated on a 5-point stencil
   ``t + {−2,−1,0,1,2}·h`` (default ``h = 0.25 ms``): ``p̈`` by the 4th-order central
   difference ``(−p₂ + 16p₁ − 30p₀ + 16p₋₁ − p₋₂)/(12h²)``; ``ω`` by the 4th-order central
   difference ``(−φ₂ + 8φ₁ − 8φ₋₁ + φ₋₂)/(12h)`` of the rotation-log curve
   ``φ(τ) = log(R(t)ᵀ R(t+τ))`` (``φ(0) = 0``, ``φ'(0) = ω_s`` exactly).

   *Truncation error:* for smooth (C⁶) motion ``|Δf| ≤ h⁴/90·max|p⁽⁶⁾|`` and
   ``|Δω| ≤ h⁴/30·max|φ⁽⁵⁾|``: for a 10 Hz, 5 cm oscillation (p⁽⁶⁾ ≈ 3·10⁹ m/s⁶) that is
   1.3·10⁻⁷ m/s².  If the trajectory is only C² (e.g. cubic splines: jerk jumps by ``J``
   at a knot) the error within 2h of a knot is first order, at most ``J·h/9`` (computed
   for this stencil; ≈ 0.04 m/s² for a 1500 m/s³ jerk jump at h = 0.25 ms), hence the
   small default ``h``.  *Round-off:*
   ``≈ 5.3·ε·|p|/h² ≈ 2·10⁻⁸ m/s²`` per metre of position magnitude and ``≈ 1.5·ε/h``
   rad/s (ε = 2.2·10⁻¹⁶) — both far below any sensor noise.
3. **Error model** (:class:`ImuErrorModel`, YAML presets in ``config/imu_noise.yaml``;
   :class:`SimulatedImuArray` applies it), per sensor and axis::

       y = (I + k·(D_sf + E_mis)) · x  +  k·(b_on + b_gm(t) + b_rw(t))  +  k·n(t)

   ``x`` the ideal signal, ``D_sf`` diagonal scale-factor errors, ``E_mis`` zero-diagonal
   axis misalignment/cross-axis coupling (general small matrix: its antisymmetric part is
   a mounting rotation, the symmetric part non-orthogonality), ``b_on`` turn-on bias,
   ``b_gm`` first-order Gauss–Markov bias (bias instability), ``b_rw`` bias random walk,
   ``n`` white noise, and ``k`` the ``noise_scale`` multiplier (0…2 for the sensitivity
   study; the standard-normal draws do not depend on ``k``, so runs with the same seed
   differ *only* by the error magnitude).  Then the ADC: saturation at the full-scale range
   and quantisation to ``adc_bits`` (raw counts are int16 for the glove driver to encode,
   ``value = counts · lsb``).  Then availability: per-sensor dropouts (the glove resends
   the previous sample → ``STALE``) and dead sensors (zeros, ``DEAD``).

Noise-density convention: ``noise_density`` ``N`` is the continuous-time white-noise
intensity (Kalibr / IEEE-952 convention): a sample at rate ``f_s`` has standard deviation
``N·√f_s``, and the Allan deviation of the white part is ``N/√τ`` (``N`` at τ = 1 s).
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.signal import lfilter
from scipy.spatial.transform import Rotation, RotationSpline

from avi_ht_ros.common.config_file import load_yaml_mapping
from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.glove_model import STANDARD_GRAVITY as G_UNIT
from avi_ht_ros.common.imu import GRAVITY_MAGNITUDE, ImuStatus
from avi_ht_ros.common.paths import config_path

PoseFunction = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""``pose_at(times [T]) -> (R_ws [T, S, 3, 3], p_ws [T, S, 3])``: world pose of every sensor frame."""

GRAVITY_WORLD = np.array([0.0, 0.0, -GRAVITY_MAGNITUDE])
"""Gravity vector in the z-up world frame, m/s²."""

GAUSS_MARKOV_ALLAN_PEAK = 0.6174
"""Maximum Allan deviation of a first-order Gauss–Markov process of unit standard deviation
(reached at τ ≈ 1.89 × correlation time).  A datasheet "bias instability" B (the flat
Allan-deviation floor) is modelled as a Gauss–Markov bias with σ = B / 0.6174."""

DEFAULT_RATE_HZ = 200.0
DEFAULT_STENCIL_STEP_S = 2.5e-4
IMU_NOISE_CONFIG = "imu_noise.yaml"

# ======================================================================================
# Clock
# ======================================================================================


@dataclasses.dataclass(frozen=True)
class DeviceClock:
    """The glove's free-running device clock: ``device = offset_s + (1 + drift_ppm·1e-6)·true``.

    ``offset_s`` is the device time at true time 0 (must keep device times ≥ 0 over the
    simulated span: the device stamps are unsigned µs); ``drift_ppm`` > 0 means the device
    clock runs fast.
    """

    offset_s: float = 0.0
    drift_ppm: float = 0.0

    def __post_init__(self):
        if not math.isfinite(self.offset_s):
            raise ConfigError("DeviceClock.offset_s", f"must be finite, got {self.offset_s!r}")
        if not math.isfinite(self.drift_ppm) or abs(self.drift_ppm) >= 1e5:
            raise ConfigError("DeviceClock.drift_ppm", f"must be finite and |drift| < 1e5 ppm, got {self.drift_ppm!r}")

    @property
    def rate(self) -> float:
        """Device seconds per true second."""
        return 1.0 + self.drift_ppm * 1e-6

    def device_from_true(self, true_s: np.ndarray | float) -> np.ndarray:
        """Device time (s) of true time(s) ``true_s`` (s)."""
        return self.offset_s + self.rate * np.asarray(true_s, dtype=np.float64)

    def true_from_device(self, device_s: np.ndarray | float) -> np.ndarray:
        """True time (s) of device time(s) ``device_s`` (s); inverse of :meth:`device_from_true`."""
        return (np.asarray(device_s, dtype=np.float64) - self.offset_s) / self.rate

    def sample_schedule(
        self, start_true_s: float, end_true_s: float, rate_hz: float = DEFAULT_RATE_HZ
    ) -> tuple[np.ndarray, np.ndarray]:
        """Glove sampling instants in ``[start_true_s, end_true_s]``, uniform in device time.

        The device samples at ``k / rate_hz`` device seconds (``k`` integer: the sample grid
        is fixed to the device clock).  Returns ``(device_time_us [T] uint64, true_time_s
        [T] float64)``: the µs stamps the glove sends (rounded to the µs) and the exact
        true instants at which the sensors are sampled.
        """
        if not (math.isfinite(rate_hz) and rate_hz > 0):
            raise ConfigError("rate_hz", f"must be > 0, got {rate_hz!r}")
        if not end_true_s >= start_true_s:
            raise ConfigError("end_true_s", f"must be >= start_true_s ({start_true_s}), got {end_true_s}")
        d0, d1 = self.device_from_true(start_true_s), self.device_from_true(end_true_s)
        k0 = math.ceil(float(d0) * rate_hz - 1e-9)
        k1 = math.floor(float(d1) * rate_hz + 1e-9)
        device_s = np.arange(k0, k1 + 1, dtype=np.float64) / rate_hz
        if device_s.size and device_s[0] < 0:
            raise ConfigError("DeviceClock.offset_s", "device time would be negative: increase offset_s")
        device_us = np.rint(device_s * 1e6).astype(np.uint64)
        return device_us, self.true_from_device(device_s)


# ======================================================================================
# Kinematics
# ======================================================================================


@dataclasses.dataclass(frozen=True)
class KinematicImuSignals:
    """Error-free IMU readings: ``accel`` specific force, ``gyro`` angular rate, ``[T, S, 3]``, sensor frame, SI."""

    accel: np.ndarray
    gyro: np.ndarray


def pose_function_from_samples(times: np.ndarray, rotations: np.ndarray, positions: np.ndarray) -> PoseFunction:
    """A C² pose callable through dense samples (``times [K]``, ``R [K,S,3,3]``, ``p [K,S,3]``).

    Rotations: one ``scipy`` :class:`RotationSpline` per sensor (cubic in rotation-vector
    space, continuous angular rate and acceleration); positions: a not-a-knot
    :class:`CubicSpline`.  Accuracy of derived IMU signals is then that of the spline fit
    (O(Δt²) in acceleration for sample spacing Δt); query within ``[times[0] + 2h,
    times[-1] − 2h]`` to avoid spline extrapolation in the derivative stencil.
    """
    times = np.asarray(times, dtype=np.float64)
    rotations = np.asarray(rotations, dtype=np.float64)
    positions = np.asarray(positions, dtype=np.float64)
    if times.ndim != 1 or times.size < 4:
        raise ValueError(f"pose_function_from_samples: need >= 4 sample times, got shape {times.shape}")
    if not np.all(np.diff(times) > 0):
        raise ValueError("pose_function_from_samples: times must be strictly increasing")
    k, s = times.size, rotations.shape[1] if rotations.ndim == 4 else -1
    if rotations.shape != (k, s, 3, 3) or positions.shape != (k, s, 3):
        raise ValueError(
            f"pose_function_from_samples: expected R [{k},S,3,3] and p [{k},S,3], got {rotations.shape}, {positions.shape}"
        )
    rot_splines = [RotationSpline(times, Rotation.from_matrix(rotations[:, j])) for j in range(s)]
    pos_spline = CubicSpline(times, positions, axis=0)

    def pose_at(query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        query = np.asarray(query, dtype=np.float64)
        rot = np.stack([sp(query).as_matrix() for sp in rot_splines], axis=1)
        return rot, pos_spline(query)

    return pose_at


_OFFSETS = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
_D2_WEIGHTS = np.array([-1.0, 16.0, -30.0, 16.0, -1.0]) / 12.0  # second derivative, × 1/h²
_D1_WEIGHTS = np.array([1.0, -8.0, 0.0, 8.0, -1.0]) / 12.0  # first derivative, × 1/h
_OFF_CENTRE = np.array([0, 1, 3, 4])


def ideal_imu_signals(
    pose_at: PoseFunction,
    times: np.ndarray,
    *,
    step_s: float = DEFAULT_STENCIL_STEP_S,
    chunk_size: int = 2048,
) -> KinematicImuSignals:
    """Exact (to the stated truncation error) accelerometer and gyroscope signals at ``times``.

    ``pose_at`` is evaluated at ``5·T`` instants (stencil ``t + {−2..2}·step_s``), in chunks
    of ``chunk_size`` sample times to bound memory.  See the module docstring for formulas
    and error bounds.
    """
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1:
        raise ValueError(f"ideal_imu_signals: times must be 1-D, got shape {times.shape}")
    if not (math.isfinite(step_s) and step_s > 0):
        raise ConfigError("step_s", f"must be > 0, got {step_s!r}")
    accel_parts, gyro_parts = [], []
    for lo in range(0, max(times.size, 1), chunk_size):
        t = times[lo : lo + chunk_size]
        if t.size == 0:
            break
        stencil_t = (t[:, None] + _OFFSETS[None, :] * step_s).reshape(-1)
        rot, pos = pose_at(stencil_t)
        rot = np.asarray(rot, dtype=np.float64)
        pos = np.asarray(pos, dtype=np.float64)
        n = t.size
        s = rot.shape[1]
        if rot.shape != (5 * n, s, 3, 3) or pos.shape != (5 * n, s, 3):
            raise ValueError(
                f"pose_at returned R {rot.shape} and p {pos.shape} for {5 * n} times; expected [{5 * n},S,3,3], [{5 * n},S,3]"
            )
        rot = rot.reshape(n, 5, s, 3, 3)
        pos = pos.reshape(n, 5, s, 3)
        r_center = rot[:, 2]  # [n, S, 3, 3]
        accel_world = np.einsum("k,nksi->nsi", _D2_WEIGHTS, pos) / step_s**2
        accel_parts.append(np.einsum("nsji,nsj->nsi", r_center, accel_world - GRAVITY_WORLD))
        # phi_k = log(R(t)^T R(t + k h)) for k = -2, -1, 1, 2 (phi_0 = 0 has weight 0)
        rel = np.swapaxes(r_center, -1, -2)[:, None] @ rot[:, _OFF_CENTRE]
        phi = Rotation.from_matrix(rel.reshape(-1, 3, 3)).as_rotvec().reshape(n, 4, s, 3)
        gyro_parts.append(np.einsum("k,nksi->nsi", _D1_WEIGHTS[_OFF_CENTRE], phi) / step_s)
    if not accel_parts:
        return KinematicImuSignals(np.zeros((0, 0, 3)), np.zeros((0, 0, 3)))
    return KinematicImuSignals(np.concatenate(accel_parts), np.concatenate(gyro_parts))


# ======================================================================================
# Error model: units and configuration
# ======================================================================================

_G = G_UNIT  # the unit "g" of datasheet figures (9.80665 m/s²), not the world's gravity
_DEG = math.pi / 180.0

# quantity kind -> {normalised unit spelling: factor to SI}
_UNITS: dict[str, dict[str, float]] = {
    "accel_density": {"m/s^2/sqrt(hz)": 1.0, "ug/sqrt(hz)": 1e-6 * _G, "mg/sqrt(hz)": 1e-3 * _G},
    "gyro_density": {
        "rad/s/sqrt(hz)": 1.0,
        "deg/s/sqrt(hz)": _DEG,
        "dps/sqrt(hz)": _DEG,
        "deg/h/sqrt(hz)": _DEG / 3600.0,
    },
    "accel": {"m/s^2": 1.0, "g": _G, "mg": 1e-3 * _G, "ug": 1e-6 * _G},
    "gyro": {"rad/s": 1.0, "deg/s": _DEG, "dps": _DEG, "deg/h": _DEG / 3600.0},
    "accel_rw": {"m/s^2/sqrt(s)": 1.0, "mg/sqrt(s)": 1e-3 * _G, "ug/sqrt(s)": 1e-6 * _G},
    "gyro_rw": {"rad/s/sqrt(s)": 1.0, "deg/s/sqrt(s)": _DEG, "deg/h/sqrt(h)": _DEG / 3600.0 / 60.0},
    "ratio": {"": 1.0, "%": 1e-2, "ppm": 1e-6},
    "angle": {"rad": 1.0, "mrad": 1e-3, "deg": _DEG, "%": 1e-2},
    "time": {"s": 1.0, "ms": 1e-3},
    "samples": {"": 1.0, "samples": 1.0},
}
_SI_UNIT = {
    "accel_density": "m/s^2/sqrt(Hz)",
    "gyro_density": "rad/s/sqrt(Hz)",
    "accel": "m/s^2",
    "gyro": "rad/s",
    "accel_rw": "m/s^2/sqrt(s)",
    "gyro_rw": "rad/s/sqrt(s)",
    "ratio": "(fraction)",
    "angle": "rad",
    "time": "s",
    "samples": "samples",
}
_QUANTITY_RE = re.compile(r"^\s*([-+0-9.eE]+|inf)\s*(.*?)\s*$")


def parse_quantity(value: Any, kind: str, where: str) -> float:
    """A YAML quantity as an SI float: a bare number is SI; a string is ``"<number> <unit>"``.

    Units per kind are in ``_UNITS`` (e.g. ``"180 ug/sqrt(Hz)"``, ``"0.006 deg/s/sqrt(Hz)"``,
    ``"16 g"``, ``"2000 deg/s"``, ``"0.5 %"``, ``"5 deg/h"``).  Case-insensitive; ``µ``,
    ``²`` and ``√Hz`` are accepted for ``u``, ``^2`` and ``sqrt(Hz)``.
    """
    if isinstance(value, bool):
        raise ConfigError(where, f"expected a number or '<number> <unit>', got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(where, f"expected a number or '<number> <unit>', got {value!r}")
    match = _QUANTITY_RE.match(value)
    if not match:
        raise ConfigError(where, f"cannot parse quantity {value!r}")
    try:
        number = float(match.group(1))
    except ValueError:
        raise ConfigError(where, f"cannot parse number in {value!r}") from None
    unit = match.group(2).lower().replace(" ", "").replace("²", "^2").replace("µ", "u").replace("μ", "u")
    unit = re.sub(r"√\(?(hz|s|h)\)?", r"sqrt(\1)", unit)
    table = _UNITS[kind]
    if unit not in table:
        raise ConfigError(where, f"unit {match.group(2)!r} not allowed here (SI: {_SI_UNIT[kind]}); allowed: {sorted(table)}")
    return number * table[unit]


@dataclasses.dataclass(frozen=True)
class ChannelErrorModel:
    """Error parameters of one sensor type (accelerometer or gyroscope), SI units.

    Quantities in SI of the channel (``q`` = m/s² for accel, rad/s for gyro):

    * ``noise_density`` — white noise, q/√Hz (sample σ = N·√rate);
    * ``bias_instability`` — Allan-deviation floor, q; Gauss–Markov bias with σ = B/0.6174 and
      correlation time ``bias_correlation_time`` (s);
    * ``bias_random_walk`` — q/√s (bias std grows as K·√t);
    * ``turn_on_bias`` — σ of the constant per-sensor bias, q;
    * ``scale_factor`` — σ of the per-axis scale-factor error, fraction;
    * ``misalignment`` — σ of each off-diagonal coupling term, rad (small-angle);
    * ``full_scale`` — ± range, q; ``adc_bits`` — converter resolution (≤ 16: int16
      counts, ``lsb = full_scale / 2**(adc_bits−1)``).
    """

    noise_density: float = 0.0
    bias_instability: float = 0.0
    bias_correlation_time: float = 100.0
    bias_random_walk: float = 0.0
    turn_on_bias: float = 0.0
    scale_factor: float = 0.0
    misalignment: float = 0.0
    full_scale: float = 16.0 * _G
    adc_bits: int = 16

    @property
    def lsb(self) -> float:
        """Value of one ADC count (SI)."""
        return self.full_scale / 2 ** (self.adc_bits - 1)

    @property
    def count_range(self) -> tuple[int, int]:
        """Smallest and largest raw count."""
        half = 2 ** (self.adc_bits - 1)
        return -half, half - 1

    @property
    def gauss_markov_sigma(self) -> float:
        """Stationary σ of the Gauss–Markov bias, SI."""
        return self.bias_instability / GAUSS_MARKOV_ALLAN_PEAK


_CHANNEL_KINDS = {
    "accel": {
        "noise_density": "accel_density",
        "bias_instability": "accel",
        "bias_correlation_time": "time",
        "bias_random_walk": "accel_rw",
        "turn_on_bias": "accel",
        "scale_factor": "ratio",
        "misalignment": "angle",
        "full_scale": "accel",
    },
    "gyro": {
        "noise_density": "gyro_density",
        "bias_instability": "gyro",
        "bias_correlation_time": "time",
        "bias_random_walk": "gyro_rw",
        "turn_on_bias": "gyro",
        "scale_factor": "ratio",
        "misalignment": "angle",
        "full_scale": "gyro",
    },
}
_CHANNEL_DEFAULTS = {
    "accel": ChannelErrorModel(),
    "gyro": ChannelErrorModel(full_scale=2000.0 * _DEG),
}


def _channel_from_mapping(channel: str, data: Any, where: str) -> ChannelErrorModel:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(where, f"expected a mapping, got {type(data).__name__}")
    kinds = _CHANNEL_KINDS[channel]
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key == "adc_bits":
            if isinstance(raw, bool) or not isinstance(raw, int) or not 2 <= raw <= 16:
                raise ConfigError(f"{where}.adc_bits", f"must be an integer in 2..16 (int16 counts), got {raw!r}")
            values[key] = raw
            continue
        if key not in kinds:
            raise ConfigError(f"{where}.{key}", f"unknown key; known: {sorted([*kinds, 'adc_bits'])}")
        q = parse_quantity(raw, kinds[key], f"{where}.{key}")
        if not math.isfinite(q) or q < 0:
            raise ConfigError(f"{where}.{key}", f"must be finite and >= 0, got {raw!r}")
        if key in ("full_scale", "bias_correlation_time") and q <= 0:
            raise ConfigError(f"{where}.{key}", f"must be > 0, got {raw!r}")
        values[key] = q
    return dataclasses.replace(_CHANNEL_DEFAULTS[channel], **values)


@dataclasses.dataclass(frozen=True)
class ImuErrorModel:
    """Full sensor model of every glove IMU (same parameters for all, drawn per sensor).

    ``quantize``/``saturate`` switch the ADC effects on the float outputs (raw counts are
    always produced, rounded and clipped to the int16 range, for the wire format).
    ``dropout_rate`` (scalar or one per sensor) is the long-run fraction of samples a
    sensor does not update, in bursts of mean length ``mean_dropout_length`` samples
    (two-state Markov chain).  ``dead_sensors`` maps sensor index → time (s after the first
    sample) from which it is dead.  ``noise_scale`` multiplies every error magnitude
    (noise, biases, scale factor, misalignment) but not the ADC nor availability.
    """

    name: str = "custom"
    accel: ChannelErrorModel = _CHANNEL_DEFAULTS["accel"]
    gyro: ChannelErrorModel = _CHANNEL_DEFAULTS["gyro"]
    quantize: bool = True
    saturate: bool = True
    dropout_rate: float | tuple[float, ...] = 0.0
    mean_dropout_length: float = 1.0
    dead_sensors: Mapping[int, float] = dataclasses.field(default_factory=dict)
    noise_scale: float = 1.0

    def __post_init__(self):
        where = f"imu model {self.name!r}"
        if not (math.isfinite(self.noise_scale) and self.noise_scale >= 0):
            raise ConfigError(f"{where}.noise_scale", f"must be finite and >= 0, got {self.noise_scale!r}")
        rates = np.atleast_1d(np.asarray(self.dropout_rate, dtype=np.float64))
        if rates.ndim != 1 or not np.all((rates >= 0) & (rates < 1)):
            raise ConfigError(f"{where}.dropout_rate", f"must be in [0, 1) (scalar or per sensor), got {self.dropout_rate!r}")
        if not (math.isfinite(self.mean_dropout_length) and self.mean_dropout_length >= 1):
            raise ConfigError(f"{where}.mean_dropout_length", f"must be >= 1 sample, got {self.mean_dropout_length!r}")
        for idx, onset in self.dead_sensors.items():
            if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)) or idx < 0:
                raise ConfigError(f"{where}.dead_sensors", f"sensor index must be an integer >= 0, got {idx!r}")
            if not (isinstance(onset, (int, float)) and math.isfinite(onset) and onset >= 0):
                raise ConfigError(f"{where}.dead_sensors", f"onset of sensor {idx} must be a time >= 0 s, got {onset!r}")

    def scaled(self, noise_scale: float) -> ImuErrorModel:
        """This model with another ``noise_scale`` (0 = error-free signals through the same ADC)."""
        return dataclasses.replace(self, noise_scale=float(noise_scale))

    def with_faults(
        self,
        *,
        dropout_rate: float | tuple[float, ...] | None = None,
        mean_dropout_length: float | None = None,
        dead_sensors: Mapping[int, float] | list[int] | None = None,
    ) -> ImuErrorModel:
        """This model with other availability faults (``dead_sensors`` list = dead from t = 0)."""
        changes: dict[str, Any] = {}
        if dropout_rate is not None:
            changes["dropout_rate"] = dropout_rate if np.isscalar(dropout_rate) else tuple(dropout_rate)
        if mean_dropout_length is not None:
            changes["mean_dropout_length"] = float(mean_dropout_length)
        if dead_sensors is not None:
            changes["dead_sensors"] = (
                dict(dead_sensors) if isinstance(dead_sensors, Mapping) else {int(i): 0.0 for i in dead_sensors}
            )
        return dataclasses.replace(self, **changes)

    def with_imu_spec(self, spec: Any, *, noise_density: bool = False) -> ImuErrorModel:
        """This model with the ADC (ranges, bits) of a glove config's IMU spec.

        ``spec`` is a ``avi_ht_ros.common.glove_model.ImuSpec`` (attributes ``accel_range``,
        ``gyro_range`` SI, ``adc_bits``; same ``lsb = range / 2**(bits−1)``): use it so the
        simulated raw counts follow the same scaling the glove driver decodes with.  With
        ``noise_density=True`` the spec's white-noise densities replace the preset's too.
        """
        if not isinstance(spec.adc_bits, (int, np.integer)) or not 2 <= spec.adc_bits <= 16:
            raise ConfigError("ImuSpec.adc_bits", f"must be an integer in 2..16 (int16 counts), got {spec.adc_bits!r}")
        changes: list[dict[str, Any]] = []
        for full_scale, density in ((spec.accel_range, spec.accel_noise_density), (spec.gyro_range, spec.gyro_noise_density)):
            change: dict[str, Any] = {"full_scale": float(full_scale), "adc_bits": int(spec.adc_bits)}
            if noise_density:
                change["noise_density"] = float(density)
            changes.append(change)
        return dataclasses.replace(
            self, accel=dataclasses.replace(self.accel, **changes[0]), gyro=dataclasses.replace(self.gyro, **changes[1])
        )

    def measurement_variance(self, rate_hz: float = DEFAULT_RATE_HZ) -> tuple[float, float]:
        """Per-axis white-noise variance of one sample ``(accel (m/s²)², gyro (rad/s)²)``.

        ``(k·N)²·rate`` plus the quantisation variance ``lsb²/12`` when quantising: what the
        driver puts in ``sensor_msgs/Imu`` covariances.
        """
        out = []
        for ch in (self.accel, self.gyro):
            var = (self.noise_scale * ch.noise_density) ** 2 * rate_hz
            if self.quantize:
                var += ch.lsb**2 / 12.0
            out.append(var)
        return out[0], out[1]

    @classmethod
    def from_mapping(cls, data: Any, name: str, where: str) -> ImuErrorModel:
        """Build from one (already inheritance-resolved) preset mapping; ``where`` names it in errors."""
        if not isinstance(data, Mapping):
            raise ConfigError(where, f"expected a mapping, got {type(data).__name__}")
        known = {"accel", "gyro", "quantize", "saturate", "dropout_rate", "mean_dropout_length", "dead_sensors", "noise_scale", "description"}
        for key in data:
            if key not in known:
                raise ConfigError(f"{where}.{key}", f"unknown key; known: {sorted(known)}")
        kwargs: dict[str, Any] = {"name": name}
        for ch in ("accel", "gyro"):
            kwargs[ch] = _channel_from_mapping(ch, data.get(ch), f"{where}.{ch}")
        for flag in ("quantize", "saturate"):
            if flag in data:
                if not isinstance(data[flag], bool):
                    raise ConfigError(f"{where}.{flag}", f"must be true or false, got {data[flag]!r}")
                kwargs[flag] = data[flag]
        if "dropout_rate" in data:
            rate = data["dropout_rate"]
            if isinstance(rate, list):
                kwargs["dropout_rate"] = tuple(parse_quantity(r, "ratio", f"{where}.dropout_rate") for r in rate)
            else:
                kwargs["dropout_rate"] = parse_quantity(rate, "ratio", f"{where}.dropout_rate")
        if "mean_dropout_length" in data:
            kwargs["mean_dropout_length"] = parse_quantity(data["mean_dropout_length"], "samples", f"{where}.mean_dropout_length")
        if "noise_scale" in data:
            kwargs["noise_scale"] = parse_quantity(data["noise_scale"], "ratio", f"{where}.noise_scale")
        dead = data.get("dead_sensors")
        if dead is not None:
            if isinstance(dead, list):
                kwargs["dead_sensors"] = {i: 0.0 for i in dead}
            elif isinstance(dead, Mapping):
                kwargs["dead_sensors"] = {i: parse_quantity(t, "time", f"{where}.dead_sensors.{i}") for i, t in dead.items()}
            else:
                raise ConfigError(f"{where}.dead_sensors", f"expected a list of indices or index: onset mapping, got {dead!r}")
        try:
            return cls(**kwargs)
        except ConfigError as exc:  # re-anchor "imu model 'x'.key" at the file location
            key = exc.where.rsplit(".", 1)[-1]
            raise ConfigError(f"{where}.{key}", exc.problem) from None


def _resolve_preset(presets: Mapping[str, Any], name: str, where: str, seen: tuple[str, ...] = ()) -> dict:
    if name not in presets:
        raise ConfigError(where, f"unknown preset {name!r}; available: {sorted(presets)}")
    if name in seen:
        raise ConfigError(where, f"preset inheritance cycle: {' -> '.join((*seen, name))}")
    data = presets[name]
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}.{name}", f"expected a mapping, got {type(data).__name__}")
    data = dict(data)
    base_name = data.pop("base", None)
    if base_name is None:
        return data
    merged = _resolve_preset(presets, base_name, where, (*seen, name))
    for key, value in data.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _load_presets(path: str | pathlib.Path | None) -> tuple[pathlib.Path, Mapping[str, Any]]:
    file = config_path(IMU_NOISE_CONFIG) if path is None else pathlib.Path(path)
    doc = load_yaml_mapping(file)
    if not isinstance(doc.get("presets"), Mapping):
        raise ConfigError(str(file), "expected a top-level mapping with a 'presets' mapping")
    return file, doc["presets"]


def available_presets(path: str | pathlib.Path | None = None) -> list[str]:
    """Preset names in an IMU noise config (default: shipped ``config/imu_noise.yaml``)."""
    return sorted(_load_presets(path)[1])


def load_imu_error_model(
    preset: str = "native_noise_floor",
    path: str | pathlib.Path | None = None,
    *,
    noise_scale: float | None = None,
) -> ImuErrorModel:
    """Load preset ``preset`` from ``path`` (default shipped ``config/imu_noise.yaml``).

    Presets may inherit with ``base: <other preset>`` (mappings merged one level deep).
    ``noise_scale`` overrides the preset's.  Bad content raises :class:`ConfigError`
    naming ``<file>:presets.<preset>.<key>``.
    """
    file, presets = _load_presets(path)
    where = f"{file}:presets"
    data = _resolve_preset(presets, preset, where)
    model = ImuErrorModel.from_mapping(data, preset, f"{where}.{preset}")
    return model if noise_scale is None else model.scaled(noise_scale)


# ======================================================================================
# Error model: application
# ======================================================================================


@dataclasses.dataclass(frozen=True)
class ImuMeasurements:
    """Simulated glove IMU output, ``T`` samples × ``S`` sensors.

    ``accel``/``gyro`` float64 ``[T, S, 3]`` (SI; equal to ``counts · lsb`` when the model
    quantises), ``accel_counts``/``gyro_counts`` int16 ``[T, S, 3]`` raw ADC counts,
    ``accel_lsb``/``gyro_lsb`` SI value of one count, ``status`` uint8 ``[T, S]``
    (:class:`ImuStatus`), and ground truth: ``accel_true``/``gyro_true`` the error-free
    signals, ``accel_bias``/``gyro_bias`` the total additive bias (turn-on + instability +
    random walk, after ``noise_scale``) at each sample.
    """

    accel: np.ndarray
    gyro: np.ndarray
    accel_counts: np.ndarray
    gyro_counts: np.ndarray
    accel_lsb: float
    gyro_lsb: float
    status: np.ndarray
    accel_true: np.ndarray
    gyro_true: np.ndarray
    accel_bias: np.ndarray
    gyro_bias: np.ndarray


@dataclasses.dataclass(frozen=True)
class _ChannelOutput:
    value: np.ndarray
    counts: np.ndarray
    saturated: np.ndarray  # [T, S]
    bias: np.ndarray


class SimulatedImuArray:
    """``num_sensors`` physical IMUs with their own constant errors, drawn once at construction.

    Construction draws (from ``rng``, in a fixed order, as standard normals scaled only
    when measuring) each sensor's turn-on bias, scale-factor and misalignment errors —
    the same "physical glove" for every :meth:`measure` call.  Each :meth:`measure` call
    is one power-on run: time-varying errors (white noise, Gauss–Markov bias from its
    stationary distribution, random-walk bias from 0, dropouts) are drawn from the same
    ``rng``.  Everything is deterministic per generator state.
    """

    def __init__(
        self,
        model: ImuErrorModel,
        num_sensors: int,
        rng: np.random.Generator,
        rate_hz: float = DEFAULT_RATE_HZ,
    ):
        if int(num_sensors) != num_sensors or num_sensors < 1:
            raise ConfigError("SimulatedImuArray.num_sensors", f"must be a positive integer, got {num_sensors!r}")
        if not (math.isfinite(rate_hz) and rate_hz > 0):
            raise ConfigError("SimulatedImuArray.rate_hz", f"must be > 0, got {rate_hz!r}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError("SimulatedImuArray: rng must be a numpy.random.Generator")
        self.model = model
        self.num_sensors = int(num_sensors)
        self.rate_hz = float(rate_hz)
        self.rng = rng
        rates = np.atleast_1d(np.asarray(model.dropout_rate, dtype=np.float64))
        if rates.size not in (1, num_sensors):
            raise ConfigError(
                f"imu model {model.name!r}.dropout_rate", f"has {rates.size} entries for {num_sensors} sensors"
            )
        rates = np.broadcast_to(rates, (num_sensors,))
        self.dropout_rate = rates.copy()
        bad = [i for i in model.dead_sensors if i >= num_sensors]
        if bad:
            raise ConfigError(f"imu model {model.name!r}.dead_sensors", f"indices {bad} >= number of sensors {num_sensors}")
        s = self.num_sensors
        # Unit (standard-normal) constant errors, [S, 3] / [S, 3, 3]; order fixed.
        self._unit_turn_on = {ch: rng.standard_normal((s, 3)) for ch in ("accel", "gyro")}
        self._unit_scale = {ch: rng.standard_normal((s, 3)) for ch in ("accel", "gyro")}
        off_diagonal = ~np.eye(3, dtype=bool)
        self._unit_misalignment = {}
        for ch in ("accel", "gyro"):
            m = np.zeros((s, 3, 3))
            m[:, off_diagonal] = rng.standard_normal((s, 6))
            self._unit_misalignment[ch] = m

    def error_matrix(self, channel: str) -> np.ndarray:
        """``[S, 3, 3]`` multiplicative error ``k·(D_sf + E_mis)`` of ``channel`` ("accel"/"gyro")."""
        ch: ChannelErrorModel = getattr(self.model, channel)
        k = self.model.noise_scale
        diag = np.einsum("si,ij->sij", self._unit_scale[channel] * ch.scale_factor, np.eye(3))
        return k * (diag + self._unit_misalignment[channel] * ch.misalignment)

    def turn_on_bias(self, channel: str) -> np.ndarray:
        """``[S, 3]`` constant bias of ``channel`` (after ``noise_scale``)."""
        ch: ChannelErrorModel = getattr(self.model, channel)
        return self.model.noise_scale * ch.turn_on_bias * self._unit_turn_on[channel]

    def _channel(self, channel: str, truth: np.ndarray, unit_draws: dict[str, np.ndarray]) -> _ChannelOutput:
        ch: ChannelErrorModel = getattr(self.model, channel)
        k = self.model.noise_scale
        dt = 1.0 / self.rate_hz
        value = truth + np.einsum("sij,tsj->tsi", self.error_matrix(channel), truth)
        # Bias: turn-on + Gauss–Markov (exact discretisation, stationary start) + random walk.
        phi = math.exp(-dt / ch.bias_correlation_time)
        gm_unit = lfilter(
            [math.sqrt(1.0 - phi * phi)], [1.0, -phi], unit_draws["gm"], axis=0, zi=(phi * unit_draws["gm0"])[None]
        )[0]
        bias = self.turn_on_bias(channel)[None] + k * (
            ch.gauss_markov_sigma * gm_unit + ch.bias_random_walk * math.sqrt(dt) * np.cumsum(unit_draws["rw"], axis=0)
        )
        value = value + bias + (k * ch.noise_density * math.sqrt(self.rate_hz)) * unit_draws["white"]
        # ADC.
        lo, hi = ch.count_range
        raw = np.rint(value / ch.lsb)
        counts = np.clip(raw, lo, hi).astype(np.int16)
        if self.model.saturate:
            saturated = ((counts == lo) | (counts == hi)).any(axis=-1)
            if self.model.quantize:
                value = counts * ch.lsb
            else:
                value = np.clip(value, lo * ch.lsb, hi * ch.lsb)
        else:
            saturated = np.zeros(value.shape[:2], dtype=bool)
            if self.model.quantize:
                value = raw * ch.lsb
        return _ChannelOutput(value, counts, saturated, bias)

    def _fresh_mask(self, uniforms: np.ndarray) -> np.ndarray:
        """``[T, S]`` bool, True where the sensor updated: a two-state Markov chain per sensor.

        Leaving a dropout burst has probability ``b = 1/mean_length``; entering one ``a =
        r·b/(1−r)`` so the stationary dropped fraction is ``r``.  The first sample is fresh.
        """
        t_count, s = uniforms.shape
        fresh = np.ones((t_count, s), dtype=bool)
        rate = self.dropout_rate
        if t_count == 0 or not np.any(rate > 0):
            return fresh
        leave = 1.0 / self.model.mean_dropout_length
        enter = np.minimum(rate * leave / (1.0 - rate), 1.0)
        dropped = np.zeros(s, dtype=bool)
        for t in range(1, t_count):
            dropped = np.where(dropped, uniforms[t] >= leave, uniforms[t] < enter)
            fresh[t] = ~dropped
        return fresh

    def measure(
        self, accel_true: np.ndarray, gyro_true: np.ndarray, times_s: np.ndarray | None = None
    ) -> ImuMeasurements:
        """Apply the error model to ideal signals ``[T, S, 3]`` (one power-on run).

        ``times_s`` (``[T]``, true time) places dead-sensor onsets (seconds after the first
        sample); default uniform at ``rate_hz``.
        """
        accel_true = np.asarray(accel_true, dtype=np.float64)
        gyro_true = np.asarray(gyro_true, dtype=np.float64)
        t_count = accel_true.shape[0]
        if accel_true.shape != (t_count, self.num_sensors, 3) or gyro_true.shape != accel_true.shape:
            raise ValueError(
                f"measure: expected accel/gyro [T,{self.num_sensors},3], got {accel_true.shape}, {gyro_true.shape}"
            )
        if times_s is None:
            times_s = np.arange(t_count) / self.rate_hz
        times_s = np.asarray(times_s, dtype=np.float64)
        if times_s.shape != (t_count,):
            raise ValueError(f"measure: times_s must be [{t_count}], got {times_s.shape}")
        rng, shape = self.rng, accel_true.shape
        # Fixed draw order, independent of which errors are enabled (common random numbers).
        draws = {
            ch: {
                "white": rng.standard_normal(shape),
                "gm0": rng.standard_normal(shape[1:]),
                "gm": rng.standard_normal(shape),
                "rw": rng.standard_normal(shape),
            }
            for ch in ("accel", "gyro")
        }
        uniforms = rng.random((t_count, self.num_sensors))
        acc = self._channel("accel", accel_true, draws["accel"])
        gyr = self._channel("gyro", gyro_true, draws["gyro"])

        status = np.where(acc.saturated | gyr.saturated, ImuStatus.SATURATED, ImuStatus.OK).astype(np.uint8)
        outputs = [acc.value, gyr.value, acc.counts, gyr.counts]
        fresh = self._fresh_mask(uniforms)
        if not fresh.all():
            # Stale samples repeat the last fresh one (values, counts and its saturation).
            idx = np.where(fresh, np.arange(t_count)[:, None], 0)
            last = np.maximum.accumulate(idx, axis=0)  # [T, S]
            cols = np.arange(self.num_sensors)[None, :]
            outputs = [o[last, cols] for o in outputs]
            status = np.where(fresh, status, np.uint8(ImuStatus.STALE)).astype(np.uint8)
        for sensor, onset in self.model.dead_sensors.items():
            dead = times_s - (times_s[0] if t_count else 0.0) >= onset - 1e-12
            for o in outputs:
                o[dead, sensor] = 0
            status[dead, sensor] = ImuStatus.DEAD
        a_val, g_val, a_cnt, g_cnt = outputs
        return ImuMeasurements(
            accel=a_val,
            gyro=g_val,
            accel_counts=a_cnt,
            gyro_counts=g_cnt,
            accel_lsb=self.model.accel.lsb,
            gyro_lsb=self.model.gyro.lsb,
            status=status,
            accel_true=accel_true,
            gyro_true=gyro_true,
            accel_bias=acc.bias,
            gyro_bias=gyr.bias,
        )


# ======================================================================================
# Everything together
# ======================================================================================


@dataclasses.dataclass(frozen=True)
class GloveImuStream:
    """A simulated glove IMU recording: what the scenario writer turns into ``GloveSample``s.

    ``true_time_s [T]`` sampling instants on the true (simulation/ROS) clock,
    ``device_time_us [T]`` uint64 glove stamps, ``sequence [T]`` uint32 frame numbers,
    ``imu`` the measurements.
    """

    true_time_s: np.ndarray
    device_time_us: np.ndarray
    sequence: np.ndarray
    imu: ImuMeasurements


def simulate_glove_imu(
    pose_at: PoseFunction,
    start_s: float,
    end_s: float,
    model: ImuErrorModel | SimulatedImuArray,
    rng: np.random.Generator | None = None,
    *,
    clock: DeviceClock | None = None,
    rate_hz: float = DEFAULT_RATE_HZ,
    first_sequence: int = 0,
    step_s: float = DEFAULT_STENCIL_STEP_S,
) -> GloveImuStream:
    """Simulate the glove's IMUs over true time ``[start_s, end_s]``.

    Samples are uniform in device time (``clock``, default ideal); ``pose_at`` must be valid
    on ``[start_s − 2·step_s, end_s + 2·step_s]``.  ``model`` is either an error model (a new
    physical glove — its constant errors — is drawn from ``rng``) or an existing
    :class:`SimulatedImuArray` (the same glove again, drawing from its own generator; pass no
    ``rng`` then).
    """
    clock = clock or DeviceClock()
    device_us, true_t = clock.sample_schedule(start_s, end_s, rate_hz)
    ideal = ideal_imu_signals(pose_at, true_t, step_s=step_s)
    if isinstance(model, SimulatedImuArray):
        sensors = model
        if rng is not None:
            raise ValueError("simulate_glove_imu: an existing SimulatedImuArray uses its own generator; pass rng=None")
        if sensors.rate_hz != rate_hz:
            raise ConfigError("simulate_glove_imu.rate_hz", f"{rate_hz} differs from the sensors' {sensors.rate_hz}")
    else:
        if rng is None:
            raise ValueError("simulate_glove_imu: a numpy.random.Generator is required to draw a new glove")
        sensors = SimulatedImuArray(model, ideal.accel.shape[1], rng, rate_hz)
    imu = sensors.measure(ideal.accel, ideal.gyro, true_t)
    sequence = ((first_sequence + np.arange(true_t.size, dtype=np.int64)) % 2**32).astype(np.uint32)
    return GloveImuStream(true_time_s=true_t, device_time_us=device_us, sequence=sequence, imu=imu)
