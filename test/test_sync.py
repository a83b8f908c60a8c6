"""Camera–glove synchronizer (the code shared by the live sync node and the dataset builder)."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

import avi_ht_ros
from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.common.imu import GravityEstimator
from avi_ht_ros.tracker.sync import (NS, WINDOW_COMPLETE, WINDOW_PARTIAL, ImuWindowSynchronizer,
                                     SyncConfig, live_synchronizer, replay)

N = 12
GLOVE_PERIOD = NS // 200
CAMERA_PERIOD = NS // 60


class UpFromAccel:
    """Minimal gravity estimator for synchronizer tests: the normalized accelerometer."""

    def __init__(self):
        self.resets = 0

    def update(self, accel, gyro, status):
        norm = np.linalg.norm(accel, axis=1, keepdims=True)
        return np.divide(accel, norm, out=np.zeros_like(accel), where=norm > 0)

    def reset(self):
        self.resets += 1


def glove_stream(t0_ns, count, period=GLOVE_PERIOD, skip=()):
    samples = []
    for k in range(count):
        if k in skip:
            continue
        stamp = t0_ns + k * period
        accel = np.full((N, 3), k, np.float32)
        accel[:, 2] += 9.81
        samples.append((stamp, accel, np.full((N, 3), 0.01 * k, np.float32), np.zeros(N, np.uint8)))
    return samples


def camera_stream(t0_ns, count):
    return [(t0_ns + k * CAMERA_PERIOD, f"frame{k}") for k in range(count)]


def make(**overrides):
    return ImuWindowSynchronizer(SyncConfig(**overrides), N, UpFromAccel())


def test_complete_windows_align_to_nearest_sample():
    results = replay(glove_stream(0, 400), camera_stream(200 * NS // 1000, 60), make())
    assert len(results) == 60
    for r in results:
        w = r.window
        assert w.state == WINDOW_COMPLETE and w.valid_samples == 14
        assert w.accel.shape == (14, N, 3) and w.status.shape == (14, N)
        assert abs(int(w.stamps_ns[-1]) - w.camera_stamp_ns) <= GLOVE_PERIOD // 2
        assert np.all(np.diff(w.stamps_ns) == GLOVE_PERIOD)
        k_last = int(round(w.stamps_ns[-1] / GLOVE_PERIOD))
        np.testing.assert_array_equal(w.accel[:, 0, 0], np.arange(k_last - 13, k_last + 1))


def test_time_offset_maps_glove_clock_to_camera_clock():
    shift = 37 * NS // 1000  # glove clock runs 37 ms behind the camera clock
    plain = replay(glove_stream(0, 400), camera_stream(NS // 5, 50), make())
    shifted = replay(glove_stream(-shift, 400), camera_stream(NS // 5, 50), make(time_offset_s=shift / NS))
    assert len(plain) == len(shifted) == 50
    for a, b in zip(plain, shifted):
        np.testing.assert_array_equal(a.window.stamps_ns, b.window.stamps_ns)
        np.testing.assert_array_equal(a.window.accel, b.window.accel)


def test_gap_in_glove_stream_gives_flagged_partial_window():
    sync = make()
    results = replay(glove_stream(0, 200, skip=range(100, 104)), camera_stream(NS // 5, 30), sync)
    partial = [r.window for r in results if r.window.state == WINDOW_PARTIAL]
    assert partial, "a 4-sample gap must show up as partial windows"
    for w in partial:
        padded = ~w.valid
        assert padded.any() and np.all(w.status[padded] == 3)
        assert np.all(w.accel[padded] == 0) and w.valid_samples == 14 - padded.sum()
    assert sync.stats.glove_gaps == 4
    assert sync.stats.frames_partial == len(partial)


def test_frame_waits_for_late_glove_data_then_completes():
    sync = make(max_wait_s=0.03)
    for s in glove_stream(0, 40):
        sync.add_glove_sample(*s)
    camera_ns = 40 * GLOVE_PERIOD + GLOVE_PERIOD // 3   # newer than any glove sample yet
    sync.add_camera_frame(camera_ns, "late")
    assert sync.poll(camera_ns + 10 * NS // 1000) == []          # still waiting
    for s in glove_stream(0, 43)[40:]:
        sync.add_glove_sample(*s)
    (result,) = sync.poll(camera_ns + 12 * NS // 1000)
    assert result.payload == "late" and result.window.state == WINDOW_COMPLETE


@pytest.mark.parametrize("jitter_s", [0.0, 0.0005, 0.0049, 0.005])
@pytest.mark.parametrize("phase", [0, 1, 2, 3, 4, 5, 7, 9])   # camera stamp = sample 40 + phase/10 of a period
def test_frame_is_ready_as_soon_as_its_nearest_sample_is_known(phase, jitter_s):
    """The live sync emits a frame on the glove sample that settles its window: one stamped at or
    after the frame, or one less than (period - jitter)/2 before it (the next sample, at least
    period - jitter later, is farther). The window equals the one built with all the data
    present (offline), and the frame never waits for a sample it does not need."""
    camera_ns = 40 * GLOVE_PERIOD + phase * GLOVE_PERIOD // 10
    sync = make(max_wait_s=0.03, glove_stamp_jitter_s=jitter_s)
    lead_ns = max(0, (GLOVE_PERIOD - round(jitter_s * NS)) // 2)
    samples = glove_stream(0, 60)
    for s in samples[:41]:
        sync.add_glove_sample(*s)
    sync.add_camera_frame(camera_ns, "frame", arrival_ns=camera_ns)
    settled_by_sample_40 = 40 * GLOVE_PERIOD >= camera_ns or 40 * GLOVE_PERIOD > camera_ns - lead_ns
    early = sync.poll(camera_ns)
    assert len(early) == int(settled_by_sample_40)
    if not early:
        sync.add_glove_sample(*samples[41])      # stamped after the frame: settled
        early = sync.poll(camera_ns)
    (live,) = early
    (offline,) = replay(samples, [(camera_ns, "frame")], make(max_wait_s=0.03))
    np.testing.assert_array_equal(live.window.stamps_ns, offline.window.stamps_ns)
    np.testing.assert_array_equal(live.window.accel, offline.window.accel)
    nearest = 40 if phase * 2 <= 10 else 41
    assert live.window.stamps_ns[-1] == nearest * GLOVE_PERIOD and live.window.state == WINDOW_COMPLETE
    # 200 Hz: lead 2.5 ms (no jitter), 2.25 ms (0.5 ms); ~0 for jitter near a whole period
    assert settled_by_sample_40 == (phase == 0 or (jitter_s <= 0.0005 and phase < 5))


def test_sample_not_arrived_after_wait_is_padded_and_flagged():
    sync = make(max_wait_s=0.03)
    for s in glove_stream(0, 40):
        sync.add_glove_sample(*s)
    camera_ns = 39 * GLOVE_PERIOD + 4 * NS // 1000   # the sample at 40*period is nearer, but never comes
    sync.add_camera_frame(camera_ns, "f")
    (result,) = sync.poll(camera_ns + 31 * NS // 1000)
    w = result.window
    assert w.state == WINDOW_PARTIAL and w.valid_samples == 13
    assert not w.valid[-1] and w.stamps_ns[-1] == 40 * GLOVE_PERIOD and np.all(w.status[-1] == 3)
    np.testing.assert_array_equal(w.accel[:-1, 0, 0], np.arange(27, 40))


def test_stalled_glove_drops_frames_after_bounded_wait():
    sync = make(max_wait_s=0.03)
    for s in glove_stream(0, 40):
        sync.add_glove_sample(*s)
    stall_start = 40 * GLOVE_PERIOD
    sync.add_camera_frame(stall_start + 100 * NS // 1000, "stalled")
    assert sync.poll(stall_start + 110 * NS // 1000) == []
    assert sync.poll(stall_start + 131 * NS // 1000) == []   # wait expired: dropped, not paired
    assert sync.stats.frames_dropped_no_imu == 1


def test_clock_jumps_are_counted_never_paired_silently():
    sync = make()
    for s in glove_stream(0, 50):
        sync.add_glove_sample(*s)
    # duplicate stamp and a small step back (<= clock_reset_s): dropped as out of order
    assert not sync.add_glove_sample(49 * GLOVE_PERIOD, np.zeros((N, 3)), np.zeros((N, 3)), np.zeros(N))
    assert not sync.add_glove_sample(47 * GLOVE_PERIOD, np.zeros((N, 3)), np.zeros((N, 3)), np.zeros(N))
    assert sync.stats.glove_out_of_order == 2 and sync.stats.glove_clock_resets == 0
    # jump back by 5 s (device reset): buffer cleared, estimator reset
    assert sync.add_glove_sample(-5 * NS, np.zeros((N, 3)), np.zeros((N, 3)), np.zeros(N))
    assert sync.stats.glove_clock_resets == 1 and sync.gravity_estimator.resets == 1
    # a camera frame a little older than the one before it is dropped; a camera clock step
    # back (> clock_reset_s) is accepted and clears the glove buffer
    assert sync.add_camera_frame(NS, "a") and not sync.add_camera_frame(NS - 10_000_000, "b")
    assert sync.stats.camera_out_of_order == 1
    assert sync.add_glove_sample(NS, np.zeros((N, 3)), np.zeros((N, 3)), np.zeros(N))
    assert sync.add_camera_frame(NS // 2, "c")
    assert sync.stats.camera_clock_resets == 1 and sync.gravity_estimator.resets == 2
    assert sync.poll(None) == [] and sync.stats.frames_dropped_no_imu >= 1  # no glove data on the new timeline


def test_non_finite_imu_values_are_zeroed_and_flagged():
    sync = make()
    samples = glove_stream(0, 40)
    samples[30][1][3] = np.nan
    samples[31][2][5] = np.inf
    results = replay(samples, [(34 * GLOVE_PERIOD, "f")], sync)
    w = results[0].window
    assert np.isfinite(w.accel).all() and np.isfinite(w.gyro).all() and np.isfinite(w.gravity_up).all()
    assert (w.status == 4).sum() == 2


def test_live_feeding_equals_offline_replay():
    glove, camera = glove_stream(0, 300), camera_stream(NS // 10, 40)
    offline = replay(glove, camera, make())
    live_sync, live = make(), []
    gi = 0
    for stamp, payload in camera:
        while gi < len(glove) and glove[gi][0] <= stamp + 3 * GLOVE_PERIOD:
            live_sync.add_glove_sample(*glove[gi])
            gi += 1
        live_sync.add_camera_frame(stamp, payload)
        live += live_sync.poll(stamp + 3 * GLOVE_PERIOD)
    live += live_sync.poll(None)
    assert [r.payload for r in live] == [r.payload for r in offline]
    for a, b in zip(live, offline):
        np.testing.assert_array_equal(a.window.accel, b.window.accel)
        np.testing.assert_array_equal(a.window.stamps_ns, b.window.stamps_ns)


@pytest.mark.parametrize("field,value", [("window_length", 0), ("max_wait_s", -1.0),
                                         ("min_valid_samples", 99), ("imu_rate_hz", 0.0)])
def test_bad_config_names_the_parameter(field, value):
    with pytest.raises(ConfigError, match=field):
        SyncConfig(**{field: value})


def test_live_synchronizer_uses_the_config_and_an_online_gravity_estimator():
    glove = GloveModel.reference()
    config = SyncConfig(imu_rate_hz=100.0, window_length=10)
    synchronizer = live_synchronizer(config, glove)
    assert synchronizer.config is config and synchronizer.num_imus == glove.num_sensors
    estimator = synchronizer.gravity_estimator
    assert isinstance(estimator, GravityEstimator)
    assert estimator.num_imus == glove.num_sensors and estimator.sample_period_s == pytest.approx(0.01)


def test_synchronizers_are_built_only_by_live_synchronizer():
    """No train/serve skew: the sync node, dataset builder and evaluation all call live_synchronizer."""
    package = pathlib.Path(avi_ht_ros.__file__).resolve().parent
    builders = [path.relative_to(package).as_posix() for path in sorted(package.rglob("*.py"))
                if "ImuWindowSynchronizer(" in path.read_text(encoding="utf-8")]
    assert builders == ["tracker/sync.py"]
    for user in ("nodes/sync_node.py", "tracker/dataset.py", "tracker/evaluate.py"):
        assert "live_synchronizer(" in (package / user).read_text(encoding="utf-8"), user
