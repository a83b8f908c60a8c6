"""One-Euro filter: smooths jitter at rest, follows fast motion with little lag."""
from __future__ import annotations

import numpy as np

from avi_ht_ros.tracker.one_euro import OneEuroConfig, OneEuroFilter


def test_reduces_jitter_of_a_still_signal():
    rng = np.random.default_rng(0)
    f = OneEuroFilter(OneEuroConfig(min_cutoff_hz=1.0, beta=0.0))
    t = np.arange(300) / 60
    noisy = 0.01 * rng.normal(size=(300, 21, 3))
    out = np.array([f(ti, x) for ti, x in zip(t, noisy)])
    assert out[100:].std() < 0.3 * noisy[100:].std()


def test_follows_fast_motion_better_with_beta():
    t = np.arange(120) / 60
    ramp = 2.0 * t  # 2 m/s
    lag = {}
    for beta in (0.0, 5.0):
        f = OneEuroFilter(OneEuroConfig(min_cutoff_hz=1.0, beta=beta))
        out = np.array([f(ti, np.array([x])) for ti, x in zip(t, ramp)])[:, 0]
        lag[beta] = abs(ramp[-1] - out[-1])
    assert lag[5.0] < 0.25 * lag[0.0]


def test_restarts_on_time_going_backwards_or_nan():
    f = OneEuroFilter()
    f(1.0, np.zeros(3))
    np.testing.assert_array_equal(f(0.5, np.ones(3)), np.ones(3))
    np.testing.assert_array_equal(f(0.6, np.full(3, np.nan)), np.full(3, np.nan))
