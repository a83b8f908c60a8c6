"""IMU features shared by the sync node and the dataset builder (avi_ht_ros/common/imu.py).

Tolerances:

* VQF convention: a static tilted sensor's estimated up equals R_wsᵀ ẑ within 0.01° (VQF
  initialises its inclination from the first accelerometer sample);
* convergence on a moving sensor (native noise floor, linear accelerations up to ~6 m/s²,
  rotations up to ~1.2 rad at 0.2–1.5 Hz): after 3 s, mean error < 2°, 95th percentile < 4°,
  max < 10° over all 12 IMUs for 12 s — "within a few degrees";
* batch vs online: bit-for-bit (np.array_equal).
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.imu import (
    FEATURE_SETS,
    GRAVITY_MAGNITUDE,
    FeatureRow,
    GravityEstimator,
    ImuStatus,
    estimate_gravity,
    feature_rows,
    imu_window_features,
    up_from_vqf_quaternions,
)
from avi_ht_ros.sim import imu_sim as sim

DT = 1.0 / 200.0


def hand_like_poses(num_sensors: int = 12, seed: int = 3) -> sim.PoseFunction:
    """Hand-scale motion: rotations up to ~1.2 rad at 0.2–1.5 Hz, 2–10 cm translations."""
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.2, 1.5, (num_sensors, 3))
    amp = rng.uniform(0.3, 1.2, (num_sensors, 3))
    phase = rng.uniform(0, 2 * np.pi, (num_sensors, 3))
    pos_amp = rng.uniform(0.02, 0.1, (num_sensors, 3))
    pos_freq = rng.uniform(0.2, 1.2, (num_sensors, 3))

    def pose_at(t):
        t = np.asarray(t, dtype=np.float64)[:, None, None]
        rotvec = amp * np.sin(2 * np.pi * freq * t + phase)
        rot = Rotation.from_rotvec(rotvec.reshape(-1, 3)).as_matrix().reshape(t.shape[0], num_sensors, 3, 3)
        return rot, pos_amp * np.sin(2 * np.pi * pos_freq * t + phase)

    return pose_at


def true_up(pose_at, times) -> np.ndarray:
    rot, _ = pose_at(times)
    return rot[..., 2, :]  # R_wsᵀ ẑ = third row of R_ws


def angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(np.sum(a * b, axis=-1), -1.0, 1.0)))


# ---------------------------------------------------------------------------------------
# GravityEstimator
# ---------------------------------------------------------------------------------------


def test_vqf_quaternion_convention_is_sensor_to_earth_scalar_first():
    """Checked, not assumed: getQuat6D() is [w,x,y,z] of sensor→earth, so up_s = R_ESᵀ ẑ.

    For a strongly tilted static sensor the other readings (earth→sensor, scalar last)
    would give a visibly different vector; only ours matches R_wsᵀ ẑ.
    """
    from vqf import VQF

    r_ws = Rotation.from_euler("xyz", [60, 10, 30], degrees=True)
    up_s = r_ws.inv().apply([0.0, 0.0, 1.0])
    f = VQF(DT)
    for _ in range(20):
        f.update(np.zeros(3), GRAVITY_MAGNITUDE * up_s)
    q = f.getQuat6D()
    ours = Rotation.from_quat(q, scalar_first=True).inv().apply([0, 0, 1])
    assert np.degrees(np.arccos(min(1.0, ours @ up_s))) < 0.01
    transposed = Rotation.from_quat(q, scalar_first=True).apply([0, 0, 1])
    scalar_last = Rotation.from_quat(q).inv().apply([0, 0, 1])
    assert angle_deg(transposed, up_s) > 10 and angle_deg(scalar_last, up_s) > 10

    est = GravityEstimator(1, DT)
    up = est.update(GRAVITY_MAGNITUDE * up_s[None], np.zeros((1, 3)), np.array([ImuStatus.OK]))
    assert angle_deg(up[0], up_s) < 0.01


def test_up_direction_of_quaternions_equals_scipys_rotation_row():
    """The written-out third row of R(q) equals scipy's for any (also non-unit) quaternion, invalid
    rows and zero quaternions are zeros, and a batch gives the same bits as row by row (element-wise)."""
    rng = np.random.default_rng(5)
    quats = rng.normal(size=(200, 4)) * rng.uniform(0.5, 2.0, size=(200, 1))
    valid = rng.random(200) > 0.2
    up = up_from_vqf_quaternions(quats, valid)
    expected = Rotation.from_quat(quats[valid], scalar_first=True).as_matrix()[:, 2, :]
    np.testing.assert_allclose(up[valid], expected, atol=1e-12)
    assert np.all(up[~valid] == 0.0)
    rows = np.stack([up_from_vqf_quaternions(q[None], v[None])[0] for q, v in zip(quats, valid)])
    np.testing.assert_array_equal(rows, up)
    np.testing.assert_array_equal(up_from_vqf_quaternions(np.zeros((3, 4)), np.ones(3, bool)), np.zeros((3, 3)))


@pytest.mark.parametrize("seed", [0, 1, 6])
def test_gravity_converges_on_moving_sensors(seed):
    """Native noise floor, hand-like motion, 12 IMUs × 12 s, after 3 s: mean error < 2°, 95th
    percentile < 4°, max < 10° (measured over 10 trajectories: mean 1.0–1.45°, p95 1.9–3.6°,
    max 3.2–9.6°; the tail is VQF's inclination lag under sustained linear acceleration)."""
    pose_at = hand_like_poses(seed=seed + 3)
    model = sim.load_imu_error_model("native_noise_floor")
    stream = sim.simulate_glove_imu(pose_at, 0.0, 12.0, model, np.random.default_rng(seed))
    imu = stream.imu
    assert np.abs(imu.accel_true - GRAVITY_MAGNITUDE * true_up(pose_at, stream.true_time_s)).max() > 3.0  # real linear accel
    up, valid = estimate_gravity(imu.accel, imu.gyro, imu.status, DT)
    assert valid.all()
    np.testing.assert_allclose(np.linalg.norm(up, axis=-1), 1.0, atol=1e-12)
    err = angle_deg(up, true_up(pose_at, stream.true_time_s))[int(3.0 / DT) :]
    assert err.mean() < 2.0
    assert np.percentile(err, 95) < 4.0
    assert err.max() < 10.0


def test_gravity_tracks_through_dropouts():
    """1 % dropouts (bursts of 3): mostly valid, error after 3 s still < 3° on average; every output finite."""
    pose_at = hand_like_poses(seed=8)
    model = sim.load_imu_error_model("native_noise_floor_with_dropouts")
    stream = sim.simulate_glove_imu(pose_at, 0.0, 12.0, model, np.random.default_rng(1))
    up, valid = estimate_gravity(stream.imu.accel, stream.imu.gyro, stream.imu.status, DT)
    assert np.isfinite(up).all()
    assert valid.mean() > 0.99
    err = angle_deg(up, true_up(pose_at, stream.true_time_s))[int(3.0 / DT) :][valid[int(3.0 / DT) :]]
    assert err.mean() < 3.0


def test_batch_equals_online_bit_for_bit():
    """Same filter code: estimate_gravity == GravityEstimator.update per sample, including faults and NaN input."""
    pose_at = hand_like_poses(seed=5)
    model = sim.load_imu_error_model("native_noise_floor").with_faults(
        dropout_rate=0.05, mean_dropout_length=6, dead_sensors={4: 0.0, 9: 1.5}
    )
    stream = sim.simulate_glove_imu(pose_at, 0.0, 4.0, model, np.random.default_rng(2))
    accel, gyro, status = stream.imu.accel.copy(), stream.imu.gyro.copy(), stream.imu.status.copy()
    accel[100:105, 2] = np.nan  # corrupt data that slipped through with status OK
    status[300:340, 7] = ImuStatus.INVALID  # long gap -> reset
    status[500:510, 1] = ImuStatus.SATURATED
    batch_up, batch_valid = estimate_gravity(accel, gyro, status, DT, max_gap_s=0.05)
    est = GravityEstimator(12, DT, max_gap_s=0.05)
    online_up = np.empty_like(batch_up)
    online_valid = np.empty_like(batch_valid)
    for t in range(len(status)):
        online_up[t] = est.update(accel[t], gyro[t], status[t])
        online_valid[t] = est.valid
    assert np.array_equal(batch_up, online_up)
    assert np.array_equal(batch_valid, online_valid)
    assert np.isfinite(batch_up).all()
    assert not batch_valid[:, 4].any() and not batch_valid[100:105, 2].any()


def test_dead_sensor_gives_zeros_not_nan():
    t_count, n = 50, 3
    accel = np.tile([0.0, 0.0, GRAVITY_MAGNITUDE], (t_count, n, 1))
    accel[:, 1] = 0.0
    gyro = np.zeros((t_count, n, 3))
    status = np.zeros((t_count, n), dtype=np.uint8)
    status[:, 1] = ImuStatus.DEAD
    up, valid = estimate_gravity(accel, gyro, status, DT)
    assert np.isfinite(up).all()
    assert not valid[:, 1].any() and np.all(up[:, 1] == 0)
    assert valid[:, [0, 2]].all()
    np.testing.assert_allclose(up[:, 0], np.tile([0.0, 0.0, 1.0], (t_count, 1)), atol=1e-6)


def test_stale_uses_held_gyro_then_gap_resets_and_reinitialises():
    """A sensor spinning about its up axis stays valid through short STALE runs (held gyro keeps
    integrating); after a gap > max_gap it is invalid until the next OK sample, which re-initialises
    the inclination from that accel sample at once."""
    n, t_count = 1, 400
    gyro = np.tile([0.0, 0.0, 2.0], (t_count, n, 1))
    accel = np.tile([0.0, 0.0, GRAVITY_MAGNITUDE], (t_count, n, 1))
    status = np.zeros((t_count, n), dtype=np.uint8)
    status[100:105] = ImuStatus.STALE  # 5 samples <= max_gap (10)
    status[200:230] = ImuStatus.STALE  # 30 samples > max_gap
    tilted = Rotation.from_euler("x", 40, degrees=True).inv().apply([0, 0, GRAVITY_MAGNITUDE])
    accel[230:] = tilted  # sensor was re-oriented during the gap
    gyro[230:] = 0.0
    est = GravityEstimator(n, DT, max_gap_s=0.05)
    assert est.max_gap_samples == 10
    ups, valids = [], []
    for t in range(t_count):
        ups.append(est.update(accel[t], gyro[t], status[t]))
        valids.append(est.valid[0])
    ups, valids = np.array(ups)[:, 0], np.array(valids)
    assert valids[100:105].all()
    assert valids[200:210].all() and not valids[210:230].any()
    assert valids[230:].all()
    assert angle_deg(ups[230], tilted / GRAVITY_MAGNITUDE) < 0.01
    # without the reset the 40° change would be tracked only slowly (tau_acc = 3 s):
    no_reset = GravityEstimator(n, DT, max_gap_s=10.0)
    for t in range(231):
        up = no_reset.update(accel[t], gyro[t], status[t])
    assert angle_deg(up[0], tilted / GRAVITY_MAGNITUDE) > 10


def test_saturated_samples_use_gyro_only():
    """An accel spike flagged SATURATED must not tilt the estimate."""
    est = GravityEstimator(1, DT)
    up_level = est.update(np.array([[0.0, 0.0, GRAVITY_MAGNITUDE]]), np.zeros((1, 3)), np.array([0]))
    for _ in range(20):
        up = est.update(np.array([[150.0, 0.0, 20.0]]), np.zeros((1, 3)), np.array([ImuStatus.SATURATED]))
        assert est.valid[0]
    assert angle_deg(up[0], up_level[0]) < 1e-6


def test_estimator_rejects_bad_config_and_shapes():
    with pytest.raises(ConfigError, match="num_imus"):
        GravityEstimator(0)
    with pytest.raises(ConfigError, match="vqf_params"):
        GravityEstimator(2, vqf_params={"tauAccc": 1.0})
    with pytest.raises(ValueError, match=r"\[2,3\]"):
        GravityEstimator(2).update(np.zeros((3, 3)), np.zeros((3, 3)), np.zeros(3))


# ---------------------------------------------------------------------------------------
# feature window
# ---------------------------------------------------------------------------------------


def _window(t_count=14, n=12, seed=0):
    rng = np.random.default_rng(seed)
    up = rng.normal(size=(t_count, n, 3))
    up /= np.linalg.norm(up, axis=-1, keepdims=True)
    return up, rng.normal(size=(t_count, n, 3)), rng.normal(size=(t_count, n, 3)), np.zeros((t_count, n), dtype=np.uint8)


def test_default_feature_window_is_14x23x3():
    up, gyro, accel, status = _window()
    out = imu_window_features(up, gyro, accel, status, hand_back_index=0)
    assert out.features.shape == (14, 23, 3) and out.features.dtype == np.float32
    assert imu_window_features(up, gyro, None, status, hand_back_index=11).features.shape == (14, 23, 3)
    assert out.valid.shape == (14, 23) and out.valid.all()
    np.testing.assert_array_equal(out.token_of_feature, list(range(12)) + list(range(1, 12)))
    np.testing.assert_array_equal(out.features[:, :12], up.astype(np.float32))
    np.testing.assert_array_equal(out.features[:, 12:], gyro[:, 1:].astype(np.float32))
    # another hand-back index drops that IMU's gyro instead
    out5 = imu_window_features(up, gyro, accel, status, hand_back_index=5)
    np.testing.assert_array_equal(out5.token_of_feature[12:], [s for s in range(12) if s != 5])
    np.testing.assert_array_equal(np.bincount(out5.token_of_feature), [2] * 5 + [1] + [2] * 6)


@pytest.mark.parametrize("name,rows", [("gravity+gyro", 24), ("gravity+gyro+accel", 36), ("gravity", 12), ("gravity+finger_gyro", 23)])
def test_alternative_feature_sets(name, rows):
    up, gyro, accel, status = _window()
    out = imu_window_features(up, gyro, accel, status, feature_set=name, hand_back_index=11)
    assert out.features.shape == (14, rows, 3)
    assert set(out.token_of_feature.tolist()) == set(range(12))
    assert name in FEATURE_SETS
    if name == "gravity+gyro+accel":
        np.testing.assert_array_equal(out.features[:, 24:], accel.astype(np.float32))


def test_custom_rows_and_batch_dims():
    up, gyro, accel, status = _window()
    rows = [("gyro", 3), FeatureRow("accel", 0), ("gravity", 11)]
    out = imu_window_features(up, gyro, accel, status, feature_set=rows)
    np.testing.assert_array_equal(out.token_of_feature, [3, 0, 11])
    np.testing.assert_array_equal(out.features[:, 0], gyro[:, 3].astype(np.float32))
    batched = imu_window_features(np.stack([up, up]), np.stack([gyro, gyro]), None, np.stack([status, status]), hand_back_index=11)
    assert batched.features.shape == (2, 14, 23, 3)
    np.testing.assert_array_equal(batched.features[1], imu_window_features(up, gyro, None, status, hand_back_index=11).features)


def test_dead_padded_invalid_rows_are_zero_and_masked_never_nan():
    up, gyro, accel, status = _window()
    status[:4, :] = ImuStatus.DEAD  # window padding
    status[:, 6] = ImuStatus.DEAD  # dead sensor
    status[10, 2] = ImuStatus.INVALID
    status[11, 3] = ImuStatus.STALE
    status[12, 8] = ImuStatus.SATURATED
    gyro[9, 7] = np.nan
    up[13, 9] = 0.0  # estimator had no estimate
    out = imu_window_features(up, gyro, accel, status, "gravity+gyro+accel")
    assert np.isfinite(out.features).all()
    assert np.all(out.features[~out.valid] == 0)
    tok = out.token_of_feature
    assert not out.valid[:4].any()
    assert not out.valid[:, tok == 6].any()
    assert not out.valid[10, tok == 2].any()
    assert out.valid[11, tok == 3].all() and out.valid[12, tok == 8].all()
    gyro_rows = np.arange(len(tok))[12:24]
    assert not out.valid[9, gyro_rows[7]] and out.valid[9, 7]  # only the NaN gyro row
    assert not out.valid[13, 9] and out.valid[13, gyro_rows[9]]  # only the missing gravity row
    strict = imu_window_features(up, gyro, accel, status, valid_status=[ImuStatus.OK], hand_back_index=11)
    assert not strict.valid[11, strict.token_of_feature == 3].any()


def test_feature_set_errors():
    up, gyro, accel, status = _window()
    with pytest.raises(ConfigError, match="unknown feature set"):
        imu_window_features(up, gyro, accel, status, feature_set="gyro+magic")
    with pytest.raises(ConfigError, match="hand_back_index"):
        feature_rows("gravity+finger_gyro", 12, hand_back_index=12)
    with pytest.raises(ConfigError, match="palm"):
        imu_window_features(up, gyro, accel, status)  # no silent default for the hand-back IMU
    assert len(feature_rows("gravity+gyro", 12)) == 24  # other sets do not need it
    with pytest.raises(ConfigError, match="signal"):
        feature_rows([("mag", 0)], 12)
    with pytest.raises(ValueError, match="accel is None"):
        imu_window_features(up, gyro, None, status, feature_set="gravity+gyro+accel")


def test_simulated_glove_to_features_end_to_end():
    """Simulator → gravity estimator → 14-sample windows: finite, gravity rows unit-norm where valid."""
    pose_at = hand_like_poses(seed=4)
    model = sim.load_imu_error_model("native_noise_floor").with_faults(dead_sensors=[10])
    stream = sim.simulate_glove_imu(pose_at, 0.0, 2.0, model, np.random.default_rng(0))
    up, gvalid = estimate_gravity(stream.imu.accel, stream.imu.gyro, stream.imu.status, DT)
    ends = np.arange(13, len(up), 7)
    idx = ends[:, None] + np.arange(-13, 1)[None, :]  # [W, 14]
    out = imu_window_features(
        up[idx], stream.imu.gyro[idx], stream.imu.accel[idx], stream.imu.status[idx], gravity_valid=gvalid[idx], hand_back_index=11
    )
    assert out.features.shape == (len(ends), 14, 23, 3)
    assert np.isfinite(out.features).all()
    grav = out.features[..., :12, :]
    norms = np.linalg.norm(grav, axis=-1)
    np.testing.assert_allclose(norms[out.valid[..., :12]], 1.0, atol=1e-6)
    assert not out.valid[..., out.token_of_feature == 10].any()
    assert out.valid[..., out.token_of_feature != 10].all()
