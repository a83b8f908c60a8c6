"""One-Euro filter (Casiez, Roussel, Vogel, CHI 2012) for jitter-free live hand poses.

A first-order low-pass whose cutoff rises with the signal's speed: slow motion
is smoothed hard (little jitter), fast motion barely (little lag). Vectorized
over any array shape; timestamps drive the smoothing, so irregular frame
intervals are handled.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from avi_ht_ros.common.params import param, validate_params


@dataclasses.dataclass(frozen=True)
class OneEuroConfig:
    min_cutoff_hz: float = param(1.5, "cutoff at rest (lower = smoother, more lag when slow)", range=(0.01, 100.0),
                                 unit="Hz")
    beta: float = param(0.3, "cutoff increase per unit of speed (higher = less lag when fast)", range=(0.0, 1000.0))
    derivative_cutoff_hz: float = param(1.0, "cutoff of the speed estimate", range=(0.01, 100.0), unit="Hz")

    def __post_init__(self):
        validate_params(self)


def _alpha(cutoff_hz: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff_hz))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    def __init__(self, config: OneEuroConfig = OneEuroConfig()):
        self.config = config
        self.reset()

    def reset(self) -> None:
        self._t: float | None = None
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def __call__(self, t: float, x: np.ndarray) -> np.ndarray:
        """Filtered ``x`` at time ``t`` (s). Non-increasing ``t`` or a shape change restarts."""
        x = np.asarray(x, np.float64)
        if self._t is None or t <= self._t or self._x.shape != x.shape or not np.isfinite(x).all():
            self._t, self._x, self._dx = t, x.copy(), np.zeros_like(x)
            return x.copy()
        dt = t - self._t
        dx = (x - self._x) / dt
        a_d = _alpha(self.config.derivative_cutoff_hz, dt)
        self._dx = a_d * dx + (1.0 - a_d) * self._dx
        cutoff = self.config.min_cutoff_hz + self.config.beta * np.abs(self._dx)
        a = _alpha(cutoff, dt)
        self._x = a * x + (1.0 - a) * self._x
        self._t = t
        return self._x.copy()
