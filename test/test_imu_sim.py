"""Glove IMU simulator (avi_ht_ros/sim/imu_sim.py): physics, error model, ADC, availability, clock, config.

Tolerances (each test's docstring says why):

* static specific force: 5e-8 m/s² (round-off of the 5-point stencil at h = 0.25 ms,
  ≈ 2e-8 m/s² per metre of position magnitude);
* accelerometer vs. closed-form rigid-body acceleration: 1e-6 m/s²; vs. an independent
  coarse numerical double derivative: 2e-3 m/s² (that check's own O(h²) error);
* gyro vs. closed form: 1e-8 rad/s; integrated 200 Hz gyro vs. true orientation: < 0.01° after
  5 s of rotation at up to ~20 rad/s (the brief's bound is 0.5°);
* noise statistics: within 10 % of the configured density (≥ 2000 independent Allan pairs
  per estimate, ≈ 2 % standard error).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.imu import GRAVITY_MAGNITUDE, ImuStatus
from avi_ht_ros.sim import imu_sim as sim

RATE = 200.0
DT = 1.0 / RATE
G_UNIT = 9.80665  # datasheet "g" (the world's gravity is 9.81)


# ---------------------------------------------------------------------------------------
# trajectories
# ---------------------------------------------------------------------------------------


def static_poses(rotations: np.ndarray, positions: np.ndarray | None = None) -> sim.PoseFunction:
    rotations = np.asarray(rotations)
    positions = np.zeros((rotations.shape[0], 3)) if positions is None else np.asarray(positions)

    def pose_at(t):
        n = np.asarray(t).size
        return np.broadcast_to(rotations, (n, *rotations.shape)).copy(), np.broadcast_to(positions, (n, *positions.shape)).copy()

    return pose_at


def tumbling_poses(num_sensors: int = 3, seed: int = 7) -> sim.PoseFunction:
    """Rich 3-axis rotation (rates up to ~15 rad/s) plus translation, smooth (C∞)."""
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.4, 2.1, (num_sensors, 3))
    amp = rng.uniform(0.6, 1.5, (num_sensors, 3))
    phase = rng.uniform(0, 2 * np.pi, (num_sensors, 3))
    pos_amp = rng.uniform(0.02, 0.2, (num_sensors, 3))

    def pose_at(t):
        t = np.asarray(t, dtype=np.float64)[:, None, None]
        rotvec = amp * np.sin(2 * np.pi * freq * t + phase)
        rot = Rotation.from_rotvec(rotvec.reshape(-1, 3)).as_matrix().reshape(t.shape[0], num_sensors, 3, 3)
        pos = pos_amp * np.sin(2 * np.pi * freq * t + 2 * phase)
        return rot, pos

    return pose_at


def load(preset: str, **changes) -> sim.ImuErrorModel:
    model = sim.load_imu_error_model(preset)
    return dataclasses.replace(model, **changes) if changes else model


def white_noise_only(model: sim.ImuErrorModel) -> sim.ImuErrorModel:
    """Only the white noise of ``model``: no bias, scale, misalignment, ADC."""
    keep = ("noise_density", "full_scale", "adc_bits")
    strip = {f.name: getattr(sim.ChannelErrorModel(), f.name) for f in dataclasses.fields(sim.ChannelErrorModel) if f.name not in keep}
    return dataclasses.replace(
        model,
        accel=dataclasses.replace(model.accel, **strip),
        gyro=dataclasses.replace(model.gyro, **strip),
        quantize=False,
        saturate=False,
    )


# ---------------------------------------------------------------------------------------
# kinematics
# ---------------------------------------------------------------------------------------


def test_static_sensor_reads_plus_one_g_away_from_ground():
    """At rest f_s = R_wsᵀ (0, 0, +9.81): +1 g along whichever sensor axis points up (5e-8, positions ≤ 1 m)."""
    named = {
        "z up": Rotation.identity(),
        "upside down": Rotation.from_euler("x", 180, degrees=True),
        "x up": Rotation.from_euler("y", -90, degrees=True),  # sensor x -> world z
        "y up": Rotation.from_euler("x", 90, degrees=True),  # sensor y -> world z
    }
    rots = list(named.values()) + list(Rotation.random(6, random_state=3))
    mats = np.stack([r.as_matrix() for r in rots])
    positions = np.random.default_rng(0).uniform(-1, 1, (len(rots), 3))
    sig = sim.ideal_imu_signals(static_poses(mats, positions), np.arange(0.0, 0.1, DT))
    expected = np.einsum("sji,j->si", mats, [0.0, 0.0, GRAVITY_MAGNITUDE])
    np.testing.assert_allclose(sig.accel, np.broadcast_to(expected, sig.accel.shape), atol=5e-8)
    np.testing.assert_allclose(sig.gyro, 0.0, atol=1e-12)
    np.testing.assert_allclose(sig.accel[0, :4], [[0, 0, 9.81], [0, 0, -9.81], [9.81, 0, 0], [0, 9.81, 0]], atol=5e-8)


def test_rigid_body_mounting_point_matches_closed_form():
    """A sensor mounted at r on a body spinning about a fixed axis: f = R_sᵀ(a_c + R_b(α×r + ω×(ω×r)) − g).

    θ(t) = A sin(Ωt) about unit n, body centre moving on a sinusoid; closed-form ω, α, so the
    check is independent of the simulator's stencil.  Tolerances 1e-6 m/s², 1e-8 rad/s.
    """
    n = np.array([1.0, 2.0, 2.0]) / 3.0
    amp, omega = 1.3, 2 * np.pi * 1.7
    r = np.array([0.05, -0.02, 0.01])
    mount = Rotation.from_euler("xyz", [10, -30, 45], degrees=True)
    c_amp, c_w = np.array([0.1, 0.05, -0.07]), 2 * np.pi * np.array([0.9, 1.3, 0.5])

    def body(t):
        return Rotation.from_rotvec(np.outer(amp * np.sin(omega * t), n))

    def pose_at(t):
        t = np.asarray(t)
        rb = body(t)
        rs = rb * mount
        pos = c_amp * np.sin(np.outer(t, c_w)) + rb.apply(r)
        return rs.as_matrix()[:, None], pos[:, None]

    t = np.arange(0.0, 2.0, DT)
    sig = sim.ideal_imu_signals(pose_at, t)
    rb = body(t)
    theta_d = amp * omega * np.cos(omega * t)
    theta_dd = -amp * omega**2 * np.sin(omega * t)
    w_b, alpha_b = np.outer(theta_d, n), np.outer(theta_dd, n)  # body frame == world frame for a fixed axis n
    a_centre = -c_amp * c_w**2 * np.sin(np.outer(t, c_w))
    a_point = a_centre + rb.apply(np.cross(alpha_b, r) + np.cross(w_b, np.cross(w_b, r)))
    rs = rb * mount
    expected_accel = rs.inv().apply(a_point - sim.GRAVITY_WORLD)
    expected_gyro = mount.inv().apply(w_b)
    np.testing.assert_allclose(sig.accel[:, 0], expected_accel, atol=1e-6)
    np.testing.assert_allclose(sig.gyro[:, 0], expected_gyro, atol=1e-8)


def test_accel_matches_independent_numerical_double_derivative():
    """Independent check: np.gradient twice on a 0.1 ms grid (O(h²) ≈ 1e-4 m/s²), rotated and minus g (2e-3)."""
    pose_at = tumbling_poses(3)
    t = np.arange(0.5, 1.5, 0.05)
    sig = sim.ideal_imu_signals(pose_at, t)
    h = 1e-4
    for k, tk in enumerate(t):
        grid = tk + h * np.arange(-3, 4)
        rot, pos = pose_at(grid)
        acc = np.gradient(np.gradient(pos, h, axis=0), h, axis=0)[3]
        expected = np.einsum("sji,sj->si", rot[3], acc - sim.GRAVITY_WORLD)
        np.testing.assert_allclose(sig.accel[k], expected, atol=2e-3)


def _integrate_body_rates(r0: Rotation, gyro: np.ndarray, dt: float) -> Rotation:
    """4th-order Magnus step per sample interval: ω at the two Gauss points by cubic Lagrange
    interpolation of the neighbouring samples, Ω = dt/2 (ω₁+ω₂) + √3 dt²/12 ω₁×ω₂, R ← R exp(Ω)."""
    padded = np.concatenate([2 * gyro[:1] - gyro[1:2], gyro, 2 * gyro[-1:] - gyro[-2:-1]])

    def lagrange(x):  # weights of samples k-1, k, k+1, k+2 at k + x
        return np.array([-x * (x - 1) * (x - 2) / 6, (x + 1) * (x - 1) * (x - 2) / 2, -(x + 1) * x * (x - 2) / 2, (x + 1) * x * (x - 1) / 6])

    w_g = [
        np.einsum("j,kjc->kc", lagrange(x), np.lib.stride_tricks.sliding_window_view(padded, 4, axis=0).transpose(0, 2, 1))
        for x in (0.5 - np.sqrt(3) / 6, 0.5 + np.sqrt(3) / 6)
    ]
    steps = Rotation.from_rotvec(dt / 2 * (w_g[0] + w_g[1]) + np.sqrt(3) * dt**2 / 12 * np.cross(w_g[0], w_g[1]))
    r = r0
    for k in range(len(gyro) - 1):
        r = r * steps[k]
    return r


def test_integrated_gyro_reproduces_orientation():
    """5 s of tumbling at up to ~20 rad/s, 200 Hz ideal gyro integrated: < 0.01° from the true final orientation.

    (The 4th-order integrator's own error is ~1e-3° here; a 2nd-order one reaches 0.57°.)

    Negative control: the world-frame angular velocity (the classic frame mix-up) drifts by
    tens of degrees with the same integrator.
    """
    pose_at = tumbling_poses(3)
    t = np.arange(0.0, 5.0 + DT / 2, DT)
    sig = sim.ideal_imu_signals(pose_at, t)
    assert np.abs(sig.gyro).max() > 8.0  # the motion really is rich
    rot, _ = pose_at(t)
    wrong = np.einsum("tsij,tsj->tsi", rot, sig.gyro)  # R ω_s: world-frame rate
    for s in range(3):
        r_true = Rotation.from_matrix(rot[:, s])
        r_int = _integrate_body_rates(r_true[0], sig.gyro[:, s], DT)
        assert np.degrees((r_int.inv() * r_true[-1]).magnitude()) < 0.01
        r_wrong = _integrate_body_rates(r_true[0], wrong[:, s], DT)
        assert np.degrees((r_wrong.inv() * r_true[-1]).magnitude()) > 5.0


def test_c2_trajectory_error_bound_at_spline_knots():
    """Only-C² motion (cubic spline, jerk jumps J at knots): error ≤ J·h/9 (the documented bound) + 1e-7."""
    from scipy.interpolate import CubicSpline

    rng = np.random.default_rng(4)
    knots = np.arange(0.0, 2.01, 0.1)
    spline = CubicSpline(knots, rng.normal(0, 0.05, (knots.size, 3)))
    jerk_jump = np.abs(np.diff(spline.c[0] * 6, axis=0)).max()  # 3rd derivative = 6·c₀ per piece

    def pose_at(t):
        t = np.asarray(t)
        return np.broadcast_to(np.eye(3), (t.size, 1, 3, 3)).copy(), spline(t)[:, None]

    t = np.sort(np.concatenate([np.arange(0.2, 1.8, DT), knots[2:-2] + 1e-4, knots[2:-2] - 3e-4]))
    sig = sim.ideal_imu_signals(pose_at, t)
    err = np.abs(sig.accel[:, 0] - (spline(t, 2) - sim.GRAVITY_WORLD)).max()
    assert err <= jerk_jump * sim.DEFAULT_STENCIL_STEP_S / 9 + 1e-7
    assert err > 1e-3 * jerk_jump * sim.DEFAULT_STENCIL_STEP_S  # the knots really were hit


def test_dense_samples_through_splines():
    """Dense 1 kHz samples → C² spline pose function → IMU signals within the spline error (0.05 m/s², 0.01 rad/s)."""
    pose_at = tumbling_poses(2, seed=11)
    dense_t = np.arange(0.0, 3.0, 1e-3)
    rot, pos = pose_at(dense_t)
    splined = sim.pose_function_from_samples(dense_t, rot, pos)
    t = np.arange(0.5, 2.5, DT)
    exact = sim.ideal_imu_signals(pose_at, t)
    approx = sim.ideal_imu_signals(splined, t)
    np.testing.assert_allclose(approx.accel, exact.accel, atol=5e-2)
    np.testing.assert_allclose(approx.gyro, exact.gyro, atol=1e-2)


def test_chunking_does_not_change_result():
    pose_at = tumbling_poses(2)
    t = np.arange(0.0, 1.0, DT)
    a = sim.ideal_imu_signals(pose_at, t, chunk_size=7)
    b = sim.ideal_imu_signals(pose_at, t, chunk_size=4096)
    np.testing.assert_array_equal(a.accel, b.accel)
    np.testing.assert_array_equal(a.gyro, b.gyro)


# ---------------------------------------------------------------------------------------
# error model
# ---------------------------------------------------------------------------------------


def _static_run(model: sim.ImuErrorModel, num_sensors: int, seconds: float, seed: int = 0) -> sim.ImuMeasurements:
    t_count = int(seconds * RATE)
    accel = np.broadcast_to([0.0, 0.0, GRAVITY_MAGNITUDE], (t_count, num_sensors, 3)).copy()
    gyro = np.zeros((t_count, num_sensors, 3))
    return sim.SimulatedImuArray(model, num_sensors, np.random.default_rng(seed), RATE).measure(accel, gyro)


def _allan_deviation(x: np.ndarray, m: int) -> float:
    """Non-overlapping Allan deviation at cluster size m, pooled over all columns of x [T, ...]."""
    k = x.shape[0] // m
    means = x[: k * m].reshape(k, m, -1).mean(axis=1)
    return float(np.sqrt(0.5 * np.mean(np.diff(means, axis=0) ** 2)))


def test_white_noise_matches_configured_density():
    """Static 60 s, 12 sensors: sample σ = N·√200 and Allan deviation at τ = 1 s = N, each within 10 %."""
    model = white_noise_only(load("native_noise_floor"))
    meas = _static_run(model, 12, 60.0)
    for name, density in (("accel", model.accel.noise_density), ("gyro", model.gyro.noise_density)):
        err = getattr(meas, name) - getattr(meas, f"{name}_true")
        assert np.std(err) == pytest.approx(density * np.sqrt(RATE), rel=0.1)
        assert _allan_deviation(err, int(RATE)) == pytest.approx(density, rel=0.1)


def test_full_native_model_sample_noise_matches_measurement_variance():
    """With biases, scale, misalignment and ADC on, half the first-difference variance ≈ measurement_variance (10 %)."""
    model = load("native_noise_floor")
    meas = _static_run(model, 12, 30.0)
    var_a, var_g = model.measurement_variance(RATE)
    for name, var in (("accel", var_a), ("gyro", var_g)):
        x = getattr(meas, name)
        assert 0.5 * np.var(np.diff(x, axis=0)) == pytest.approx(var, rel=0.1)


def test_bias_processes_have_configured_statistics():
    """Gauss–Markov σ = B/0.6174 (stationary, 15 %); random walk var(b(t)) = K²·t (15 %); turn-on σ (15 %)."""
    gm = sim.ChannelErrorModel(bias_instability=0.01, bias_correlation_time=0.5)
    rw = sim.ChannelErrorModel(bias_random_walk=0.02, bias_correlation_time=1.0)
    on = sim.ChannelErrorModel(turn_on_bias=0.03)
    for channel, expected_std_at in (
        (gm, lambda t: 0.01 / sim.GAUSS_MARKOV_ALLAN_PEAK),
        (rw, lambda t: 0.02 * np.sqrt(t)),
        (on, lambda t: 0.03),
    ):
        model = sim.ImuErrorModel(accel=channel, quantize=False, saturate=False)
        meas = _static_run(model, 300, 4.0, seed=5)
        for k in (0, 399, 799):
            t = (k + 1) * DT
            assert np.std(meas.accel_bias[k]) == pytest.approx(expected_std_at(t), rel=0.15)


def test_gauss_markov_bias_allan_peak_is_bias_instability():
    """Allan deviation of the Gauss–Markov bias peaks at B near τ ≈ 1.89 T_c (15 %)."""
    model = sim.ImuErrorModel(
        gyro=sim.ChannelErrorModel(bias_instability=1e-3, bias_correlation_time=0.1, full_scale=35.0),
        quantize=False,
        saturate=False,
    )
    meas = _static_run(model, 20, 40.0, seed=2)
    m = int(round(1.89 * 0.1 * RATE))
    assert _allan_deviation(meas.gyro_bias, m) == pytest.approx(1e-3, rel=0.15)


def test_noise_scale_zero_equals_ideal_and_errors_scale_linearly():
    """noise_scale 0 is the ideal model exactly (bitwise, with and without the same ADC); errors are linear in k."""
    pose_at = tumbling_poses(4)
    native = load("native_noise_floor")
    ideal = load("ideal")

    def run(model):
        return sim.simulate_glove_imu(pose_at, 0.0, 2.0, model, np.random.default_rng(42)).imu

    zero_adc = run(native.scaled(0.0))
    ideal_adc = run(dataclasses.replace(ideal, quantize=True, saturate=True))
    np.testing.assert_array_equal(zero_adc.accel, ideal_adc.accel)
    np.testing.assert_array_equal(zero_adc.gyro_counts, ideal_adc.gyro_counts)
    zero_raw = run(dataclasses.replace(native.scaled(0.0), quantize=False, saturate=False))
    ideal_raw = run(ideal)
    np.testing.assert_array_equal(zero_raw.accel, ideal_raw.accel)
    np.testing.assert_array_equal(zero_raw.gyro, ideal_raw.gyro)
    np.testing.assert_array_equal(ideal_raw.gyro, ideal_raw.gyro_true)

    one = run(dataclasses.replace(native, quantize=False, saturate=False))
    two = run(dataclasses.replace(native.scaled(2.0), quantize=False, saturate=False))
    np.testing.assert_allclose(two.accel - two.accel_true, 2 * (one.accel - one.accel_true), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(two.gyro - two.gyro_true, 2 * (one.gyro - one.gyro_true), rtol=1e-9, atol=1e-12)
    assert np.std(one.gyro - one.gyro_true) > 1e-3


def test_scale_and_misalignment_are_per_sensor_and_applied():
    """Noise-free model with only scale/misalignment: y = (I + E_s) x with E_s = error_matrix, different per sensor."""
    model = sim.ImuErrorModel(
        gyro=sim.ChannelErrorModel(scale_factor=0.01, misalignment=0.02, full_scale=35.0),
        quantize=False,
        saturate=False,
    )
    rng = np.random.default_rng(9)
    gyro_true = rng.normal(0, 2, (100, 5, 3))
    arr = sim.SimulatedImuArray(model, 5, np.random.default_rng(1), RATE)
    meas = arr.measure(np.zeros_like(gyro_true), gyro_true)
    e = arr.error_matrix("gyro")
    np.testing.assert_allclose(meas.gyro, gyro_true + np.einsum("sij,tsj->tsi", e, gyro_true), rtol=1e-12)
    assert np.all(np.diagonal(e, axis1=1, axis2=2) != 0) and np.all(e[:, 0, 1] != 0)
    assert not np.allclose(e[0], e[1])


def test_deterministic_per_seed():
    model = load("native_noise_floor_with_dropouts").with_faults(dead_sensors={2: 0.5})
    pose_at = tumbling_poses(4)
    a = sim.simulate_glove_imu(pose_at, 0.0, 1.0, model, np.random.default_rng(123))
    b = sim.simulate_glove_imu(pose_at, 0.0, 1.0, model, np.random.default_rng(123))
    c = sim.simulate_glove_imu(pose_at, 0.0, 1.0, model, np.random.default_rng(124))
    for field in ("accel", "gyro", "accel_counts", "gyro_counts", "status"):
        np.testing.assert_array_equal(getattr(a.imu, field), getattr(b.imu, field))
    assert not np.array_equal(a.imu.accel, c.imu.accel)


def test_same_physical_glove_keeps_its_constant_errors():
    model = dataclasses.replace(load("native_noise_floor"), quantize=False)
    glove = sim.SimulatedImuArray(model, 3, np.random.default_rng(0), RATE)
    bias_before = glove.turn_on_bias("accel")
    run1 = sim.simulate_glove_imu(tumbling_poses(3), 0.0, 0.5, glove)
    run2 = sim.simulate_glove_imu(tumbling_poses(3), 0.0, 0.5, glove)
    np.testing.assert_array_equal(glove.turn_on_bias("accel"), bias_before)
    assert not np.array_equal(run1.imu.accel, run2.imu.accel)  # new white noise per run


# ---------------------------------------------------------------------------------------
# ADC and availability
# ---------------------------------------------------------------------------------------


def test_saturation_clamps_and_flags():
    """Gyro at 3000 °/s on a ±2000 °/s part and 1 g on a ±0.5 g accel clamp at the top count and read SATURATED."""
    model = load("native_noise_floor").scaled(0.0)
    model = dataclasses.replace(model, accel=dataclasses.replace(model.accel, full_scale=0.5 * GRAVITY_MAGNITUDE))
    t_count = 50
    accel = np.zeros((t_count, 3, 3))
    accel[:, 0, 2] = GRAVITY_MAGNITUDE  # sensor 0: static, z up -> accel saturates
    gyro = np.zeros((t_count, 3, 3))
    gyro[:, 1, 0] = np.radians(3000.0)  # sensor 1: spinning too fast
    gyro[:, 1, 1] = -np.radians(3000.0)
    meas = sim.SimulatedImuArray(model, 3, np.random.default_rng(0), RATE).measure(accel, gyro)
    lo, hi = model.gyro.count_range
    assert np.all(meas.accel_counts[:, 0, 2] == hi)
    assert meas.accel[:, 0, 2] == pytest.approx(hi * model.accel.lsb)
    assert np.all(meas.accel[:, 0, 2] < 0.5 * GRAVITY_MAGNITUDE)
    assert np.all(meas.gyro_counts[:, 1, 0] == hi) and np.all(meas.gyro_counts[:, 1, 1] == lo)
    assert meas.gyro[0, 1, 1] == pytest.approx(-model.gyro.full_scale)
    assert np.all(meas.status[:, :2] == ImuStatus.SATURATED)
    assert np.all(meas.status[:, 2] == ImuStatus.OK)


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.floats(-1e7, 1e7, allow_nan=False), min_size=3, max_size=60),
    bits=st.integers(2, 16),
)
def test_quantization_produces_int16_counts(values, bits):
    """Any finite input: int16 counts within the ADC range; value == counts·lsb; in-range error ≤ lsb/2."""
    x = np.asarray(values)[: len(values) // 3 * 3].reshape(-1, 1, 3)
    channel = sim.ChannelErrorModel(full_scale=100.0, adc_bits=bits)
    model = sim.ImuErrorModel(accel=channel, gyro=channel)
    meas = sim.SimulatedImuArray(model, 1, np.random.default_rng(0), RATE).measure(x, x)
    lo, hi = channel.count_range
    assert meas.accel_counts.dtype == np.int16
    assert meas.accel_counts.min() >= lo and meas.accel_counts.max() <= hi
    np.testing.assert_array_equal(meas.accel, meas.accel_counts * channel.lsb)
    inside = (x > lo * channel.lsb) & (x < hi * channel.lsb)
    assert np.all(np.abs(meas.accel - x)[inside] <= channel.lsb / 2 + 1e-12)
    saturated = ((meas.accel_counts == lo) | (meas.accel_counts == hi)).any(axis=-1)
    np.testing.assert_array_equal(meas.status == ImuStatus.SATURATED, saturated)


def test_dead_sensors_output_zeros_and_are_flagged():
    model = load("native_noise_floor").with_faults(dead_sensors={1: 0.0, 3: 0.5})
    stream = sim.simulate_glove_imu(tumbling_poses(4), 0.0, 1.0, model, np.random.default_rng(0))
    imu, t = stream.imu, stream.true_time_s - stream.true_time_s[0]
    dead = np.zeros_like(imu.status, dtype=bool)
    dead[:, 1] = True
    dead[t >= 0.5, 3] = True
    np.testing.assert_array_equal(imu.status == ImuStatus.DEAD, dead)
    for field in ("accel", "gyro", "accel_counts", "gyro_counts"):
        assert np.all(getattr(imu, field)[dead] == 0)
        assert np.all(np.any(getattr(imu, field)[~dead] != 0, axis=-1))


def test_dropouts_repeat_previous_sample_at_configured_rate():
    """5 % dropouts in bursts of mean 4: STALE fraction 5 % (±1 %), mean burst 4 (±15 %), values repeat the last fresh sample."""
    model = load("native_noise_floor").with_faults(dropout_rate=0.05, mean_dropout_length=4)
    stream = sim.simulate_glove_imu(tumbling_poses(12, seed=1), 0.0, 30.0, model, np.random.default_rng(3))
    imu = stream.imu
    stale = imu.status == ImuStatus.STALE
    assert stale.mean() == pytest.approx(0.05, abs=0.01)
    starts = stale[1:] & ~stale[:-1]
    assert stale.sum() / starts.sum() == pytest.approx(4.0, rel=0.15)
    t_idx, s_idx = np.nonzero(stale)
    np.testing.assert_array_equal(imu.accel_counts[t_idx, s_idx], imu.accel_counts[t_idx - 1, s_idx])
    np.testing.assert_array_equal(imu.gyro[t_idx, s_idx], imu.gyro[t_idx - 1, s_idx])
    assert not stale[0].any()
    fresh_changes = np.any(imu.gyro[1:] != imu.gyro[:-1], axis=-1)
    assert fresh_changes[~stale[1:]].mean() > 0.99


def test_per_sensor_dropout_rates():
    model = load("native_noise_floor").with_faults(dropout_rate=(0.0, 0.2, 0.0))
    stream = sim.simulate_glove_imu(tumbling_poses(3), 0.0, 10.0, model, np.random.default_rng(0))
    stale = stream.imu.status == ImuStatus.STALE
    assert not stale[:, 0].any() and not stale[:, 2].any()
    assert stale[:, 1].mean() == pytest.approx(0.2, abs=0.03)
    with pytest.raises(ConfigError, match="dropout_rate"):
        sim.SimulatedImuArray(model, 4, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------
# clock
# ---------------------------------------------------------------------------------------


def test_device_clock_mapping_and_schedule():
    """Samples are 5000 µs apart on the device clock; true spacing 5 ms/(1 + drift); mapping round-trips."""
    clock = sim.DeviceClock(offset_s=12.345, drift_ppm=150.0)
    t = np.linspace(0, 100, 11)
    np.testing.assert_allclose(clock.true_from_device(clock.device_from_true(t)), t, atol=1e-12)
    device_us, true_t = clock.sample_schedule(1.0, 3.0, RATE)
    assert device_us.dtype == np.uint64
    assert np.all(np.diff(device_us.astype(np.int64)) == 5000)
    assert device_us[0] % 5000 == 0
    np.testing.assert_allclose(np.diff(true_t), DT / (1 + 150e-6), rtol=1e-9)
    np.testing.assert_allclose(clock.device_from_true(true_t) * 1e6, device_us.astype(np.float64), atol=1e-3)
    assert true_t[0] >= 1.0 and true_t[-1] <= 3.0 and true_t[0] - 1.0 < DT
    stream = sim.simulate_glove_imu(
        tumbling_poses(2), 1.0, 2.0, load("ideal"), np.random.default_rng(0), clock=clock, first_sequence=2**32 - 3
    )
    assert stream.sequence.dtype == np.uint32
    assert list(stream.sequence[:5]) == [2**32 - 3, 2**32 - 2, 2**32 - 1, 0, 1]
    with pytest.raises(ConfigError, match="offset_s"):
        sim.DeviceClock(offset_s=-5.0).sample_schedule(0.0, 1.0)


# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------


def test_presets_load_with_stated_units():
    native = sim.load_imu_error_model("native_noise_floor")
    assert native.accel.noise_density == pytest.approx(180e-6 * G_UNIT)
    assert native.gyro.noise_density == pytest.approx(np.radians(0.006))
    assert native.gyro.full_scale == pytest.approx(np.radians(2000))
    assert native.accel.full_scale == pytest.approx(16 * G_UNIT)
    assert native.quantize and native.saturate and native.noise_scale == 1.0
    ideal = sim.load_imu_error_model("ideal")
    assert ideal.accel.noise_density == 0 and ideal.gyro.turn_on_bias == 0 and not ideal.quantize
    lossy = sim.load_imu_error_model("native_noise_floor_with_dropouts", noise_scale=1.5)
    assert lossy.dropout_rate == pytest.approx(0.01) and lossy.accel == native.accel and lossy.noise_scale == 1.5
    assert {"ideal", "native_noise_floor"} <= set(sim.available_presets())


@pytest.mark.parametrize(
    "text,preset,match",
    [
        ("presets: {a: {accel: {noise_density: 3 furlongs}}}", "a", r"presets\.a\.accel\.noise_density.*unit"),
        ("presets: {a: {gyro: {noise_densty: 0.1}}}", "a", r"presets\.a\.gyro\.noise_densty.*unknown key"),
        ("presets: {a: {accel: {turn_on_bias: -1 mg}}}", "a", r"turn_on_bias.*>= 0"),
        ("presets: {a: {accel: {adc_bits: 17}}}", "a", r"adc_bits"),
        ("presets: {a: {dropout_rate: 1.5}}", "a", r"dropout_rate"),
        ("presets: {a: {base: b}, b: {base: a}}", "a", r"cycle"),
        ("presets: {a: {}}", "nope", r"unknown preset"),
        ("presets: [1, 2]", "a", r"presets"),
        ("presets: {a: {quantize: 1}}", "a", r"quantize"),
        ("presets: {a: {dead_sensors: 3}}", "a", r"dead_sensors"),
    ],
)
def test_config_errors_name_the_place(tmp_path, text, preset, match):
    path = tmp_path / "noise.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        sim.load_imu_error_model(preset, path)
    assert str(path) in str(info.value)


def test_adc_follows_the_glove_config_imu_spec():
    """with_imu_spec: counts use the glove config's ranges/bits (what the driver decodes with)."""
    from avi_ht_ros.common.glove_model import GloveModel

    spec = GloveModel.reference().sites[0].imu
    native = sim.load_imu_error_model("native_noise_floor")
    model = native.with_imu_spec(spec)
    assert model.accel.full_scale == spec.accel_range and model.gyro.adc_bits == spec.adc_bits
    assert model.accel.lsb == pytest.approx(spec.accel_resolution) and model.gyro.lsb == pytest.approx(spec.gyro_resolution)
    assert model.accel.noise_density == native.accel.noise_density
    assert native.with_imu_spec(spec, noise_density=True).gyro.noise_density == spec.gyro_noise_density


def test_parse_quantity_units():
    assert sim.parse_quantity("160 µg/√Hz", "accel_density", "x") == pytest.approx(160e-6 * G_UNIT)
    assert sim.parse_quantity("0.007 DPS/sqrt(Hz)", "gyro_density", "x") == pytest.approx(np.radians(0.007))
    assert sim.parse_quantity("5 deg/h", "gyro", "x") == pytest.approx(np.radians(5) / 3600)
    assert sim.parse_quantity(0.25, "ratio", "x") == 0.25
    assert sim.parse_quantity("2 %", "angle", "x") == pytest.approx(0.02)
    with pytest.raises(ConfigError, match="^where: "):
        sim.parse_quantity("1 g", "gyro", "where")
