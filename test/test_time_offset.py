"""Online camera–glove offset estimation by correlating rotation rates."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.tracker.time_offset import NS, TimeOffsetConfig, TimeOffsetEstimator, correlate_rates


def wrist_motion(t):
    """Angular velocity (world) of a hand waving and turning: rich, non-periodic."""
    return np.stack([2.0 * np.sin(2.1 * t) + 0.8 * np.sin(5.3 * t + 1.0),
                     1.5 * np.sin(1.3 * t + 0.5) * np.cos(0.7 * t),
                     1.0 * np.sin(3.7 * t + 2.0)], axis=-1)


def simulate(offset_s, duration=12.0, noise=0.02, seed=0):
    """Glove gyro (glove clock) and vision wrist orientations (camera clock)."""
    rng = np.random.default_rng(seed)
    dt = 1e-3
    t = np.arange(0.0, duration, dt)
    omega = wrist_motion(t)
    rotations = [Rotation.identity()]
    for w in omega[:-1]:
        rotations.append(rotations[-1] * Rotation.from_rotvec(w * dt))  # body-frame rates
    quats = Rotation.concatenate(rotations).as_quat()
    glove_idx = np.arange(0, len(t), 5)                   # 200 Hz true time
    camera_idx = np.round(np.arange(0.0, duration, 1 / 60) / dt).astype(int)
    glove = [(t[i] - offset_s, omega[i] + rng.normal(0, noise, 3)) for i in glove_idx]
    camera = [(t[i], quats[i]) for i in camera_idx if i < len(t)]
    return glove, camera


@pytest.mark.parametrize("true_offset", [-0.12, 0.0, 0.037, 0.25])
def test_estimator_recovers_the_offset(true_offset):
    glove, camera = simulate(true_offset)
    est = TimeOffsetEstimator(TimeOffsetConfig())
    gi = 0
    for t_cam, q in camera:
        while gi < len(glove) and glove[gi][0] + true_offset <= t_cam:
            est.add_glove_gyro(int(glove[gi][0] * NS), glove[gi][1])
            gi += 1
        est.add_wrist_orientation(int(t_cam * NS), q)
        result = est.update(int(t_cam * NS))
    assert result.accepted_updates >= 3
    assert abs(result.offset_s - true_offset) < 0.004, result
    assert result.confidence > 0.5
    assert result.applied_offset_s == pytest.approx(result.offset_s, abs=0.004)


def test_an_untrusted_estimate_is_not_applied():
    """A single correlation peak (half-trusted at best) moves the running estimate but not the
    offset used for pairing: that stays the configured one until estimates agree."""
    glove, camera = simulate(0.2)
    est = TimeOffsetEstimator(TimeOffsetConfig(), initial_offset_s=0.01)
    gi = 0
    for t_cam, q in camera:
        while gi < len(glove) and glove[gi][0] + 0.2 <= t_cam:
            est.add_glove_gyro(int(glove[gi][0] * NS), glove[gi][1])
            gi += 1
        est.add_wrist_orientation(int(t_cam * NS), q)
        result = est.update(int(t_cam * NS))
        if result.accepted_updates:
            break  # right after the first accepted update
    assert result.accepted_updates == 1 and abs(result.offset_s - 0.2) < 0.01
    assert result.confidence < 0.5 and result.applied_offset_s == 0.01


def test_no_motion_gives_no_confident_estimate():
    est = TimeOffsetEstimator(TimeOffsetConfig())
    for k in range(2000):
        est.add_glove_gyro(k * 5_000_000, np.zeros(3))
    for k in range(600):
        est.add_wrist_orientation(k * NS // 60, [0, 0, 0, 1])
        result = est.update(k * NS // 60)
    assert result.accepted_updates == 0 and result.confidence == 0.0 and result.offset_s == 0.0
    assert result.applied_offset_s == 0.0


def test_correlate_rates_sub_sample_precision():
    t = np.arange(0, 10, 0.005)
    signal = lambda x: np.sin(3 * x) + 0.5 * np.sin(7.7 * x + 1)  # noqa: E731
    tc = np.arange(0, 10, 1 / 60)
    offset, peak, margin = correlate_rates(t, signal(t), tc, signal(tc - 0.0123), 0.3, 400.0)
    assert abs(offset - 0.0123) < 0.001 and peak > 0.99 and margin > 0


def _correlation_per_lag(glove_t, glove_rate, camera_t, camera_rate, max_lag_s, grid_hz):
    """The normalized cross-correlation by its definition, one lag at a time: [lags], scores."""
    start = max(glove_t[0], camera_t[0]) + max_lag_s
    stop = min(glove_t[-1], camera_t[-1]) - max_lag_s
    grid = np.arange(start, stop, 1.0 / grid_hz)
    cam = np.interp(grid, camera_t, camera_rate)
    cam -= cam.mean()
    lags = np.arange(-int(max_lag_s * grid_hz), int(max_lag_s * grid_hz) + 1)
    scores = []
    for lag in lags:
        glove = np.interp(grid - lag / grid_hz, glove_t, glove_rate)
        glove -= glove.mean()
        norm = np.linalg.norm(glove) * np.linalg.norm(cam)
        scores.append(glove @ cam / norm if norm > 0 else 0.0)
    return lags, np.array(scores)


@pytest.mark.parametrize("seed", range(6))
def test_correlate_rates_finds_the_peak_of_the_correlation_over_every_lag(seed):
    """All lags at once (one correlation, running sums) = the correlation computed lag by lag: the
    same best lag, its parabolic refinement, peak and margin; a constant glove signal correlates
    with nothing."""
    rng = np.random.default_rng(seed)
    max_lag_s, grid_hz = (0.1, 200.0) if seed % 2 else (0.4, 400.0)
    glove_t = np.sort(rng.uniform(0.0, 7.0, 1400))
    glove_rate = np.abs(np.sin(glove_t * rng.uniform(1.0, 5.0))) + rng.normal(0.0, 0.1, glove_t.size)
    camera_t = np.arange(0.3, 6.8, 1 / 60)
    offset_s = rng.uniform(-0.6, 0.6) * max_lag_s
    camera_rate = np.interp(camera_t - offset_s, glove_t, glove_rate) + rng.normal(0, 0.05, camera_t.size)
    lags, scores = _correlation_per_lag(glove_t, glove_rate, camera_t, camera_rate, max_lag_s, grid_hz)
    best = int(np.argmax(scores))
    a, b, c = scores[best - 1:best + 2]
    expected_offset = (lags[best] + 0.5 * (a - c) / (a - 2 * b + c)) / grid_hz
    far = np.abs(lags - lags[best]) > 0.05 * grid_hz
    offset, peak, margin = correlate_rates(glove_t, glove_rate, camera_t, camera_rate, max_lag_s, grid_hz)
    assert offset == pytest.approx(expected_offset, abs=1e-9) and offset == pytest.approx(offset_s, abs=0.01)
    assert peak == pytest.approx(scores[best], abs=1e-9)
    assert margin == pytest.approx(scores[best] - scores[far].max(), abs=1e-9)
    constant = correlate_rates(glove_t, np.full(glove_t.size, 2.0), camera_t, camera_rate, max_lag_s, grid_hz)
    assert constant[1:] == (0.0, 0.0)


def test_bad_config_names_the_parameter():
    with pytest.raises(ConfigError, match="max_lag_s"):
        TimeOffsetConfig(max_lag_s=10.0)
