"""Device clock -> host (ROS) time mapping for the glove driver.

Model: a sample taken at device time ``d`` reaches the host at

    h = d * (1 + drift) + offset + latency,        latency >= 0, jittery

so ``h - d`` seen over time is a line (offset + drift * d) plus a positive noise.
The line is the *lower envelope* of the points, not their mean.  The mapper keeps
the minimum of ``h - d`` per bucket of device time (``bucket_s``) over a sliding
window (``window_s``) and fits a line through those minima (least squares, with
buckets far above the envelope rejected).  Once enough buckets exist the slope is
the drift; before that the drift is taken as 0 and the offset is the running
minimum.

Stamps are ``fit(d) - fixed_latency_ns`` (the latency floor of the transport is
not observable from timestamps alone; measure it once and configure it),
clamped to be no later than the receive time and strictly increasing.

Discontinuities:

* device counter wrap (``device_counter_bits`` < 64): unwrapped when the host
  time elapsed agrees with it (``wraps``);
* device counter reset/jump (reboot, firmware restart): device time going
  backwards, or the sample lying far below the envelope while host time moved
  forward -> re-lock from this sample (``device_resets``);
* host clock jump: host time going backwards (immediate), or every sample far
  above the envelope for ``jump_confirm_s`` (a forward jump; a transient latency
  spike recovers before that) -> re-lock (``host_jumps``).  Stamps are strictly
  increasing within one host timeline; after the host clock jumps backwards they
  follow it.
"""
from __future__ import annotations

import collections
import dataclasses

import numpy as np

_NS_PER_US = 1000
_NS_PER_S = 1_000_000_000


@dataclasses.dataclass(frozen=True)
class ClockEstimate:
    """Snapshot of the mapping.  ``offset_ns`` is host time minus device time (both in
    ns) at the latest sample; ``offset_uncertainty_ns`` (RMS scatter of the envelope
    points / sqrt(count)) is the quality figure: smaller is better, None until locked."""

    locked: bool
    offset_ns: int
    drift_ppm: float
    envelope_rms_ns: float | None
    offset_uncertainty_ns: float | None
    buckets_in_fit: int
    window_s: float


@dataclasses.dataclass
class ClockStats:
    samples: int = 0
    wraps: int = 0
    device_resets: int = 0
    host_jumps: int = 0
    causal_clamps: int = 0  # stamp limited to the receive time
    monotonic_clamps: int = 0  # stamp raised to keep stamps strictly increasing
    envelope_outliers: int = 0  # buckets left out of a fit as far above the envelope


@dataclasses.dataclass
class _Bucket:
    index: int
    x_ns: float  # device time of the minimum (ns since the lock epoch)
    y_ns: float  # minimum of (host - device) in this bucket, ns relative to the epoch
    count: int


class DeviceClockMapper:
    """Online device-clock -> host-time mapper; see the module docstring."""

    def __init__(
        self,
        *,
        window_s: float = 15.0,
        bucket_s: float = 0.25,
        min_buckets_for_drift: int = 4,
        max_drift_ppm: float = 1000.0,
        jump_tolerance_s: float = 0.05,
        jump_confirm_s: float = 0.5,
        device_counter_bits: int = 64,
        fixed_latency_ns: int = 0,
    ):
        if not 0 < bucket_s < window_s:
            raise ValueError(f"need 0 < bucket_s ({bucket_s}) < window_s ({window_s})")
        if min_buckets_for_drift < 2:
            raise ValueError("min_buckets_for_drift must be >= 2 (a slope needs two points)")
        if not 8 <= device_counter_bits <= 64:
            raise ValueError(f"device_counter_bits {device_counter_bits} outside 8..64")
        if jump_tolerance_s <= 0 or jump_confirm_s <= 0:
            raise ValueError("jump_tolerance_s and jump_confirm_s must be > 0")
        self.window_s = window_s
        self.bucket_ns = bucket_s * _NS_PER_S
        self.window_buckets = int(round(window_s / bucket_s))
        self.min_buckets_for_drift = min_buckets_for_drift
        self.max_drift = max_drift_ppm * 1e-6
        self.jump_tolerance_ns = jump_tolerance_s * _NS_PER_S
        self.jump_confirm_ns = jump_confirm_s * _NS_PER_S
        self.counter_modulus_us = 1 << device_counter_bits
        self.fixed_latency_ns = int(fixed_latency_ns)
        self.stats = ClockStats()
        self._last_stamp_ns: int | None = None
        self._relock(None, None)

    # ------------------------------------------------------------------ public

    def update(self, device_time_us: int, host_time_ns: int) -> int:
        """Ingest one sample (device clock, host receive time) and return its stamp (ns)."""
        device_time_us = int(device_time_us)
        host_time_ns = int(host_time_ns)
        self.stats.samples += 1
        if self._epoch_device_us is None:
            self._relock(device_time_us, host_time_ns)
        else:
            self._check_continuity(device_time_us, host_time_ns)
        device_us = self._unwrapped(device_time_us)
        x = float((device_us - self._epoch_device_us) * _NS_PER_US)
        y = float(host_time_ns - self._epoch_host_ns) - x
        self._add_point(x, y)
        self._last_raw_device_us = device_time_us
        self._last_device_us = device_us
        self._last_host_ns = host_time_ns

        stamp = self._epoch_host_ns + int(round(x + self._envelope(x))) - self.fixed_latency_ns
        latest_possible = host_time_ns - self.fixed_latency_ns
        if stamp > latest_possible:
            stamp = latest_possible
            self.stats.causal_clamps += 1
        if self._last_stamp_ns is not None and stamp <= self._last_stamp_ns:
            stamp = self._last_stamp_ns + 1
            self.stats.monotonic_clamps += 1
        self._last_stamp_ns = stamp
        return stamp

    def device_to_host_ns(self, device_time_us: int) -> int | None:
        """Map a device time (same counter epoch as the latest sample) without ingesting it
        or clamping; None before the first sample."""
        if self._epoch_device_us is None:
            return None
        device_us = int(device_time_us) + self._wraps_in_epoch * self.counter_modulus_us
        x = float((device_us - self._epoch_device_us) * _NS_PER_US)
        return self._epoch_host_ns + int(round(x + self._envelope(x))) - self.fixed_latency_ns

    @property
    def locked(self) -> bool:
        """True once the drift is estimated from enough envelope buckets."""
        return self._fit_buckets >= self.min_buckets_for_drift

    def estimate(self) -> ClockEstimate:
        """Current offset, drift and quality."""
        if self._epoch_device_us is None:
            return ClockEstimate(False, 0, 0.0, None, None, 0, 0.0)
        x = float((self._last_device_us - self._epoch_device_us) * _NS_PER_US)
        offset = self._epoch_host_ns - self._epoch_device_us * _NS_PER_US + int(round(self._envelope(x)))
        span = 0.0
        if self._closed:
            span = (x - self._closed[0].x_ns) / _NS_PER_S
        uncertainty = None
        if self.locked and self._fit_rms_ns is not None:
            uncertainty = self._fit_rms_ns / np.sqrt(self._fit_buckets)
        return ClockEstimate(
            locked=self.locked,
            offset_ns=offset,
            drift_ppm=self._slope * 1e6,
            envelope_rms_ns=self._fit_rms_ns if self.locked else None,
            offset_uncertainty_ns=uncertainty,
            buckets_in_fit=self._fit_buckets,
            window_s=span,
        )

    def reset(self) -> None:
        """Forget everything except the counters (e.g. a different device was connected)."""
        self._relock(None, None)
        self._last_stamp_ns = None

    # ------------------------------------------------------------------ internals

    def _relock(self, device_time_us: int | None, host_time_ns: int | None) -> None:
        self._epoch_device_us = device_time_us
        self._epoch_host_ns = host_time_ns
        self._wraps_in_epoch = 0
        self._last_raw_device_us = device_time_us
        self._last_device_us = device_time_us
        self._last_host_ns = host_time_ns
        self._closed: collections.deque[_Bucket] = collections.deque()
        self._open: _Bucket | None = None
        self._intercept = 0.0  # envelope(x) = intercept + slope * x, ns relative to the epoch
        self._slope = 0.0
        self._fit_buckets = 0
        self._fit_rms_ns: float | None = None
        self._running_min_y: float | None = None
        self._high_since_x: float | None = None  # start of a run of samples far above the envelope

    def _unwrapped(self, device_time_us: int) -> int:
        return device_time_us + self._wraps_in_epoch * self.counter_modulus_us

    def _envelope(self, x: float) -> float:
        return self._intercept + self._slope * x

    def _check_continuity(self, device_time_us: int, host_time_ns: int) -> None:
        """Detect counter wrap, device reset and host clock jumps; re-lock on the latter two."""
        host_step = host_time_ns - self._last_host_ns
        if device_time_us < self._last_raw_device_us:
            wrapped_step_ns = (device_time_us + self.counter_modulus_us - self._last_raw_device_us) * _NS_PER_US
            wrap_possible = self.counter_modulus_us < (1 << 64)
            if wrap_possible and abs(wrapped_step_ns - host_step) <= self.jump_tolerance_ns:
                self._wraps_in_epoch += 1
                self.stats.wraps += 1
                return
            if host_step < 0:
                self._host_jumped(device_time_us, host_time_ns)
            else:
                self.stats.device_resets += 1
                self._relock(device_time_us, host_time_ns)
            return
        device_us = self._unwrapped(device_time_us)
        x = float((device_us - self._epoch_device_us) * _NS_PER_US)
        residual = float(host_time_ns - self._epoch_host_ns) - x - self._envelope(x)
        if residual < -self.jump_tolerance_ns:
            if host_step < 0:
                self._host_jumped(device_time_us, host_time_ns)
            else:
                self.stats.device_resets += 1
                self._relock(device_time_us, host_time_ns)
        elif residual > self.jump_tolerance_ns:
            if self._high_since_x is None:
                self._high_since_x = x
            elif x - self._high_since_x >= self.jump_confirm_ns:
                self._host_jumped(device_time_us, host_time_ns)
        else:
            self._high_since_x = None

    def _host_jumped(self, device_time_us: int, host_time_ns: int) -> None:
        self.stats.host_jumps += 1
        if host_time_ns < self._last_host_ns:
            self._last_stamp_ns = None  # a new, earlier host timeline: monotonic from here on
        self._relock(device_time_us, host_time_ns)

    def _add_point(self, x: float, y: float) -> None:
        index = int(x // self.bucket_ns)
        if self._open is None or index != self._open.index:
            if self._open is not None:
                self._closed.append(self._open)
                while self._closed and self._closed[0].index <= index - self.window_buckets:
                    self._closed.popleft()
                self._open = None
                self._refit()
            self._open = _Bucket(index, x, y, 1)
        else:
            self._open.count += 1
            if y < self._open.y_ns:
                self._open.x_ns, self._open.y_ns = x, y
        if not self.locked:
            # Too few buckets for a slope: offset = lowest (host - device) seen, drift 0.
            if self._running_min_y is None or y < self._running_min_y:
                self._running_min_y = y
            self._intercept, self._slope = self._running_min_y, 0.0

    def _refit(self) -> None:
        """Least-squares line through the closed buckets' minima, upper outliers removed."""
        if len(self._closed) < self.min_buckets_for_drift:
            self._fit_buckets = len(self._closed)
            return
        xs = np.array([b.x_ns for b in self._closed])
        ys = np.array([b.y_ns for b in self._closed])
        keep = np.ones(xs.size, dtype=bool)
        intercept, slope = self._line_fit(xs, ys)
        residuals = ys - (intercept + slope * xs)
        spread = 1.4826 * np.median(np.abs(residuals - np.median(residuals)))
        if spread > 0:
            keep = residuals <= np.median(residuals) + 4.0 * spread
            if keep.sum() >= self.min_buckets_for_drift and not keep.all():
                self.stats.envelope_outliers += int((~keep).sum())
                intercept, slope = self._line_fit(xs[keep], ys[keep])
            else:
                keep[:] = True
        if abs(slope) > self.max_drift:
            # Implausible for a crystal: keep the offset at the newest envelope points.
            slope = float(np.clip(slope, -self.max_drift, self.max_drift))
            intercept = float(np.median(ys[keep] - slope * xs[keep]))
        self._intercept, self._slope = float(intercept), float(slope)
        fitted = ys[keep] - (self._intercept + self._slope * xs[keep])
        self._fit_rms_ns = float(np.sqrt(np.mean(fitted**2)))
        self._fit_buckets = int(keep.sum())

    @staticmethod
    def _line_fit(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float]:
        x_mean = xs.mean()
        y_mean = ys.mean()
        dx = xs - x_mean
        denominator = float(dx @ dx)
        slope = float(dx @ (ys - y_mean)) / denominator if denominator > 0 else 0.0
        return float(y_mean - slope * x_mean), slope
