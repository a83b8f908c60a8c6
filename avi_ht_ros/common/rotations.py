"""Small SO(3) helpers that ``scipy.spatial.transform`` does not provide.

scipy covers conversions, composition, slerp and :class:`~scipy.spatial.transform.RotationSpline`;
what is here is the calculus of rotation-vector curves ``R(t) = R_0 Exp(v(t))``, used to get
exact angular velocities and accelerations from smooth rotation-vector trajectories.
"""
from __future__ import annotations

import numpy as np

# Below this angle the closed forms lose digits to cancellation; Taylor series are exact
# to double precision there (next term ~ theta^8 / 10!).
_SERIES_ANGLE = 0.05


def skew(vectors: np.ndarray) -> np.ndarray:
    """``[..., 3] -> [..., 3, 3]`` cross-product matrices: ``skew(a) @ b == cross(a, b)``."""
    vectors = np.asarray(vectors, dtype=float)
    x, y, z = vectors[..., 0], vectors[..., 1], vectors[..., 2]
    zero = np.zeros_like(x)
    return np.stack([
        np.stack([zero, -z, y], -1),
        np.stack([z, zero, -x], -1),
        np.stack([-y, x, zero], -1),
    ], -2)


def _jacobian_coefficients(theta_squared: np.ndarray):
    """a, b of ``J_r = I - a [v] + b [v]^2`` and their derivatives w.r.t. theta^2.

    a = (1 - cos t) / t^2, b = (t - sin t) / t^3.
    """
    s = theta_squared
    theta = np.sqrt(s)
    small = theta < _SERIES_ANGLE
    safe = np.where(small, 1.0, theta)
    sin, cos = np.sin(safe), np.cos(safe)
    a_closed = (1.0 - cos) / safe**2
    b_closed = (safe - sin) / safe**3
    # d/ds = (d/dt) / (2 t)
    da_closed = (safe * sin - 2.0 * (1.0 - cos)) / (2.0 * safe**4)
    db_closed = ((1.0 - cos) / safe**3 - 3.0 * (safe - sin) / safe**4) / (2.0 * safe)
    a_series = 1 / 2 - s / 24 + s**2 / 720 - s**3 / 40320
    b_series = 1 / 6 - s / 120 + s**2 / 5040 - s**3 / 362880
    da_series = -1 / 24 + 2 * s / 720 - 3 * s**2 / 40320 + 4 * s**3 / 3628800
    db_series = -1 / 120 + 2 * s / 5040 - 3 * s**2 / 362880 + 4 * s**3 / 39916800
    return (np.where(small, a_series, a_closed), np.where(small, b_series, b_closed),
            np.where(small, da_series, da_closed), np.where(small, db_series, db_closed))


def so3_right_jacobian(rotvecs: np.ndarray) -> np.ndarray:
    """Right Jacobian ``J_r(v)`` ``[..., 3, 3]``: ``Exp(v + dv) ~= Exp(v) Exp(J_r(v) dv)``.

    For ``R(t) = R_0 Exp(v(t))`` the body-frame angular velocity is ``J_r(v) v'``.
    """
    rotvecs = np.asarray(rotvecs, dtype=float)
    a, b, _, _ = _jacobian_coefficients(np.sum(rotvecs**2, axis=-1))
    k = skew(rotvecs)
    return np.eye(3) - a[..., None, None] * k + b[..., None, None] * (k @ k)


def rotvec_curve_body_rates(rotvecs: np.ndarray, rotvec_rates: np.ndarray,
                            rotvec_accelerations: np.ndarray | None = None):
    """Body-frame angular velocity (and acceleration) of ``R(t) = R_0 Exp(v(t))``.

    Args:
        rotvecs: ``v [..., 3]``; rotvec_rates: ``v' [..., 3]``; rotvec_accelerations: ``v'' [..., 3]``.

    Returns:
        ``omega_body [..., 3]`` (``R^T R' = [omega_body]``) and, when ``v''`` is given,
        ``alpha_body = d/dt omega_body [..., 3]``. World-frame values are ``R @ omega_body``
        and ``R @ alpha_body`` (the latter because ``omega x omega = 0``).
    """
    v = np.asarray(rotvecs, dtype=float)
    dv = np.asarray(rotvec_rates, dtype=float)
    s = np.sum(v * v, axis=-1)
    a, b, da, db = _jacobian_coefficients(s)
    k = skew(v)
    jr = np.eye(3) - a[..., None, None] * k + b[..., None, None] * (k @ k)
    omega = (jr @ dv[..., None])[..., 0]
    if rotvec_accelerations is None:
        return omega
    ddv = np.asarray(rotvec_accelerations, dtype=float)
    ds = 2.0 * np.sum(v * dv, axis=-1)
    dk = skew(dv)
    djr = (-(da * ds)[..., None, None] * k - a[..., None, None] * dk
           + (db * ds)[..., None, None] * (k @ k) + b[..., None, None] * (dk @ k + k @ dk))
    alpha = (jr @ ddv[..., None])[..., 0] + (djr @ dv[..., None])[..., 0]
    return omega, alpha
