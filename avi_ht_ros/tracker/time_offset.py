"""Online estimate of the camera–glove time offset.

The hand-back IMU is rigid with the palm, so the magnitude of its gyroscope
reading equals the rotation speed of the wrist frame, which vision sees as
the change of the estimated wrist orientation between camera frames. The
magnitude is frame-independent, so no extrinsic calibration is needed; head
rotation (the camera moves with the head) adds a disturbance that the
correlation tolerates as long as the hand, not the head, dominates the
rotation (the estimate's confidence drops otherwise).

Both rate signals are resampled on a common grid over a sliding window and
normalized cross-correlation is evaluated over the allowed lag range; the
peak (refined to sub-sample precision by a parabola) is the offset. An
update is accepted only when the hand moved enough to be informative, the
peak correlation is high and the peak is unique (it beats every lag more
than 50 ms away). Accepted estimates are smoothed; the confidence combines
the peak correlation with the consistency (spread) of the recent accepted
raw estimates.

Convention (as in :mod:`avi_ht_ros.tracker.sync`): ``t_camera = t_glove + offset``.
"""
from __future__ import annotations

import collections
import dataclasses

import numpy as np
from scipy.spatial.transform import Rotation

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.params import param, validate_params

NS = 1_000_000_000


@dataclasses.dataclass(frozen=True)
class TimeOffsetConfig:
    window_s: float = param(6.0, "history correlated at each offset update", range=(1.0, 60.0), unit="s")
    max_lag_s: float = param(0.4, "offsets searched in [-max_lag_s, +max_lag_s] around the current value",
                             range=(0.005, 5.0), unit="s")
    grid_hz: float = param(400.0, "common resampling rate of the correlated rate signals",
                           range=(50.0, 2000.0), unit="Hz")
    min_motion_rad_s: float = param(0.6, "std of the hand-back gyro rate needed to trust an update",
                                    range=(0.0, 100.0), unit="rad/s")
    min_peak_correlation: float = param(0.5, "lowest normalized correlation accepted", range=(0.0, 1.0))
    smoothing: float = param(0.3, "weight of a new accepted estimate in the running offset",
                             range=(0.01, 1.0))
    update_interval_s: float = param(1.0, "time between offset updates", range=(0.05, 60.0), unit="s")
    min_confidence_to_apply: float = param(0.5, "confidence the running estimate needs before it is used for "
                                           "pairing (until then the configured sync.time_offset_s is)",
                                           range=(0.0, 1.0))

    def __post_init__(self):
        validate_params(self)
        if self.max_lag_s >= self.window_s / 2:
            raise ConfigError("time_offset.max_lag_s", f"must be < window_s/2 (got {self.max_lag_s})")


@dataclasses.dataclass(frozen=True)
class OffsetEstimate:
    offset_s: float        # running (smoothed) estimate
    confidence: float      # [0, 1]
    applied_offset_s: float  # what pairing should use: the last estimate trusted enough, else the initial value
    last_raw_offset_s: float
    last_peak_correlation: float
    accepted_updates: int
    rejected_updates: int


def correlate_rates(glove_t: np.ndarray, glove_rate: np.ndarray, camera_t: np.ndarray,
                    camera_rate: np.ndarray, max_lag_s: float, grid_hz: float) -> tuple[float, float, float]:
    """Offset (s) maximizing the normalized cross-correlation of two rate signals.

    Returns ``(offset_s, peak_correlation, margin)`` where ``t_camera = t_glove + offset_s``
    aligns them; ``margin`` is the peak minus the best correlation more than 50 ms away.
    """
    start = max(glove_t[0], camera_t[0]) + max_lag_s
    stop = min(glove_t[-1], camera_t[-1]) - max_lag_s
    if stop - start < 4 * max_lag_s:
        return 0.0, 0.0, 0.0
    step = 1.0 / grid_hz
    grid = np.arange(start, stop, step)
    n = grid.size
    cam = np.interp(grid, camera_t, camera_rate)
    cam = cam - cam.mean()
    cam_norm = np.linalg.norm(cam)
    if cam_norm == 0.0:
        return 0.0, 0.0, 0.0
    max_lag = int(max_lag_s * grid_hz)
    lags = np.arange(-max_lag, max_lag + 1)
    # A glove sample at t_g appears on the camera clock at t_g + offset: the camera signal at t is
    # compared with the glove signal at t - offset. Lags are whole grid steps, so the glove signal
    # is resampled once, on the grid extended by max_lag steps each side; at lag L it is
    # extended[max_lag - L : max_lag - L + n]. All lags at once (this runs in the sync node's
    # executor: one Python loop of np.interp per lag held it ~7 ms every update): the dot
    # products by one correlation (cam has zero mean, so the glove's mean drops out of them),
    # the windows' centred norms from running sums.
    extended = np.interp(start + np.arange(-max_lag, n + max_lag) * step, glove_t, glove_rate)
    dots = np.correlate(extended, cam, mode="valid")[::-1]           # [lags]
    sums = np.concatenate(([0.0], np.cumsum(extended)))
    squares = np.concatenate(([0.0], np.cumsum(extended * extended)))
    first = max_lag - lags                                               # window start per lag
    window_sum = sums[first + n] - sums[first]
    window_squares = squares[first + n] - squares[first]
    centred = window_squares - window_sum * window_sum / n
    # a constant window has no correlation (its centred norm is 0 up to the running sums' rounding)
    informative = centred > 1e-9 * np.maximum(window_squares, 1e-300)
    norms = np.sqrt(np.where(informative, centred, 1.0)) * cam_norm
    scores = np.where(informative, dots / norms, 0.0)
    best = int(np.argmax(scores))
    refined = float(lags[best])
    if 0 < best < len(lags) - 1:  # parabolic sub-sample refinement
        a, b, c = scores[best - 1], scores[best], scores[best + 1]
        denom = a - 2 * b + c
        if denom < 0:
            refined += 0.5 * (a - c) / denom
    far = np.abs(lags - lags[best]) > 0.05 * grid_hz
    margin = float(scores[best] - scores[far].max()) if far.any() else float(scores[best])
    return refined / grid_hz, float(scores[best]), margin


class TimeOffsetEstimator:
    """Accumulates glove gyro rates and vision wrist orientations; estimates the offset."""

    def __init__(self, config: TimeOffsetConfig, initial_offset_s: float = 0.0):
        self.config = config
        self._offset = float(initial_offset_s)
        self._applied = float(initial_offset_s)
        self._confidence = 0.0
        self._raw = float("nan")
        self._peak = 0.0
        self._accepted = 0
        self._rejected = 0
        keep = int(config.window_s * 400) + 64
        self._glove: collections.deque[tuple[float, float]] = collections.deque(maxlen=keep)
        self._camera: collections.deque[tuple[float, float]] = collections.deque(maxlen=keep)
        self._last_wrist: tuple[float, Rotation] | None = None
        self._last_update_t: float | None = None
        self._recent_raw: collections.deque[float] = collections.deque(maxlen=5)

    def add_glove_gyro(self, stamp_ns: int, hand_back_gyro: np.ndarray) -> None:
        """Hand-back gyroscope sample (glove clock, rad/s in the sensor frame)."""
        gyro = np.asarray(hand_back_gyro, np.float64)
        if gyro.shape == (3,) and np.isfinite(gyro).all():
            self._glove.append((stamp_ns / NS, float(np.linalg.norm(gyro))))

    def add_wrist_orientation(self, stamp_ns: int, wrist_rotation_xyzw: np.ndarray) -> None:
        """Wrist orientation estimated by vision (camera clock)."""
        q = np.asarray(wrist_rotation_xyzw, np.float64)
        if q.shape != (4,) or not np.isfinite(q).all() or np.linalg.norm(q) < 1e-6:
            return
        t = stamp_ns / NS
        rotation = Rotation.from_quat(q)
        if self._last_wrist is not None:
            t_prev, r_prev = self._last_wrist
            dt = t - t_prev
            if 0.0 < dt < 0.2:
                speed = (r_prev.inv() * rotation).magnitude() / dt
                self._camera.append((0.5 * (t + t_prev), float(speed)))
        self._last_wrist = (t, rotation)

    def update(self, now_ns: int) -> OffsetEstimate:
        """Re-estimate if due; returns the current estimate."""
        now = now_ns / NS
        cfg = self.config
        if self._last_update_t is None or now - self._last_update_t >= cfg.update_interval_s:
            self._last_update_t = now
            self._estimate(now)
        return self.estimate

    def _estimate(self, now: float) -> None:
        cfg = self.config
        if len(self._glove) < 10 or len(self._camera) < 10:
            return
        glove = np.array([g for g in self._glove if g[0] >= now - cfg.window_s - self._offset - cfg.max_lag_s])
        camera = np.array([c for c in self._camera if c[0] >= now - cfg.window_s])
        if len(glove) < 10 or len(camera) < 10 or np.std(glove[:, 1]) < cfg.min_motion_rad_s:
            return
        # search around the current estimate so the lag range stays centred
        raw, peak, margin = correlate_rates(glove[:, 0] + self._offset, glove[:, 1], camera[:, 0], camera[:, 1],
                                            cfg.max_lag_s, cfg.grid_hz)
        raw += self._offset
        self._raw, self._peak = raw, peak
        if peak < cfg.min_peak_correlation or margin <= 0.0:
            self._rejected += 1
            self._confidence *= 0.9
            return
        weight = 1.0 if self._accepted == 0 else cfg.smoothing
        self._offset += weight * (raw - self._offset)
        self._accepted += 1
        self._recent_raw.append(raw)
        quality = float(np.clip((peak - cfg.min_peak_correlation) / (1.0 - cfg.min_peak_correlation + 1e-9),
                                0.0, 1.0))
        # one estimate alone is half-trusted; several agreeing within ~10 ms are trusted
        consistency = 0.5 if len(self._recent_raw) < 2 else float(np.exp(-np.std(self._recent_raw) / 0.01))
        self._confidence = quality * consistency
        # one lucky correlation peak must not re-pair the streams: only a trusted estimate is applied
        if self._confidence >= cfg.min_confidence_to_apply:
            self._applied = self._offset

    @property
    def estimate(self) -> OffsetEstimate:
        return OffsetEstimate(self._offset, self._confidence, self._applied, self._raw, self._peak, self._accepted,
                              self._rejected)
