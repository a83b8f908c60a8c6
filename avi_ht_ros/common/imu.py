"""IMU signal helpers shared by the live sync node and the offline dataset builder.

* :class:`ImuStatus` — the per-IMU health codes of ``msg/GloveSample.msg``.
* :class:`GravityEstimator` — per-IMU 6-DoF VQF orientation filters run sample by sample
  over a glove stream, giving the unit "up" direction (opposite to gravity) in every IMU
  frame; :func:`estimate_gravity` runs the *same* online code over a whole recording.
* :func:`imu_window_features` — the model's per-frame IMU input (the paper's 14×23×3
  window, §3.2) from gravity directions, gyroscope and accelerometer samples, with the
  sensor index of each feature row (for the 12 sensor tokens) and a validity mask.

Conventions (docs/ARCHITECTURE.md): SI units; accelerometers read specific force (at rest
+9.81 m/s² along the axis pointing up); gyroscopes read the angular rate of the IMU frame
expressed in the IMU frame.

VQF quaternion convention (checked in ``test/test_imu_features.py``): ``getQuat6D()``
returns ``[w, x, y, z]`` (scalar first) of the rotation *sensor → earth* (``v_E = q v_S
q*``), with the earth frame z axis up; so the up direction in the sensor frame is
``R_ES^T e_z``.  The 6-DoF heading is arbitrary, the inclination (our output) is not.
"""
from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from vqf import VQF

from avi_ht_ros.common.errors import ConfigError

GRAVITY_MAGNITUDE = 9.81
"""Magnitude of gravity in the simulated world, m/s² (docs/ARCHITECTURE.md: world z up, gravity
−9.81 ẑ).  Not the unit "g" of datasheets (9.80665 m/s², ``glove_model.STANDARD_GRAVITY``)."""


class ImuStatus(enum.IntEnum):
    """Per-IMU sample health, numerically equal to ``GloveSample.STATUS_*``."""

    OK = 0  # fresh, in range
    STALE = 1  # value repeated from an earlier sample (sensor did not update)
    SATURATED = 2  # at least one axis at the full-scale limit
    DEAD = 3  # sensor not responding: values are zeros and must not be used (also padding)
    INVALID = 4  # non-finite or corrupt value rejected by the driver (values zeroed)


# --------------------------------------------------------------------------------------
# Gravity direction from 6-DoF data (VQF)
# --------------------------------------------------------------------------------------

_OK, _STALE, _SATURATED, _INVALID = (
    int(ImuStatus.OK), int(ImuStatus.STALE), int(ImuStatus.SATURATED), int(ImuStatus.INVALID)
)


class GravityEstimator:
    """Online unit "up" direction in each IMU frame from a glove's accelerometer + gyroscope.

    One ``vqf.VQF`` 6-DoF filter per IMU, fed sample by sample.  Per sample and IMU the
    ``status`` decides what the filter sees:

    ==============  =====================================================================
    ``OK``          full update (gyro + accel).  If the IMU was lost (see below) its filter
                    is reset first; VQF then re-initialises its inclination from the very
                    first accelerometer sample (its accel low-pass starts as a running
                    mean), so the estimate is immediately usable again.
    ``SATURATED``   gyro-only update: a clipped accelerometer (the likelier culprit: impacts)
                    would tilt the inclination; a clipped gyro under-rotates for a moment,
                    which the accel correction removes afterwards.  Counts as fresh data.
    ``STALE``       gyro-only update with the repeated (held) gyro value, i.e. a zero-order
                    hold over the missing sample; counts toward the gap.
    ``DEAD``,       no update at all; output zeros (there is no measurement to describe),
    ``INVALID``     counts toward the gap.  Non-finite values are treated as ``INVALID``
                    whatever their status.
    ==============  =====================================================================

    A gap is the number of consecutive samples without fresh data (STALE/DEAD/INVALID).
    Once it exceeds ``max_gap_s`` the orientation is considered lost (the hand kept moving
    with nothing integrated): the output stays invalid (zeros) until the next ``OK`` sample,
    which resets and re-initialises that IMU's filter.  Held-gyro updates stop at the same
    limit.  Default 50 ms: a finger turning at 5 rad/s rotates ~15° in that time, about the
    tilt a fresh start from one accelerometer sample suffers under 2–3 m/s² of hand
    acceleration — and the restarted filter averages that error away within its first
    samples, while a kept-but-wrong orientation decays only with VQF's ``tauAcc`` (3 s).

    ``update`` returns float64 ``[N, 3]``: unit vectors where :attr:`valid` is true, exact
    zeros elsewhere — never NaN.  An IMU that has not yet received an ``OK`` sample since
    construction/reset is invalid.
    """

    def __init__(
        self,
        num_imus: int,
        sample_period_s: float = 1.0 / 200.0,
        *,
        max_gap_s: float = 0.05,
        vqf_params: Mapping[str, float | bool] | None = None,
    ):
        if int(num_imus) != num_imus or num_imus < 1:
            raise ConfigError("GravityEstimator.num_imus", f"must be a positive integer, got {num_imus!r}")
        if not np.isfinite(sample_period_s) or sample_period_s <= 0:
            raise ConfigError("GravityEstimator.sample_period_s", f"must be > 0, got {sample_period_s!r}")
        if not np.isfinite(max_gap_s) or max_gap_s < 0:
            raise ConfigError("GravityEstimator.max_gap_s", f"must be >= 0, got {max_gap_s!r}")
        self.num_imus = int(num_imus)
        self.sample_period_s = float(sample_period_s)
        self.max_gap_samples = int(np.floor(max_gap_s / sample_period_s + 1e-9))
        self._vqf_params = dict(vqf_params or {})
        try:
            self._filters = [VQF(self.sample_period_s, **self._vqf_params) for _ in range(self.num_imus)]
        except TypeError as exc:  # unknown VQF parameter name
            raise ConfigError("GravityEstimator.vqf_params", str(exc)) from exc
        self._gap = [0] * self.num_imus
        self._initialised = [False] * self.num_imus
        self._valid = [False] * self.num_imus

    def reset(self) -> None:
        """Forget everything: every IMU becomes invalid until its next ``OK`` sample."""
        for f in self._filters:
            f.resetState()
        self._gap = [0] * self.num_imus
        self._initialised = [False] * self.num_imus
        self._valid = [False] * self.num_imus

    @property
    def valid(self) -> np.ndarray:
        """``[N]`` bool: which rows of the last :meth:`update` result are real estimates."""
        return np.array(self._valid, dtype=bool)

    def update(self, accel: np.ndarray, gyro: np.ndarray, status: np.ndarray) -> np.ndarray:
        """Feed one glove sample (``accel``/``gyro`` ``[N, 3]`` SI, ``status`` ``[N]``).

        Returns the unit up direction in each IMU frame, ``[N, 3]`` float64 (zeros where
        not :attr:`valid`).
        """
        quats = self.update_quaternions(accel, gyro, status)
        return up_from_vqf_quaternions(quats, self.valid)

    def update_quaternions(self, accel: np.ndarray, gyro: np.ndarray, status: np.ndarray) -> np.ndarray:
        """The filter step of :meth:`update`: ``[N, 4]`` VQF 6D quaternions (w first, zeros where invalid)."""
        accel = np.ascontiguousarray(accel, dtype=np.float64)
        gyro = np.ascontiguousarray(gyro, dtype=np.float64)
        status = np.asarray(status)
        n = self.num_imus
        if accel.shape != (n, 3) or gyro.shape != (n, 3) or status.shape != (n,):
            raise ValueError(
                f"GravityEstimator.update: expected accel/gyro [{n},3] and status [{n}], got "
                f"{accel.shape}, {gyro.shape}, {status.shape}"
            )
        finite = np.isfinite(accel).all(axis=1) & np.isfinite(gyro).all(axis=1)
        codes = np.where(finite, status, _INVALID).tolist()
        quats = np.zeros((n, 4))
        gap, initialised, valid = self._gap, self._initialised, self._valid  # Python lists: fast scalar access
        for i, c in enumerate(codes):
            f = self._filters[i]
            if c == _OK:
                if not initialised[i]:
                    f.resetState()
                    initialised[i] = True
                f.update(gyro[i], accel[i])
                gap[i] = 0
                valid[i] = True
            elif c == _SATURATED and initialised[i]:
                f.updateGyr(gyro[i])
                gap[i] = 0
                valid[i] = True
            elif c == _STALE and initialised[i] and gap[i] < self.max_gap_samples:
                f.updateGyr(gyro[i])
                gap[i] += 1
                valid[i] = True
            else:  # DEAD, INVALID, unknown code, or nothing to build on
                gap[i] += 1
                valid[i] = False
                if gap[i] > self.max_gap_samples:
                    initialised[i] = False  # lost: reset on the next OK sample
            if valid[i]:
                quats[i] = f.getQuat6D()
        return quats


def up_from_vqf_quaternions(quat_wxyz: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Unit up direction in the sensor frame from VQF quaternions ``[..., 4]`` (w first, sensor→earth).

    ``up_S = R_ESᵀ e_z``, i.e. the third row of ``R_ES``; rows where ``valid`` ``[...]`` is
    false are zeros.  Element-wise, so converting a whole recording at once gives the same
    bits as converting sample by sample.
    """
    quat_wxyz = np.asarray(quat_wxyz, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    # Third row of the rotation matrix of the normalized quaternion, written out (scipy's
    # Rotation costs ~35 µs per call in construction alone — per glove sample in the sync node).
    norm_sq = np.einsum("...i,...i->...", quat_wxyz, quat_wxyz)
    known = valid & (norm_sq > 0)  # a zero quaternion has no rotation: unknown, like an invalid row
    scale = np.divide(2.0, norm_sq, out=np.zeros_like(norm_sq), where=known)
    w, x, y, z = np.moveaxis(quat_wxyz, -1, 0)
    up = np.stack([scale * (x * z - w * y), scale * (y * z + w * x), 1.0 - scale * (x * x + y * y)], axis=-1)
    up[~known] = 0.0
    return up


def estimate_gravity(
    accel: np.ndarray,
    gyro: np.ndarray,
    status: np.ndarray,
    sample_period_s: float = 1.0 / 200.0,
    **estimator_kwargs,
) -> tuple[np.ndarray, np.ndarray]:
    """Run a fresh :class:`GravityEstimator` over a whole recording, sample by sample.

    ``accel``/``gyro`` ``[T, N, 3]``, ``status`` ``[T, N]``.  Returns ``(gravity_up
    [T, N, 3], valid [T, N])``, bit-identical to calling :meth:`GravityEstimator.update`
    on each sample in turn: it runs the same filter step per sample and only batches the
    final (element-wise) quaternion → up-vector conversion.
    """
    accel = np.asarray(accel, dtype=np.float64)
    gyro = np.asarray(gyro, dtype=np.float64)
    status = np.asarray(status)
    if accel.ndim != 3 or accel.shape[-1] != 3 or gyro.shape != accel.shape or status.shape != accel.shape[:2]:
        raise ValueError(
            f"estimate_gravity: expected accel/gyro [T,N,3] and status [T,N], got "
            f"{accel.shape}, {gyro.shape}, {status.shape}"
        )
    t_count, n = status.shape
    estimator = GravityEstimator(n, sample_period_s, **estimator_kwargs)
    quats = np.zeros((t_count, n, 4))
    valid = np.zeros((t_count, n), dtype=bool)
    for t in range(t_count):
        quats[t] = estimator.update_quaternions(accel[t], gyro[t], status[t])
        valid[t] = estimator.valid
    return up_from_vqf_quaternions(quats, valid), valid


# --------------------------------------------------------------------------------------
# Per-frame IMU feature window
# --------------------------------------------------------------------------------------

SIGNALS = ("gravity", "gyro", "accel")
"""Signals a feature row can carry: unit up direction, angular rate (rad/s), specific force (m/s²)."""


class FeatureRow(NamedTuple):
    """One 3-vector row of the IMU feature window: ``signal`` of IMU ``sensor``."""

    signal: str
    sensor: int


FEATURE_SETS: dict[str, str] = {
    "gravity+finger_gyro": (
        "default, the paper's 23 rows for 12 IMUs: up direction of every IMU (N rows) "
        "followed by the gyro of every IMU except the hand-back one (N-1 rows)"
    ),
    "gravity+gyro": "up direction and gyro of every IMU (2N rows)",
    "gravity+gyro+accel": "up direction, gyro and specific force of every IMU (3N rows)",
    "gravity": "up direction of every IMU (N rows)",
}
"""Named feature sets for :func:`imu_window_features` (name → description)."""

DEFAULT_FEATURE_SET = "gravity+finger_gyro"

_DEFAULT_VALID_STATUS = (ImuStatus.OK, ImuStatus.STALE, ImuStatus.SATURATED)


def feature_rows(
    feature_set: str | Sequence[FeatureRow | tuple[str, int]],
    num_imus: int,
    hand_back_index: int | None = None,
) -> tuple[FeatureRow, ...]:
    """The rows of a named feature set (see :data:`FEATURE_SETS`) or a custom row list.

    Rows are grouped by signal, gravity first then gyro then accel ("the gravity vector
    computed from the 6-DoF data appended with the 3-axis gyroscope", paper §3.2), each
    group in IMU order.  ``hand_back_index`` (the IMU on the palm, in glove order) is required
    by ``"gravity+finger_gyro"`` and ignored otherwise — there is deliberately no default: in
    the reference glove config the hand-back IMU is the last site, not the first.
    """
    if int(num_imus) != num_imus or num_imus < 1:
        raise ConfigError("feature_rows.num_imus", f"must be a positive integer, got {num_imus!r}")
    sensors = range(num_imus)
    if isinstance(feature_set, str):
        if feature_set not in FEATURE_SETS:
            raise ConfigError("feature_set", f"unknown feature set {feature_set!r}; known: {sorted(FEATURE_SETS)}")
        if feature_set == "gravity+finger_gyro":
            if hand_back_index is None:
                raise ConfigError(
                    "hand_back_index",
                    "feature set 'gravity+finger_gyro' needs the hand-back IMU's index in glove order "
                    "(the site on bone 'palm' in config/glove_*.yaml)",
                )
            if isinstance(hand_back_index, bool) or int(hand_back_index) != hand_back_index or not 0 <= hand_back_index < num_imus:
                raise ConfigError("hand_back_index", f"{hand_back_index!r} is not an IMU index (0..{num_imus - 1})")
        rows = [FeatureRow("gravity", s) for s in sensors]
        if feature_set == "gravity+finger_gyro":
            rows += [FeatureRow("gyro", s) for s in sensors if s != hand_back_index]
        elif feature_set in ("gravity+gyro", "gravity+gyro+accel"):
            rows += [FeatureRow("gyro", s) for s in sensors]
            if feature_set == "gravity+gyro+accel":
                rows += [FeatureRow("accel", s) for s in sensors]
        return tuple(rows)
    rows = []
    for item in feature_set:
        signal, sensor = item
        if signal not in SIGNALS:
            raise ConfigError("feature_set", f"unknown signal {signal!r} in row {item!r}; known: {SIGNALS}")
        if int(sensor) != sensor or not 0 <= sensor < num_imus:
            raise ConfigError("feature_set", f"row {item!r}: sensor must be an IMU index 0..{num_imus - 1}")
        rows.append(FeatureRow(signal, int(sensor)))
    if not rows:
        raise ConfigError("feature_set", "custom feature set has no rows")
    return tuple(rows)


class ImuFeatures(NamedTuple):
    """Result of :func:`imu_window_features`."""

    features: np.ndarray  # [..., T, F, 3] float32, zeros where not valid
    token_of_feature: np.ndarray  # [F] int64, IMU (sensor token) index of each row
    valid: np.ndarray  # [..., T, F] bool


def imu_window_features(
    gravity_up: np.ndarray,
    gyro: np.ndarray,
    accel: np.ndarray | None,
    status: np.ndarray,
    feature_set: str | Sequence[FeatureRow | tuple[str, int]] = DEFAULT_FEATURE_SET,
    *,
    hand_back_index: int | None = None,
    gravity_valid: np.ndarray | None = None,
    valid_status: Sequence[int] = _DEFAULT_VALID_STATUS,
) -> ImuFeatures:
    """The model's IMU input window: ``features [..., T, F, 3]`` and ``token_of_feature [F]``.

    Inputs are ``[..., T, N, 3]`` (``status`` ``[..., T, N]``), any leading batch shape;
    ``T`` is the window length (14 in the paper), ``N`` the IMU count (12).

    **How the paper's 23 rows arise (default ``"gravity+finger_gyro"``).** The paper
    (§3.2) computes for each sample "the gravity vector from 6-DoF data and append[s] it with
    the 3-axis gyroscope", giving 14×23×3 for 12 IMUs, and later aggregates "the gravity and
    gyroscope features per IMU sensor" into 12 sensor tokens.  12 gravity rows + 12 gyro
    rows would be 24, so one row is dropped.  We keep the up direction of *all* 12 IMUs —
    the hand-back one is the reference every finger inclination is compared against
    (finger flexion ≈ angle between a finger IMU's up and the hand back's up) — and drop
    the **hand-back gyro**: it is essentially the wrist/hand angular velocity, which the
    camera observes directly (the paper's premise: vision anchors the wrist, IMUs the
    fingers), while each finger gyro carries the finger's own articulation rate.  So rows
    are ``[gravity_0 … gravity_11, gyro_j for j ≠ hand_back_index]`` = 12 + 11 = 23, and
    ``token_of_feature`` is ``[0 … 11, j ≠ hand_back …]``: the hand-back token gets one row,
    the other tokens two.  Pass the hand-back IMU's index in glove order (the site on bone
    ``palm`` in the glove config; index 11 in the reference glove) as ``hand_back_index`` —
    required for this set, so a wrong default can never silently drop a finger gyro.  Alternatives: ``"gravity+gyro"`` (24), ``"gravity+gyro+accel"``
    (36), ``"gravity"`` (12), or an explicit list of ``(signal, sensor)`` rows.

    **Validity.** A row is valid where the sample's status is in ``valid_status`` (default
    OK, STALE, SATURATED: a held or clipped value is still the best available reading),
    its values are finite, and — for gravity rows — ``gravity_valid`` (e.g. from
    :func:`estimate_gravity`; default: the up vector is non-zero).  DEAD (which also marks
    window padding) and INVALID samples are never valid.  Invalid rows are exactly zero.

    Values stay in SI units (unit vector, rad/s, m/s²); normalisation is the model's job.
    ``accel`` may be ``None`` when the feature set has no accel rows.
    """
    gravity_up = np.asarray(gravity_up)
    gyro = np.asarray(gyro)
    status = np.asarray(status)
    if gravity_up.ndim < 3 or gravity_up.shape[-1] != 3:
        raise ValueError(f"imu_window_features: gravity_up must be [..., T, N, 3], got {gravity_up.shape}")
    lead_shape = gravity_up.shape[:-1]  # [..., T, N]
    num_imus = lead_shape[-1]
    rows = feature_rows(feature_set, num_imus, hand_back_index)
    signals = {"gravity": gravity_up, "gyro": gyro}
    if any(r.signal == "accel" for r in rows):
        if accel is None:
            raise ValueError("imu_window_features: the feature set uses accel rows but accel is None")
        signals["accel"] = np.asarray(accel)
    for name, arr in signals.items():
        if arr.shape != gravity_up.shape:
            raise ValueError(f"imu_window_features: {name} has shape {arr.shape}, expected {gravity_up.shape}")
    if status.shape != lead_shape:
        raise ValueError(f"imu_window_features: status has shape {status.shape}, expected {lead_shape}")

    status_ok = np.isin(status, np.asarray([int(s) for s in valid_status]))
    if gravity_valid is None:
        gravity_ok = np.any(gravity_up != 0, axis=-1)
    else:
        gravity_ok = np.asarray(gravity_valid, dtype=bool)
        if gravity_ok.shape != lead_shape:
            raise ValueError(f"imu_window_features: gravity_valid has shape {gravity_ok.shape}, expected {lead_shape}")

    f_count = len(rows)
    features = np.zeros(lead_shape[:-1] + (f_count, 3), dtype=np.float32)
    valid = np.zeros(lead_shape[:-1] + (f_count,), dtype=bool)
    token_of_feature = np.array([r.sensor for r in rows], dtype=np.int64)
    for name, arr in signals.items():
        cols = np.array([k for k, r in enumerate(rows) if r.signal == name], dtype=np.int64)
        if cols.size == 0:
            continue
        src = token_of_feature[cols]
        values = arr[..., src, :]  # [..., T, k, 3]
        ok = status_ok[..., src] & np.isfinite(values).all(axis=-1)
        if name == "gravity":
            ok &= gravity_ok[..., src]
        features[..., cols, :] = np.where(ok[..., None], values, 0.0)
        valid[..., cols] = ok
    return ImuFeatures(features, token_of_feature, valid)
