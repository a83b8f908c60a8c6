"""IMU mounting calibration from a "hand flat, palm down, still" pose.

Procedure: the user holds the gloved hand flat, palm down, still for a few seconds.
:class:`StillHandCollector` accumulates per-sensor means and variances of the
accelerometer and gyroscope; :func:`solve_mounting_calibration` then

* rejects the recording if the hand was not still (gyro/accel standard deviation,
  residual rotation rate, specific-force magnitude far from g) or not flat (the
  corrections share a large common tilt), naming the sensors at fault;
* per sensor, computes the smallest rotation ``R`` that turns the measured gravity
  direction ("up", the specific force at rest) into the expected "up" of that sensor's
  nominal mount frame in a flat hand, and the gyro bias (mean rate at rest).

Corrected samples, in the nominal mount frame: ``accel' = R accel``,
``gyro' = R (gyro - bias)``.  A single gravity observation fixes tilt only: the
rotation about "up" (yaw) is unobservable from this pose and left at zero.

The expected up vectors are an input (N, 3) array, so this module does not depend
on the hand or glove model.  Corrections are saved/loaded as YAML.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np
import yaml
from scipy.spatial.transform import Rotation

from avi_ht_ros.common.config_file import load_yaml_mapping
from avi_ht_ros.common.errors import AviHtError, ConfigError
from avi_ht_ros.common.imu import GRAVITY_MAGNITUDE
from avi_ht_ros.common.params import param, validate_params
from avi_ht_ros.driver.health import STATUS_OK, zero_unusable
from avi_ht_ros.driver.protocol import GloveFrame

CALIBRATION_FORMAT = "avi_ht_glove_mounting_calibration"
CALIBRATION_FORMAT_VERSION = 1


class CalibrationError(AviHtError):
    """The calibration recording cannot be used (hand moved, not flat, bad sensor)."""


@dataclasses.dataclass(frozen=True)
class StillnessLimits:
    """Acceptance thresholds for a calibration recording (per sensor, per axis)."""

    max_gyro_std_rad_s: float = param(0.05, "largest gyro standard deviation of a still hand", range=(1e-4, 10.0),
                                      unit="rad/s")
    max_accel_std_m_s2: float = param(0.3, "largest accelerometer standard deviation of a still hand",
                                      range=(1e-3, 50.0), unit="m/s^2")
    max_gyro_mean_rad_s: float = param(0.15, "largest mean rate (a slow steady turn, or a gyro bias out of spec)",
                                       range=(1e-3, 10.0), unit="rad/s")
    gravity_tolerance_m_s2: float = param(1.0, "magnitude of the mean accel must be within g +- this",
                                          range=(0.01, 9.0),
                                          unit="m/s^2")
    max_correction_deg: float = param(30.0, "largest single-sensor correction (more: mounted wrongly or not flat)",
                                      range=(0.1, 180.0), unit="deg")
    max_common_tilt_deg: float = param(15.0, "largest tilt shared by all sensors (more: hand not flat)",
                                       range=(0.1, 180.0), unit="deg")
    min_samples: int = param(50, "usable samples needed per sensor", range=(2, 10000000))
    min_duration_s: float = param(0.0, "shortest recording (checked when device times were recorded)",
                                  range=(0.0, 3600.0), unit="s")

    def __post_init__(self):
        validate_params(self)


class StillHandCollector:
    """Running per-sensor mean and variance (Welford) of accel and gyro samples."""

    def __init__(self, sensor_count: int):
        if sensor_count < 1:
            raise ValueError(f"sensor_count {sensor_count} < 1")
        self.sensor_count = sensor_count
        self.sample_counts = np.zeros(sensor_count, dtype=np.int64)
        self._accel_mean = np.zeros((sensor_count, 3))
        self._accel_m2 = np.zeros((sensor_count, 3))
        self._gyro_mean = np.zeros((sensor_count, 3))
        self._gyro_m2 = np.zeros((sensor_count, 3))
        self.first_device_time_us: int | None = None
        self.last_device_time_us: int | None = None
        self.samples_rejected = 0  # per-sensor samples left out as unusable / non-finite

    def add(self, accel, gyro, usable=None) -> None:
        """Add one sample of every sensor: ``accel``/``gyro`` (N, 3) in SI; ``usable`` (N,)
        bool marks the sensors to take (e.g. health status OK).  Non-finite rows are
        skipped and counted."""
        accel = np.asarray(accel, dtype=np.float64)
        gyro = np.asarray(gyro, dtype=np.float64)
        if accel.shape != (self.sensor_count, 3) or gyro.shape != (self.sensor_count, 3):
            raise ValueError(f"accel/gyro must be ({self.sensor_count}, 3), got {accel.shape}, {gyro.shape}")
        take = np.isfinite(accel).all(axis=1) & np.isfinite(gyro).all(axis=1)
        if usable is not None:
            take &= np.asarray(usable, dtype=bool).reshape(self.sensor_count)
        self.samples_rejected += int((~take).sum())
        if not take.any():
            return
        self.sample_counts[take] += 1
        n = self.sample_counts[take][:, None].astype(np.float64)
        for mean, m2, value in ((self._accel_mean, self._accel_m2, accel), (self._gyro_mean, self._gyro_m2, gyro)):
            delta = value[take] - mean[take]
            mean[take] += delta / n
            m2[take] += delta * (value[take] - mean[take])

    def add_frame(self, frame: GloveFrame, status=None) -> None:
        """Add a decoded frame; with ``status`` (health STATUS_* per sensor) only OK sensors."""
        usable = None if status is None else np.asarray(status) == STATUS_OK
        self.add(frame.accel, frame.gyro, usable)
        if self.first_device_time_us is None:
            self.first_device_time_us = frame.device_time_us
        self.last_device_time_us = frame.device_time_us

    @property
    def duration_s(self) -> float | None:
        """Device time spanned by the frames added with :meth:`add_frame`."""
        if self.first_device_time_us is None or self.last_device_time_us is None:
            return None
        return (self.last_device_time_us - self.first_device_time_us) * 1e-6

    @property
    def accel_mean(self) -> np.ndarray:
        return self._accel_mean.copy()

    @property
    def gyro_mean(self) -> np.ndarray:
        return self._gyro_mean.copy()

    @property
    def accel_std(self) -> np.ndarray:
        return np.sqrt(self._accel_m2 / np.maximum(self.sample_counts - 1, 1)[:, None])

    @property
    def gyro_std(self) -> np.ndarray:
        return np.sqrt(self._gyro_m2 / np.maximum(self.sample_counts - 1, 1)[:, None])


@dataclasses.dataclass(frozen=True, eq=False)
class MountingCalibration:
    """Per-sensor mounting corrections: ``rotations[i]`` maps sensor i's measured frame to
    its nominal mount frame; ``gyro_bias[i]`` (rad/s, measured frame) is subtracted first."""

    rotations: Rotation  # N rotations
    gyro_bias: np.ndarray  # (N, 3) rad/s
    sensor_names: tuple[str, ...]
    residual_deg: np.ndarray  # (N,) angle between corrected and expected up (fit check)
    accel_norm_m_s2: np.ndarray  # (N,) |mean specific force| during calibration
    common_tilt_deg: float  # mean correction angle shared by all sensors
    handedness: str = ""

    @property
    def sensor_count(self) -> int:
        return len(self.rotations)

    @property
    def correction_deg(self) -> np.ndarray:
        """Angle of each sensor's correction rotation, degrees."""
        return np.degrees(self.rotations.magnitude())

    def apply(self, accel, gyro, status=None) -> tuple[np.ndarray, np.ndarray]:
        """Corrected (accel, gyro) for samples shaped (..., N, 3): R a and R (w - bias); with
        ``status`` (..., N) (health STATUS_*), DEAD and INVALID sensors are zeroed afterwards, as
        GloveSample requires (the bias would otherwise leave -R·bias in a dead sensor's gyro)."""
        accel = np.asarray(accel, dtype=np.float64)
        gyro = np.asarray(gyro, dtype=np.float64)
        for name, values in (("accel", accel), ("gyro", gyro)):
            if values.shape[-2:] != (self.sensor_count, 3):
                raise ValueError(f"{name} must end in ({self.sensor_count}, 3), got {values.shape}")
        matrices = self.rotations.as_matrix()
        corrected_accel = np.einsum("nij,...nj->...ni", matrices, accel)
        corrected_gyro = np.einsum("nij,...nj->...ni", matrices, gyro - self.gyro_bias)
        if status is not None:
            corrected_accel, corrected_gyro = zero_unusable(corrected_accel, status), zero_unusable(corrected_gyro, status)
        return corrected_accel, corrected_gyro

    # ------------------------------------------------------------------ YAML

    def to_dict(self) -> dict:
        return {
            "format": CALIBRATION_FORMAT,
            "version": CALIBRATION_FORMAT_VERSION,
            "handedness": self.handedness,
            "common_tilt_deg": round(float(self.common_tilt_deg), 6),
            "sensors": [
                {
                    "name": self.sensor_names[i],
                    "rotation_xyzw": [float(v) for v in self.rotations[i].as_quat()],
                    "gyro_bias_rad_s": [float(v) for v in self.gyro_bias[i]],
                    "residual_deg": float(self.residual_deg[i]),
                    "accel_norm_m_s2": float(self.accel_norm_m_s2[i]),
                }
                for i in range(self.sensor_count)
            ],
        }

    def save_yaml(self, path: str | os.PathLike) -> None:
        """Write the corrections as YAML (overwrites ``path``)."""
        text = (
            "# Glove IMU mounting calibration (avi_ht_ros.driver.calibration).\n"
            "# corrected_accel = R accel; corrected_gyro = R (gyro - gyro_bias); R from rotation_xyzw.\n"
        )
        text += yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(text)

    @classmethod
    def from_dict(cls, data, where: str) -> "MountingCalibration":
        """Validate a loaded mapping; raises ConfigError(where, problem)."""
        if not isinstance(data, dict):
            raise ConfigError(where, "top level must be a mapping")
        if data.get("format") != CALIBRATION_FORMAT:
            raise ConfigError(where, f"format must be {CALIBRATION_FORMAT!r}, got {data.get('format')!r}")
        if data.get("version") != CALIBRATION_FORMAT_VERSION:
            raise ConfigError(where, f"unsupported version {data.get('version')!r}")
        sensors = data.get("sensors")
        if not isinstance(sensors, list) or not sensors:
            raise ConfigError(where, "sensors must be a non-empty list")
        quats, biases, names, residuals, norms = [], [], [], [], []
        for index, entry in enumerate(sensors):
            at = f"{where}: sensors[{index}]"
            if not isinstance(entry, dict):
                raise ConfigError(at, "must be a mapping")
            quat = _finite_vector(entry.get("rotation_xyzw"), 4, at, "rotation_xyzw")
            norm = float(np.linalg.norm(quat))
            if not 0.99 < norm < 1.01:
                raise ConfigError(at, f"rotation_xyzw has norm {norm:.4f}, expected 1")
            quats.append(quat / norm)
            biases.append(_finite_vector(entry.get("gyro_bias_rad_s"), 3, at, "gyro_bias_rad_s"))
            names.append(str(entry.get("name", index)))
            residuals.append(float(entry.get("residual_deg", 0.0)))
            norms.append(float(entry.get("accel_norm_m_s2", float("nan"))))
        return cls(
            rotations=Rotation.from_quat(np.array(quats)),
            gyro_bias=np.array(biases),
            sensor_names=tuple(names),
            residual_deg=np.array(residuals),
            accel_norm_m_s2=np.array(norms),
            common_tilt_deg=float(data.get("common_tilt_deg", 0.0)),
            handedness=str(data.get("handedness", "")),
        )

    @classmethod
    def load_yaml(cls, path: str | os.PathLike) -> "MountingCalibration":
        """Read and validate a file written by :meth:`save_yaml`."""
        return cls.from_dict(load_yaml_mapping(path), os.fspath(path))


def _finite_vector(value, length: int, where: str, field: str) -> np.ndarray:
    try:
        vector = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ConfigError(where, f"{field} must be {length} numbers") from error
    if vector.shape != (length,) or not np.isfinite(vector).all():
        raise ConfigError(where, f"{field} must be {length} finite numbers, got {value!r}")
    return vector


def shortest_arc_rotations(from_vectors: np.ndarray, to_vectors: np.ndarray) -> Rotation:
    """Smallest rotations turning each direction ``from_vectors[i]`` into ``to_vectors[i]``
    ((N, 3) each, any length).  Opposite directions rotate by 180 deg about an axis
    perpendicular to both."""
    a = from_vectors / np.linalg.norm(from_vectors, axis=1, keepdims=True)
    b = to_vectors / np.linalg.norm(to_vectors, axis=1, keepdims=True)
    cross = np.cross(a, b)
    sin = np.linalg.norm(cross, axis=1)
    cos = np.einsum("ij,ij->i", a, b)
    angle = np.arctan2(sin, cos)
    axis = np.zeros_like(a)
    regular = sin > 1e-12
    axis[regular] = cross[regular] / sin[regular, None]
    for i in np.nonzero(~regular)[0]:
        # Parallel (angle 0, axis irrelevant) or opposite: any axis perpendicular to a.
        helper = np.eye(3)[int(np.argmin(np.abs(a[i])))]
        perpendicular = np.cross(a[i], helper)
        axis[i] = perpendicular / np.linalg.norm(perpendicular)
    return Rotation.from_rotvec(axis * angle[:, None])


def solve_mounting_calibration(
    collector: StillHandCollector,
    expected_up: np.ndarray,
    *,
    limits: StillnessLimits = StillnessLimits(),
    sensor_names: Sequence[str] | None = None,
    handedness: str = "",
    gravity_m_s2: float = GRAVITY_MAGNITUDE,
) -> MountingCalibration:
    """Corrections from a still, flat-hand recording; raises :class:`CalibrationError`
    listing every failed check.  ``expected_up`` (N, 3): each sensor's "up" (opposite to
    gravity) in its nominal mount frame when the hand lies flat, palm down."""
    n = collector.sensor_count
    expected_up = np.asarray(expected_up, dtype=np.float64)
    if expected_up.shape != (n, 3) or not np.isfinite(expected_up).all():
        raise ValueError(f"expected_up must be finite ({n}, 3), got shape {expected_up.shape}")
    if np.any(np.linalg.norm(expected_up, axis=1) < 1e-9):
        raise ValueError("expected_up has a zero vector")
    names = tuple(str(i) for i in range(n)) if sensor_names is None else tuple(sensor_names)
    if len(names) != n:
        raise ValueError(f"{len(names)} sensor names for {n} sensors")

    problems: list[str] = []
    duration = collector.duration_s
    if duration is not None and duration < limits.min_duration_s:
        problems.append(f"recording lasted {duration:.2f} s < {limits.min_duration_s:.2f} s")
    accel_mean = collector.accel_mean
    gyro_mean = collector.gyro_mean
    accel_std = collector.accel_std
    gyro_std = collector.gyro_std
    accel_norm = np.linalg.norm(accel_mean, axis=1)
    for i in range(n):
        who = f"sensor {names[i]}"
        if collector.sample_counts[i] < limits.min_samples:
            problems.append(f"{who}: {collector.sample_counts[i]} usable samples < {limits.min_samples}")
            continue
        if gyro_std[i].max() > limits.max_gyro_std_rad_s:
            problems.append(
                f"{who}: hand not still, gyro std {gyro_std[i].max():.3f} rad/s > {limits.max_gyro_std_rad_s}"
            )
        if accel_std[i].max() > limits.max_accel_std_m_s2:
            problems.append(
                f"{who}: hand not still, accel std {accel_std[i].max():.3f} m/s^2 > {limits.max_accel_std_m_s2}"
            )
        if np.linalg.norm(gyro_mean[i]) > limits.max_gyro_mean_rad_s:
            problems.append(
                f"{who}: mean rate {np.linalg.norm(gyro_mean[i]):.3f} rad/s > {limits.max_gyro_mean_rad_s}"
                " (hand turning, or gyro bias out of spec)"
            )
        if abs(accel_norm[i] - gravity_m_s2) > limits.gravity_tolerance_m_s2:
            problems.append(
                f"{who}: |accel| {accel_norm[i]:.2f} m/s^2 is not g = {gravity_m_s2:.2f} +- "
                f"{limits.gravity_tolerance_m_s2} (moving, or wrong accel scale)"
            )
    if problems:
        raise CalibrationError("mounting calibration rejected: " + "; ".join(problems))

    rotations = shortest_arc_rotations(accel_mean, expected_up)
    correction_deg = np.degrees(rotations.magnitude())
    for i in np.nonzero(correction_deg > limits.max_correction_deg)[0]:
        problems.append(
            f"sensor {names[i]}: gravity is {correction_deg[i]:.1f} deg from its expected up "
            f"(> {limits.max_correction_deg}); hand not flat/palm down, or IMU mounted wrongly"
        )
    common_tilt_deg = float(np.degrees(rotations.mean().magnitude()))
    if common_tilt_deg > limits.max_common_tilt_deg:
        problems.append(
            f"all sensors share a {common_tilt_deg:.1f} deg tilt (> {limits.max_common_tilt_deg}): "
            "hand not flat, palm down"
        )
    if problems:
        raise CalibrationError("mounting calibration rejected: " + "; ".join(problems))

    corrected_up = rotations.apply(accel_mean / accel_norm[:, None])
    unit_expected = expected_up / np.linalg.norm(expected_up, axis=1, keepdims=True)
    residual = np.degrees(
        np.arctan2(
            np.linalg.norm(np.cross(corrected_up, unit_expected), axis=1),
            np.einsum("ij,ij->i", corrected_up, unit_expected),
        )
    )
    return MountingCalibration(
        rotations=rotations,
        gyro_bias=gyro_mean,
        sensor_names=names,
        residual_deg=residual,
        accel_norm_m_s2=accel_norm,
        common_tilt_deg=common_tilt_deg,
        handedness=handedness,
    )

