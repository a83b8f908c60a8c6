"""Camera–glove synchronization: one IMU window per camera frame.

This is the single implementation used by the live time-synchronizer node and
by the offline dataset builder (no train/serve skew). Following AVI-HT §3.2,
each camera frame is aligned to the glove sample whose stamp (after the
camera–glove offset) is nearest to the camera stamp, and the window is that
sample plus the ``window_length - 1`` samples before it (oldest first).

Feeding order is the arrival order: glove samples through
:meth:`ImuWindowSynchronizer.add_glove_sample`, camera frames through
:meth:`ImuWindowSynchronizer.add_camera_frame`, and :meth:`poll` with the
current time emits every frame whose window is ready — as soon as the glove sample nearest to
it is known: one stamped at or after the frame, or one less than half a sampling period
(minus the stamp jitter) before it, since the next can only be farther. A frame waits at most
``max_wait_s`` for late glove data; then it is emitted with a flagged partial
window (missing samples padded and marked) or, with too few real samples,
dropped and counted. Nothing is paired silently: every anomaly (glove clock
jumping backwards, duplicate stamps, camera frames out of order, gaps, the
camera's own clock stepping back — told from a host clock step by the frames'
arrival times) is counted in :class:`SyncStats`.

Stamps are integer nanoseconds. ``time_offset_s`` maps glove time to camera
time: ``t_camera = t_glove + time_offset_s``.

:func:`live_synchronizer` is *the* construction (config + online gravity estimator) that the
sync node, the dataset builder and the evaluation all call.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.imu import GravityEstimator
from avi_ht_ros.common.params import param, validate_params

if TYPE_CHECKING:
    from avi_ht_ros.common.glove_model import GloveModel

STATUS_OK = 0
STATUS_DEAD = 3  # also marks padded (missing) samples in a window

WINDOW_COMPLETE = 0
WINDOW_PARTIAL = 1

NS = 1_000_000_000


@dataclasses.dataclass(frozen=True)
class SyncConfig:
    """Parameters of the synchronizer (validated on construction)."""

    window_length: int = param(14, "IMU samples per window (paper: 14)", range=(1, 256))
    imu_rate_hz: float = param(200.0, "nominal glove sample rate", range=(1.0, 10000.0), unit="Hz")
    max_wait_s: float = param(0.030, "longest a camera frame waits for late glove data", range=(0.0, 1.0),
                              unit="s")
    max_nearest_gap_s: float = param(0.010, "a frame whose glove sample at the camera instant is missing is "
                                     "still paired (flagged partial) if the last sample before it is at most "
                                     "this old; otherwise dropped", range=(1e-4, 1.0), unit="s")
    min_valid_samples: int = param(7, "fewer real samples in a window drop the frame", range=(0, 256))
    time_offset_s: float = param(0.0, "camera-glove offset: t_camera = t_glove + offset (initial value "
                                 "when estimated online)", range=(-10.0, 10.0), unit="s", read_only=False)
    buffer_s: float = param(2.0, "glove history kept", range=(0.05, 60.0), unit="s")
    clock_reset_s: float = param(0.02, "a glove or camera stamp stepping back more than this is a clock step: "
                                 "the glove buffer is cleared (never stitched across the step); smaller "
                                 "steps back are dropped as out of order", range=(1e-3, 3600.0), unit="s")
    glove_stamp_jitter_s: float = param(
        0.0005, "largest deviation of consecutive glove stamps from the nominal period (the driver's stamps "
        "follow the device clock, so they are regular): a frame is settled as soon as a sample stamped less "
        "than (period - jitter)/2 before it has arrived, since the next one cannot be nearer; >= one period: "
        "wait for a sample stamped at or after the frame", range=(0.0, 1.0), unit="s")
    max_pending_frames: int = param(30, "camera frames waiting at once (older ones dropped)", range=(1, 1000))
    camera_clock_step_tolerance_s: float = param(
        0.1, "a camera stamp stepping back while the frames' arrival times do not (by more than this) is a step "
        "of the camera's own clock: its frames are dropped and counted until their stamps are back in step "
        "with their arrival times (a host clock step moves both and is handled like a glove clock step)",
        range=(1e-3, 10.0), unit="s")

    def __post_init__(self):
        validate_params(self)
        if self.min_valid_samples > self.window_length:
            raise ConfigError("sync.min_valid_samples", f"must be <= window_length ({self.window_length})")
        if self.buffer_s * self.imu_rate_hz < self.window_length:
            raise ConfigError("sync.buffer_s", "must hold at least one window")

    @property
    def period_ns(self) -> int:
        return int(round(NS / self.imu_rate_hz))

    @property
    def settle_lead_ns(self) -> int:
        """A sample stamped less than this before a frame settles it: the next sample comes at
        least ``period - jitter`` later, so it is farther from the frame."""
        return max(0, (self.period_ns - int(round(self.glove_stamp_jitter_s * NS))) // 2)


@dataclasses.dataclass
class SyncStats:
    """Counters of everything the synchronizer emitted, dropped or flagged."""

    glove_samples: int = 0
    glove_out_of_order: int = 0      # stamp <= previous stamp (dropped)
    glove_clock_resets: int = 0      # glove stamp stepped back > clock_reset_s (buffer cleared)
    glove_gaps: int = 0              # missing samples detected between consecutive samples
    camera_frames: int = 0
    camera_out_of_order: int = 0     # camera stamp <= previous camera stamp, by <= clock_reset_s (dropped)
    camera_clock_resets: int = 0     # camera stamp stepped back > clock_reset_s (glove buffer cleared)
    camera_overflow: int = 0         # too many frames waiting (oldest dropped)
    camera_clock_mismatch: int = 0   # camera clock stepped back on its own (arrival times did not): dropped
    frames_complete: int = 0
    frames_partial: int = 0
    frames_dropped_no_imu: int = 0   # no glove sample near the camera stamp after waiting
    frames_dropped_too_few: int = 0  # fewer than min_valid_samples real samples

    @property
    def frames_dropped(self) -> int:
        return (self.frames_dropped_no_imu + self.frames_dropped_too_few
                + self.camera_out_of_order + self.camera_overflow + self.camera_clock_mismatch)


@dataclasses.dataclass(frozen=True)
class ImuWindow:
    """The glove data aligned to one camera frame (arrays oldest first)."""

    camera_stamp_ns: int
    accel: np.ndarray          # [T, N, 3] m/s^2, sensor frames (zeros where padded)
    gyro: np.ndarray           # [T, N, 3] rad/s
    gravity_up: np.ndarray     # [T, N, 3] unit "up" in each sensor frame (zeros where unknown)
    status: np.ndarray         # [T, N] uint8 GloveSample.STATUS_*; STATUS_DEAD where padded
    stamps_ns: np.ndarray      # [T] int64 glove stamps on the camera clock (padding interpolated)
    valid: np.ndarray          # [T] bool, real sample (not padding)
    time_offset_s: float
    state: int                 # WINDOW_COMPLETE or WINDOW_PARTIAL

    @property
    def valid_samples(self) -> int:
        return int(self.valid.sum())


@dataclasses.dataclass(frozen=True)
class SyncedResult:
    """A camera frame (opaque payload) with its IMU window."""

    payload: Any
    window: ImuWindow


class ImuWindowSynchronizer:
    """Aligns glove samples to camera frames (see module docstring).

    ``gravity_estimator`` is an object with ``update(accel[N,3], gyro[N,3],
    status[N]) -> gravity_up[N,3]`` run once per glove sample in stamp order
    (``avi_ht_ros.common.imu.GravityEstimator``); ``reset()`` is called when the
    glove clock resets.
    """

    def __init__(self, config: SyncConfig, num_imus: int, gravity_estimator: Any):
        if num_imus < 1:
            raise ConfigError("sync.num_imus", f"must be >= 1 (got {num_imus})")
        self.config = config
        self.num_imus = num_imus
        self.gravity_estimator = gravity_estimator
        self.stats = SyncStats()
        capacity = int(np.ceil(config.buffer_s * config.imu_rate_hz)) + config.window_length
        self._capacity = capacity
        self._stamps = np.zeros(capacity, np.int64)   # glove clock
        self._accel = np.zeros((capacity, num_imus, 3), np.float32)
        self._gyro = np.zeros((capacity, num_imus, 3), np.float32)
        self._gravity = np.zeros((capacity, num_imus, 3), np.float32)
        self._status = np.zeros((capacity, num_imus), np.uint8)
        self._count = 0        # samples ever stored since last reset
        self._pending: collections.deque[tuple[int, int, Any]] = collections.deque()
        self._last_camera_ns: int | None = None
        self._last_camera_arrival_ns: int | None = None
        # arrival - stamp of the camera frames before their clock stepped back on its own (None: in step)
        self._camera_step_baseline_ns: int | None = None
        self._offset_ns = int(round(config.time_offset_s * NS))
        self._settle_lead_ns = config.settle_lead_ns

    # -- configuration that may change at run time ---------------------------------
    @property
    def time_offset_s(self) -> float:
        return self._offset_ns / NS

    def set_time_offset(self, offset_s: float) -> None:
        """Use a new camera–glove offset (e.g. from the online estimator)."""
        if not np.isfinite(offset_s) or abs(offset_s) > 10.0:
            raise ConfigError("sync.time_offset_s", f"must be finite and within ±10 s (got {offset_s!r})")
        self._offset_ns = int(round(offset_s * NS))

    # -- input ---------------------------------------------------------------------
    def add_glove_sample(self, stamp_ns: int, accel: np.ndarray, gyro: np.ndarray,
                         status: np.ndarray) -> bool:
        """Store one glove sample (glove clock). Returns False if it was dropped."""
        self.stats.glove_samples += 1
        stamp_ns = int(stamp_ns)
        if self._count:
            last = int(self._stamps[(self._count - 1) % self._capacity])
            if stamp_ns <= last:
                if last - stamp_ns > self.config.clock_reset_s * NS:
                    self.stats.glove_clock_resets += 1
                    self._reset_glove()
                else:
                    self.stats.glove_out_of_order += 1
                    return False
            else:
                missing = int(round((stamp_ns - last) / self.config.period_ns)) - 1
                if missing > 0:
                    self.stats.glove_gaps += missing
        accel = np.asarray(accel, np.float32).reshape(self.num_imus, 3)
        gyro = np.asarray(gyro, np.float32).reshape(self.num_imus, 3)
        status = np.asarray(status, np.uint8).reshape(self.num_imus).copy()
        bad = ~(np.isfinite(accel).all(axis=1) & np.isfinite(gyro).all(axis=1))
        if bad.any():  # never let NaN/inf through: zero and mark invalid
            accel = np.where(bad[:, None], 0.0, accel).astype(np.float32)
            gyro = np.where(bad[:, None], 0.0, gyro).astype(np.float32)
            status[bad] = 4  # STATUS_INVALID
        gravity = np.asarray(self.gravity_estimator.update(accel, gyro, status), np.float32)
        slot = self._count % self._capacity
        self._stamps[slot] = stamp_ns
        self._accel[slot] = accel
        self._gyro[slot] = gyro
        self._gravity[slot] = np.nan_to_num(gravity, nan=0.0, posinf=0.0, neginf=0.0)
        self._status[slot] = status
        self._count += 1
        return True

    def add_camera_frame(self, stamp_ns: int, payload: Any, arrival_ns: int | None = None) -> bool:
        """Queue a camera frame (camera clock). Returns False if it was dropped.

        ``arrival_ns`` (default: the stamp) starts the frame's waiting time, and tells a step of
        the camera's own clock (stamps step back, arrival times do not) from a host clock step.
        """
        self.stats.camera_frames += 1
        stamp_ns = int(stamp_ns)
        arrival = stamp_ns if arrival_ns is None else int(arrival_ns)
        tolerance_ns = self.config.camera_clock_step_tolerance_s * NS
        last_stamp, last_arrival = self._last_camera_ns, self._last_camera_arrival_ns
        if self._camera_step_baseline_ns is not None:
            if abs((arrival - stamp_ns) - self._camera_step_baseline_ns) > tolerance_ns:
                return self._drop_camera_clock_mismatch(stamp_ns, arrival)
            self._camera_step_baseline_ns = None   # the camera clock is back in step
        elif last_stamp is not None and stamp_ns <= last_stamp:
            if last_stamp - stamp_ns <= self.config.clock_reset_s * NS:
                self.stats.camera_out_of_order += 1
                return False
            if (arrival - last_arrival) - (stamp_ns - last_stamp) > tolerance_ns:
                # Only the camera's clock stepped back: its stamps would pass the glove data
                # of other instants. Drop its frames until stamps and arrivals agree again.
                self._camera_step_baseline_ns = last_arrival - last_stamp
                return self._drop_camera_clock_mismatch(stamp_ns, arrival)
            # The host clock stepped back (the glove stamps move too): only glove data
            # arriving from now on may be paired with the frames.
            self.stats.camera_clock_resets += 1
            self._reset_glove()
        self._last_camera_ns, self._last_camera_arrival_ns = stamp_ns, arrival
        self._pending.append((stamp_ns, arrival, payload))
        while len(self._pending) > self.config.max_pending_frames:
            self._pending.popleft()
            self.stats.camera_overflow += 1
        return True

    def _drop_camera_clock_mismatch(self, stamp_ns: int, arrival_ns: int) -> bool:
        self.stats.camera_clock_mismatch += 1
        self._last_camera_ns, self._last_camera_arrival_ns = stamp_ns, arrival_ns
        return False

    # -- output --------------------------------------------------------------------
    @property
    def has_pending_frames(self) -> bool:
        """Camera frames are waiting for their IMU window."""
        return bool(self._pending)

    def poll(self, now_ns: int | None = None) -> list[SyncedResult]:
        """Emit every pending frame whose window is ready or whose wait has expired.

        ``now_ns`` is the current time on the camera clock (``None``: flush, i.e.
        no more data will come — used at the end of an offline replay).
        """
        results = []
        while self._pending:
            camera_ns, arrival_ns, payload = self._pending[0]
            newest = self._newest_stamp_camera_ns()
            # Samples arrive in stamp order (older ones are dropped) and at least period - jitter
            # apart, so once one is stamped after camera_ns - settle_lead (half that spacing),
            # none still to come can be nearer to the frame: the window is settled. (Strictly
            # after: on a tie the later sample, not known yet, could be nearer by its jitter.)
            data_complete = newest is not None and (newest >= camera_ns or newest > camera_ns - self._settle_lead_ns)
            expired = now_ns is None or now_ns - arrival_ns >= self.config.max_wait_s * NS
            if not (data_complete or expired):
                break  # frames are in stamp order: later ones cannot be ready either
            self._pending.popleft()
            window = self._window_for(camera_ns)
            if window is not None:
                results.append(SyncedResult(payload=payload, window=window))
        return results

    def _newest_stamp_camera_ns(self) -> int | None:
        if not self._count:
            return None
        return int(self._stamps[(self._count - 1) % self._capacity]) + self._offset_ns

    def _reset_glove(self) -> None:
        self._count = 0
        reset = getattr(self.gravity_estimator, "reset", None)
        if reset is not None:
            reset()

    def _window_for(self, camera_ns: int) -> ImuWindow | None:
        cfg = self.config
        stored = min(self._count, self._capacity)
        if stored == 0:
            self.stats.frames_dropped_no_imu += 1
            return None
        order = (np.arange(self._count - stored, self._count)) % self._capacity
        stamps_cam = self._stamps[order] + self._offset_ns
        period = cfg.period_ns
        nearest = int(np.argmin(np.abs(stamps_cam - camera_ns)))
        if abs(int(stamps_cam[nearest]) - camera_ns) <= period // 2:
            anchor = int(stamps_cam[nearest])
        else:
            # The sample at the camera instant is missing (gap, or it did not arrive
            # within max_wait_s): anchor the window on the glove's sampling grid
            # extrapolated from the last sample before the camera stamp, so the
            # missing slot is padded and flagged instead of silently shifting the window.
            before = np.nonzero(stamps_cam <= camera_ns)[0]
            if not len(before) or camera_ns - int(stamps_cam[before[-1]]) > cfg.max_nearest_gap_s * NS:
                self.stats.frames_dropped_no_imu += 1
                return None
            nearest = int(before[-1])
            last = int(stamps_cam[nearest])
            anchor = last + period * int(round((camera_ns - last) / period))
        # Expected sample times of the window on the camera clock, oldest first; each
        # is filled by the stored sample within half a period of it, or padded.
        expected = anchor - period * np.arange(cfg.window_length - 1, -1, -1, dtype=np.int64)
        first = max(0, nearest - 2 * cfg.window_length)
        candidates = stamps_cam[first:nearest + 1]
        idx = np.searchsorted(candidates, expected)
        best = np.full(cfg.window_length, -1, np.int64)
        for offset in (-1, 0):
            j = np.clip(idx + offset, 0, len(candidates) - 1)
            close = np.abs(candidates[j] - expected) <= period // 2
            choose = close & (best < 0)
            best[choose] = j[choose]
        valid = best >= 0
        n_valid = int(valid.sum())
        if n_valid < max(1, cfg.min_valid_samples):
            self.stats.frames_dropped_too_few += 1
            return None
        slots = order[first + np.where(valid, best, 0)]
        t, n = cfg.window_length, self.num_imus
        accel = np.zeros((t, n, 3), np.float32)
        gyro = np.zeros((t, n, 3), np.float32)
        gravity = np.zeros((t, n, 3), np.float32)
        status = np.full((t, n), STATUS_DEAD, np.uint8)
        accel[valid] = self._accel[slots[valid]]
        gyro[valid] = self._gyro[slots[valid]]
        gravity[valid] = self._gravity[slots[valid]]
        status[valid] = self._status[slots[valid]]
        stamps = np.where(valid, candidates[np.where(valid, best, 0)], expected).astype(np.int64)
        state = WINDOW_COMPLETE if n_valid == t else WINDOW_PARTIAL
        if state == WINDOW_COMPLETE:
            self.stats.frames_complete += 1
        else:
            self.stats.frames_partial += 1
        return ImuWindow(camera_stamp_ns=camera_ns, accel=accel, gyro=gyro, gravity_up=gravity,
                         status=status, stamps_ns=stamps, valid=valid,
                         time_offset_s=self.time_offset_s, state=state)


def live_synchronizer(config: SyncConfig, glove: "GloveModel") -> ImuWindowSynchronizer:
    """The synchronizer of the live sync node for ``glove``: ``config`` and an online
    :class:`~avi_ht_ros.common.imu.GravityEstimator` per IMU at the config's sample period.

    The sync node, the dataset builder and the evaluation build theirs with this function,
    so training data, evaluation and the live system see the same windows.
    """
    estimator = GravityEstimator(glove.num_sensors, 1.0 / config.imu_rate_hz)
    return ImuWindowSynchronizer(config, glove.num_sensors, estimator)


def replay(glove_samples: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]],
           camera_frames: list[tuple[int, Any]], synchronizer: ImuWindowSynchronizer,
           on_result: Callable[[SyncedResult], None] | None = None) -> list[SyncedResult]:
    """Offline replay: feed recorded streams in stamp order through ``synchronizer``.

    Glove samples are ``(stamp_ns, accel, gyro, status)`` on the glove clock,
    camera frames ``(stamp_ns, payload)`` on the camera clock. Events are merged
    by their camera-clock time, and ``poll`` is called with that time after
    each, exactly as the live node would see them if nothing arrived late.
    """
    offset_ns = int(round(synchronizer.time_offset_s * NS))
    events = [(int(s) + offset_ns, 0, i) for i, (s, *_rest) in enumerate(glove_samples)]
    events += [(int(s), 1, i) for i, (s, _p) in enumerate(camera_frames)]
    events.sort()
    results: list[SyncedResult] = []

    def emit(batch):
        for result in batch:
            results.append(result)
            if on_result is not None:
                on_result(result)

    for now_ns, kind, index in events:
        if kind == 0:
            synchronizer.add_glove_sample(*glove_samples[index])
        else:
            stamp, payload = camera_frames[index]
            synchronizer.add_camera_frame(stamp, payload)
        emit(synchronizer.poll(now_ns))
    emit(synchronizer.poll(None))
    return results
