"""Per-IMU health classification of glove frames, with rolling counters for diagnostics.

Status values equal ``GloveSample.STATUS_*`` (msg/GloveSample.msg) and
:class:`avi_ht_ros.common.imu.ImuStatus`; the ROS node copies them into the message
unchanged.  When several conditions hold, the most severe wins:
INVALID > DEAD > SATURATED > STALE > OK.

* INVALID   a count equals the reserved ``INVALID_COUNT`` (-32768), a value is
            non-finite after scaling, or the device set ``SENSOR_FLAG_DATA_ERROR`` or a
            reserved flag bit.
* DEAD      the device set ``SENSOR_FLAG_NOT_RESPONDING``; or all six counts are zero (a
            live 6-axis IMU under gravity never reads exactly zero on every axis; it is
            what glove firmware sends for an absent IMU); or the counts have not changed
            for ``dead_after_s`` of device time (parameters: :class:`HealthConfig`).
* SATURATED an axis is at full scale (|count| >= ``saturation_count``) or the device set
            ``SENSOR_FLAG_SATURATED``.
* STALE     the six counts equal the previous sample's for ``stale_after_repeats``
            consecutive samples, or the device set ``SENSOR_FLAG_NOT_UPDATED``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from avi_ht_ros.common.imu import ImuStatus
from avi_ht_ros.common.params import param, validate_params
from avi_ht_ros.driver.protocol import (
    FULL_SCALE_COUNT,
    INVALID_COUNT,
    SENSOR_FLAG_DATA_ERROR,
    SENSOR_FLAG_NOT_RESPONDING,
    SENSOR_FLAG_NOT_UPDATED,
    SENSOR_FLAG_SATURATED,
    SENSOR_FLAGS_RESERVED,
    GloveFrame,
)

# The GloveSample.STATUS_* values; their one definition is common.imu.ImuStatus.
STATUS_OK = int(ImuStatus.OK)
STATUS_STALE = int(ImuStatus.STALE)
STATUS_SATURATED = int(ImuStatus.SATURATED)
STATUS_DEAD = int(ImuStatus.DEAD)
STATUS_INVALID = int(ImuStatus.INVALID)
STATUS_NAMES = tuple(status.name for status in sorted(ImuStatus))
STATUS_COUNT = len(STATUS_NAMES)
assert STATUS_NAMES == ("OK", "STALE", "SATURATED", "DEAD", "INVALID")


@dataclasses.dataclass(frozen=True)
class HealthConfig:
    """Parameters of :class:`SensorHealthMonitor` (validated on construction)."""

    stale_after_repeats: int = param(3, "identical consecutive samples that make an IMU STALE", range=(1, 100000))
    dead_after_s: float = param(0.1, "device time without any change that makes an IMU DEAD", range=(0.001, 3600.0),
                                unit="s")
    saturation_count: int = param(FULL_SCALE_COUNT, "raw count magnitude at or above which an axis is SATURATED",
                                  range=(1, FULL_SCALE_COUNT))
    history_length: int = param(200, "frames in the rolling per-sensor status counts", range=(1, 1000000))

    def __post_init__(self):
        validate_params(self)


class SensorHealthMonitor:
    """Classifies every IMU of each frame of one glove and keeps per-sensor counters.

    Feed frames in arrival order (after sequence filtering).  Time-based rules use the
    frames' device time, so results do not depend on host scheduling.
    """

    def __init__(self, sensor_count: int, config: HealthConfig = HealthConfig()):
        if sensor_count < 1:
            raise ValueError(f"sensor_count {sensor_count} < 1")
        self.sensor_count = sensor_count
        self.config = config
        self.dead_after_us = int(round(config.dead_after_s * 1e6))
        self.status_totals = np.zeros((sensor_count, STATUS_COUNT), dtype=np.int64)
        self.frames_classified = 0
        self.sensor_count_mismatches = 0
        self._history = np.zeros((config.history_length, sensor_count), dtype=np.uint8)
        self._history_filled = 0
        self._history_next = 0
        self.reset_tracking()

    def reset_tracking(self) -> None:
        """Forget previous samples (repeat runs, last change times), keep the counters."""
        self.consecutive_repeats = np.zeros(self.sensor_count, dtype=np.int64)
        self._last_counts: np.ndarray | None = None
        self._last_change_us = np.zeros(self.sensor_count, dtype=np.int64)
        self._last_device_us: int | None = None

    def classify(self, frame: GloveFrame) -> np.ndarray:
        """Status of each IMU in ``frame`` (uint8, shape (N,)); updates the counters.

        A frame whose sensor count differs from the configured one is all INVALID and
        only counted in ``sensor_count_mismatches``.
        """
        if frame.sensor_count != self.sensor_count:
            self.sensor_count_mismatches += 1
            return np.full(frame.sensor_count, STATUS_INVALID, dtype=np.uint8)
        counts = np.concatenate([frame.accel_counts, frame.gyro_counts], axis=1).astype(np.int32)
        flags = frame.sensor_flags
        now_us = int(frame.device_time_us)

        if self._last_counts is None or self._last_device_us is None or now_us < self._last_device_us:
            unchanged = np.zeros(self.sensor_count, dtype=bool)
            self._last_change_us[:] = now_us
        else:
            unchanged = np.all(counts == self._last_counts, axis=1)
        self.consecutive_repeats = np.where(unchanged, self.consecutive_repeats + 1, 0)
        self._last_change_us[~unchanged] = now_us
        self._last_counts = counts
        self._last_device_us = now_us

        finite = np.isfinite(frame.accel).all(axis=1) & np.isfinite(frame.gyro).all(axis=1)
        invalid = (
            np.any(counts == INVALID_COUNT, axis=1)
            | ~finite
            | ((flags & (SENSOR_FLAG_DATA_ERROR | SENSOR_FLAGS_RESERVED)) != 0)
        )
        dead = (
            ((flags & SENSOR_FLAG_NOT_RESPONDING) != 0)
            | np.all(counts == 0, axis=1)
            | (now_us - self._last_change_us >= self.dead_after_us)
        )
        saturated = (
            np.any(np.abs(counts) >= self.config.saturation_count, axis=1) | ((flags & SENSOR_FLAG_SATURATED) != 0)
        )
        stale = (self.consecutive_repeats >= self.config.stale_after_repeats) | ((flags & SENSOR_FLAG_NOT_UPDATED) != 0)

        status = np.full(self.sensor_count, STATUS_OK, dtype=np.uint8)
        status[stale] = STATUS_STALE
        status[saturated] = STATUS_SATURATED
        status[dead] = STATUS_DEAD
        status[invalid] = STATUS_INVALID

        self.frames_classified += 1
        self.status_totals[np.arange(self.sensor_count), status] += 1
        self._history[self._history_next] = status
        self._history_next = (self._history_next + 1) % self._history.shape[0]
        self._history_filled = min(self._history_filled + 1, self._history.shape[0])
        return status

    def recent_status_counts(self) -> np.ndarray:
        """(N, 5) counts of each status over the last ``history_length`` frames."""
        recent = self._history[: self._history_filled]
        return (recent[:, :, None] == np.arange(STATUS_COUNT)).sum(axis=0)

    def diagnostics(self, sensor_names: list[str] | None = None) -> list[dict]:
        """One dict per IMU for a diagnostics message: name, worst recent status,
        recent and total counts per status name."""
        if sensor_names is not None and len(sensor_names) != self.sensor_count:
            raise ValueError(f"{len(sensor_names)} sensor names for {self.sensor_count} sensors")
        recent = self.recent_status_counts()
        result = []
        for index in range(self.sensor_count):
            seen = np.nonzero(recent[index])[0]
            result.append(
                {
                    "sensor": sensor_names[index] if sensor_names else str(index),
                    "worst_recent_status": STATUS_NAMES[int(seen.max())] if seen.size else STATUS_NAMES[STATUS_OK],
                    "recent": dict(zip(STATUS_NAMES, (int(v) for v in recent[index]))),
                    "total": dict(zip(STATUS_NAMES, (int(v) for v in self.status_totals[index]))),
                    "consecutive_repeats": int(self.consecutive_repeats[index]),
                }
            )
        return result


def zero_unusable(values: np.ndarray, status: np.ndarray) -> np.ndarray:
    """Copy of per-sensor ``values`` (N, ...) with DEAD and INVALID sensors zeroed, as
    GloveSample requires ("values are zeros and must not be used")."""
    cleaned = np.array(values, dtype=np.float64, copy=True)
    cleaned[(status == STATUS_DEAD) | (status == STATUS_INVALID)] = 0.0
    return cleaned
