"""Device clock -> host (ROS) time mapping for the glove driver.

Model: a sample taken at device time ``d`` reaches the host at

    h = d * (1 + drift) + offset + latency,        latency >= 0, jittery

so ``h - d`` seen over time is a line (offset + drift * d) plus a positive noise.
The line is the *lower envelope* of the points, not their mean.  The mapper keeps
the minimum of ``h - d`` per bucket of device time (``bucket_s``) over a sliding
window (``window_s``) and fits a line through those minima (least squares, with
buckets far above the envelope rejected).  Once enough buckets exist the slope is
the drift; before that the last drift estimate (0 after a re-lock) is kept and the
line goes through the lowest point seen.

Stamps are ``fit(d) - fixed_latency_s`` (the latency floor of the transport is
not observable from timestamps alone; measure it once and configure it),
clamped to be no later than the receive time, then to be strictly increasing (the
second rule wins: when one read delivers several frames before anything is known,
later ones may be stamped a few ns after their receive time).
Parameters: :class:`ClockMapperConfig`.

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

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.params import param, validate_params

_NS_PER_US = 1000
_NS_PER_S = 1_000_000_000


@dataclasses.dataclass(frozen=True)
class ClockMapperConfig:
    """Parameters of :class:`DeviceClockMapper` (validated on construction)."""

    window_s: float = param(15.0, "device time over which the lower envelope is fitted", range=(1.0, 3600.0),
                            unit="s")
    bucket_s: float = param(0.25, "device time per envelope point (minimum of host minus device time)",
                            range=(0.01, 60.0), unit="s")
    min_buckets_for_drift: int = param(4, "envelope points needed before the drift is estimated", range=(2, 10000))
    max_drift_ppm: float = param(1000.0, "largest plausible clock-rate difference; steeper fits are clipped",
                                 range=(1.0, 100000.0), unit="ppm")
    jump_tolerance_s: float = param(0.05, "a sample this far off the envelope is a clock discontinuity candidate",
                                    range=(0.001, 10.0), unit="s")
    jump_confirm_s: float = param(0.5, "samples must stay above the envelope this long to be a host clock jump",
                                  range=(0.01, 60.0), unit="s")
    device_counter_bits: int = param(64, "width of the device microsecond counter (it wraps at 2^bits)",
                                     range=(8, 64))
    fixed_latency_s: float = param(0.0, "transport latency floor subtracted from every stamp (measure it once)",
                                   range=(0.0, 1.0), unit="s")

    def __post_init__(self):
        validate_params(self)
        if self.bucket_s >= self.window_s:
            raise ConfigError("ClockMapperConfig.bucket_s", f"{self.bucket_s} must be < window_s ({self.window_s})")


@dataclasses.dataclass(frozen=True)
class ClockEstimate:
    """Snapshot of the mapping.

    ``offset_ns``: host time minus device time (both in ns) at the latest sample, on
    the envelope (transport latency floor included, ``fixed_latency_ns`` not).
    ``drift_ppm``: how much faster the host clock runs than the device clock,
    (host elapsed / device elapsed - 1) * 1e6; a device crystal 50 ppm fast gives -50.
    ``offset_uncertainty_ns``: the quality figure, RMS scatter of the envelope points
    about the fitted line / sqrt(points); smaller is better, None until locked.
    """

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

    def __init__(self, config: ClockMapperConfig = ClockMapperConfig()):
        self.config = config
        self.bucket_ns = config.bucket_s * _NS_PER_S
        self.window_buckets = int(round(config.window_s / config.bucket_s))
        self.min_buckets_for_drift = config.min_buckets_for_drift
        self.max_drift = config.max_drift_ppm * 1e-6
        self.jump_tolerance_ns = config.jump_tolerance_s * _NS_PER_S
        self.jump_confirm_ns = config.jump_confirm_s * _NS_PER_S
        self.counter_modulus_us = 1 << config.device_counter_bits
        self.fixed_latency_ns = int(round(config.fixed_latency_s * _NS_PER_S))
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
            uncertainty = float(self._fit_rms_ns / np.sqrt(self._fit_buckets))
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
                # Slide the window, but never below a fit's worth of buckets: after a
                # data gap the old envelope still anchors the line.
                while (
                    len(self._closed) > self.min_buckets_for_drift
                    and self._closed[0].index <= index - self.window_buckets
                ):
                    self._closed.popleft()
                self._open = None
                self._refit()
            self._open = _Bucket(index, x, y, 1)
        else:
            self._open.count += 1
            if y < self._open.y_ns:
                self._open.x_ns, self._open.y_ns = x, y
        if not self.locked:
            # Too few buckets for a slope: keep the last slope (0 after a re-lock) and
            # put the line through the lowest point seen.
            candidates = [b.y_ns - self._slope * b.x_ns for b in self._closed]
            candidates.append(self._open.y_ns - self._slope * self._open.x_ns)
            self._intercept = min(candidates)

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
            # Implausible for a crystal: clip the slope, re-centre the line on the envelope points.
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
