"""Fault injection, IMU values: NaN/inf, saturation, stuck sensors, device flags, k dead IMUs.

* The glove driver node (real rclpy, simulated glove over a pty) classifies every faulty
  IMU in ``GloveSample.status``, zeroes what must not be used, never publishes a
  non-finite value, and shows each faulty IMU in ``/diagnostics``.
* The chain driver health -> synchronizer -> online tracker (what evaluation and the
  fusion node run) reports a tracking state that reflects the fault, and the model gives
  no attention to IMUs that are dead or invalid.
* The fusion node (real rclpy) keeps publishing one finite pose per frame for k = 0..12
  dead IMUs, NaN/inf windows and saturated sensors.

The untrained test model's sigma says nothing about accuracy; MKPE and sigma vs k for a
trained checkpoint come from ``avi-ht reliability --dead-sensors-sweep`` (docs/RELIABILITY.md).
"""
from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter

from avi_ht_ros.common.camera import default_sim_camera
from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.common.imu import ImuStatus
from avi_ht_ros.driver.health import SensorHealthMonitor, zero_unusable
from avi_ht_ros.driver.protocol import (HAND_RIGHT, SENSOR_FLAG_DATA_ERROR, SENSOR_FLAG_NOT_RESPONDING,
                                        SENSOR_FLAG_NOT_UPDATED, GloveFrame)
from avi_ht_ros.driver.sim_device import REFERENCE_ACCEL_SCALE, REFERENCE_GYRO_SCALE, SimulatedGlove
from avi_ht_ros.io import convert
from avi_ht_ros.models.checkpoint import save_checkpoint
from avi_ht_ros.models.config import ModelConfig
from avi_ht_ros.models.factory import build_model
from avi_ht_ros.msg import GloveSample, HandPose, SyncedFrame
from avi_ht_ros.nodes import base
from avi_ht_ros.tracker.sync import SyncConfig, live_synchronizer
from avi_ht_ros.tracker.tracker import (TRACKING_DEGRADED, TRACKING_IMU_ONLY, TRACKING_LOST, TRACKING_OK,
                                        TRACKING_VISION_ONLY, HandTracker, TrackerConfig)
from reliability_log import record

OK, STALE, SATURATED, DEAD, INVALID = (int(s) for s in ImuStatus)
STATE_NAMES = {TRACKING_LOST: "lost", TRACKING_OK: "ok", TRACKING_VISION_ONLY: "vision_only",
               TRACKING_IMU_ONLY: "imu_only", TRACKING_DEGRADED: "degraded"}
N = 12


def clean_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A still hand: gravity along each IMU's z plus sensor noise."""
    accel = np.tile([0.3, -0.2, 9.75], (N, 1)) + rng.normal(0, 0.05, (N, 3))
    gyro = rng.normal(0, 0.01, (N, 3))
    return accel, gyro


# What each IMU suffers once the faults are on, and the status the driver must report.
FAULTS = {  # sensor: (fault, expected status)
    0: ("accel NaN", INVALID),
    1: ("gyro +inf", INVALID),
    2: ("accel x beyond full scale (1e6 m/s^2)", SATURATED),
    3: ("stuck: identical values every sample", DEAD),  # STALE after 3 repeats, DEAD after 0.1 s
    4: ("all zeros (absent IMU)", DEAD),
    5: ("device flag NOT_RESPONDING", DEAD),
    6: ("device flag DATA_ERROR", INVALID),
    7: ("device flag NOT_UPDATED", STALE),
}


class FaultySource:
    """Sample source for SimulatedGlove: clean until ``onset_s`` of device time, then FAULTS."""

    def __init__(self, onset_s: float, seed: int = 0):
        self.onset_s = onset_s
        self.rng = np.random.default_rng(seed)
        self.stuck = None

    def __call__(self, device_time_s: float):
        accel, gyro = clean_sample(self.rng)
        flags = np.zeros(N, np.uint8)
        if device_time_s - 1.0 >= self.onset_s:  # the simulator's device clock starts at 1 s
            accel[0, 1] = np.nan
            gyro[1, 2] = np.inf
            accel[2, 0] = 1e6
            if self.stuck is None:
                self.stuck = (accel[3].copy(), gyro[3].copy())
            accel[3], gyro[3] = self.stuck
            accel[4] = gyro[4] = 0.0
            flags[5] = SENSOR_FLAG_NOT_RESPONDING
            flags[6] = SENSOR_FLAG_DATA_ERROR
            flags[7] = SENSOR_FLAG_NOT_UPDATED
        return accel, gyro, None, flags


@pytest.mark.ros
def test_driver_node_classifies_faulty_imus_and_never_publishes_non_finite_values(rclpy_context, tmp_path):
    from avi_ht_ros.nodes.glove_driver_node import GloveDriverNode
    from node_harness import Harness

    onset_s = 0.3
    sim = SimulatedGlove(FaultySource(onset_s), link_path=tmp_path / "glove")
    node = GloveDriverNode(context=rclpy_context, namespace="right", parameter_overrides=[
        Parameter("serial.port", value=str(tmp_path / "glove")), Parameter("diagnostics_period_s", value=0.2)])
    h = Harness(rclpy_context, node)
    try:
        samples = h.collect(GloveSample, "/right/glove/samples", base.RELIABLE_GLOVE_QOS)
        diagnostics = h.collect(DiagnosticArray, "/diagnostics", base.RELIABLE_QOS)
        assert h.spin_until(lambda: node.link.connected, 5.0)
        sim.start()
        assert h.spin_until(lambda: len(samples) >= 400, 15.0)
        h.spin_for(0.3)
    finally:
        sim.stop()
        h.close()
    msgs = [convert.deserialize(m, convert.GLOVE_SAMPLE) for m in samples]
    faulty_frames = 0
    for m in msgs:
        _, accel, gyro, status = convert.glove_arrays_from_msg(m)
        assert np.isfinite(accel).all() and np.isfinite(gyro).all()  # never a NaN/inf on the topic
        unusable = (status == DEAD) | (status == INVALID)
        assert (accel[unusable] == 0).all() and (gyro[unusable] == 0).all()  # zeroed, as the message says
        faults_on_for = (m.device_time_us - 1_000_000) * 1e-6 - onset_s
        if faults_on_for < 0:
            assert (status == OK).all(), status
        elif faults_on_for >= 0.15:  # past the 0.1 s dead_after_s of the stuck IMU
            faulty_frames += 1
            expected = np.full(N, OK)
            for sensor, (_, code) in FAULTS.items():
                expected[sensor] = code
            np.testing.assert_array_equal(status, expected)
    assert faulty_frames >= 150
    # the sequence numbers show no frame was lost to the faults
    sequences = np.array([m.sequence for m in msgs])
    assert np.all(np.diff(sequences) == 1)
    # every faulty IMU is visible in /diagnostics: ERROR for unusable, WARN for degraded
    last = {}
    for data in diagnostics:
        for status in convert.deserialize(data, "diagnostic_msgs/msg/DiagnosticArray").status:
            if " imu " in status.name:
                last[status.hardware_id] = (int(status.level), status.message)
    frame_ids = GloveModel.reference().frame_ids("right")
    levels = {i: last[frame_ids[i]] for i in range(N)}
    for sensor, (_, code) in FAULTS.items():
        expected_level = 1 if code in (STALE, SATURATED) else 2
        assert levels[sensor][0] == expected_level, (sensor, levels[sensor])
    assert all(levels[i] == (0, "ok") for i in range(8, N)), levels
    record("driver node: IMU value faults (pty, rclpy)",
           "8 of 12 IMUs faulty at once: NaN accel, +inf gyro, accel beyond full scale, stuck values, all "
           "zeros, flags NOT_RESPONDING / DATA_ERROR / NOT_UPDATED",
           faulty_frames * len(FAULTS),
           f"{len(msgs)} samples published, none lost, none non-finite; each IMU classified as expected in "
           f"{faulty_frames}/{faulty_frames} frames (INVALID/DEAD zeroed, SATURATED/STALE kept); /diagnostics "
           "ERROR for the 6 unusable IMUs, WARN for saturated/stale, OK for the 4 healthy ones",
           faults={str(k): v[0] for k, v in FAULTS.items()}, published=len(msgs))


# ====================================================================== tracker chain (ROS-free)

@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the fusion node runs (torch_threads 1); 2 cores are shared in CI
    torch.manual_seed(0)
    yield build_model(ModelConfig(type="avi_ht"), GloveModel.reference()).eval()
    torch.set_num_threads(threads)


def chain_estimate(model, fault=None, samples: int = 40):
    """Glove frames (with ``fault(k, accel, gyro, flags)`` applied) through driver health,
    the synchronizer and a fresh online tracker; the estimate of one camera frame."""
    glove = GloveModel.reference()
    rng = np.random.default_rng(1)
    health = SensorHealthMonitor(N)
    sync = live_synchronizer(SyncConfig(), glove)
    for k in range(samples):
        accel, gyro = clean_sample(rng)
        flags = np.zeros(N, np.uint8)
        if fault is not None:
            fault(k, accel, gyro, flags)
        frame = GloveFrame.from_si(handedness=HAND_RIGHT, sequence=k, device_time_us=k * 5000, accel=accel,
                                   gyro=gyro, accel_scale=REFERENCE_ACCEL_SCALE, gyro_scale=REFERENCE_GYRO_SCALE,
                                   sensor_flags=flags)
        status = health.classify(frame)
        sync.add_glove_sample(k * 5_000_000, zero_unusable(frame.accel, status), zero_unusable(frame.gyro, status),
                              status)
    camera_ns = (samples - 2) * 5_000_000
    sync.add_camera_frame(camera_ns, None)
    (result,) = sync.poll(None)
    camera = default_sim_camera()
    tracker = HandTracker(model, camera, glove, "right", TrackerConfig(lost_sigma_m=1.0, init_refinements=0))
    window = {"gravity_up": result.window.gravity_up, "gyro": result.window.gyro, "accel": result.window.accel,
              "status": result.window.status, "window_state": result.window.state}
    image = np.full((camera.height, camera.width), 90, np.uint8)
    return tracker.step(camera_ns, image, window), window, tracker


def dead(sensors):
    def fault(k, accel, gyro, flags):
        flags[list(sensors)] = SENSOR_FLAG_NOT_RESPONDING
    return fault


def test_tracking_state_and_attention_reflect_k_dead_imus(model):
    """k = 0..12 dead IMUs (random subsets): OK at k = 0, DEGRADED for 1..11, VISION_ONLY at
    12; a dead IMU never gets attention; every estimate finite."""
    rng = np.random.default_rng(12)
    rows = []
    for k in range(N + 1):
        for _ in range(1 if k in (0, N) else 2):
            sensors = sorted(rng.choice(N, k, replace=False).tolist())
            estimate, window, _ = chain_estimate(model, dead(sensors) if sensors else None)
            assert (window["status"][:, sensors] == DEAD).all()
            expected = TRACKING_OK if k == 0 else (TRACKING_VISION_ONLY if k == N else TRACKING_DEGRADED)
            assert estimate.tracking_state == expected, (k, sensors, estimate.tracking_state)
            assert np.isfinite(estimate.landmarks).all() and np.isfinite(estimate.sigma).all()
            assert np.all(estimate.imu_attention[sensors] == 0)
            rows.append((k, STATE_NAMES[estimate.tracking_state], float(estimate.sigma.mean() * 1e3),
                         float(estimate.imu_attention.sum())))
    by_k = {k: (state, round(sigma, 3), round(attention, 3)) for k, state, sigma, attention in rows}
    record("tracker: k dead IMUs, k = 0..12 (driver health -> sync -> tracker)",
           "NOT_RESPONDING on k random IMUs (2 subsets for k = 1..11)", len(rows),
           "state ok at k=0, degraded for k=1..11, vision_only at k=12 in every case; dead IMUs get 0 "
           "attention; estimates finite (sigma of the untrained test model: see figures; MKPE vs k: "
           "`avi-ht reliability`)", by_k=by_k)


VALUE_FAULTS = {
    "accel NaN on 3 IMUs": (lambda k, a, g, f: a.__setitem__((slice(0, 3), 0), np.nan), TRACKING_DEGRADED, INVALID),
    "gyro -inf on 1 IMU": (lambda k, a, g, f: g.__setitem__((5, 1), -np.inf), TRACKING_DEGRADED, INVALID),
    "stuck IMU (constant values)": (lambda k, a, g, f: (a.__setitem__(4, [0.1, 0.2, 9.7]),
                                                        g.__setitem__(4, [0.0, 0.0, 0.01])), TRACKING_DEGRADED,
                                    DEAD),
    "one accel axis saturated": (lambda k, a, g, f: a.__setitem__((2, 0), 1e6), TRACKING_OK, SATURATED),
}


@pytest.mark.parametrize("name", list(VALUE_FAULTS))
def test_tracking_state_reflects_value_faults_through_the_driver_chain(model, name):
    fault, expected_state, expected_status = VALUE_FAULTS[name]
    estimate, window, _ = chain_estimate(model, fault)
    faulty = np.unique(np.nonzero(window["status"][-1] != OK)[0])
    assert faulty.size and (window["status"][-1, faulty] == expected_status).all()
    assert np.isfinite(window["accel"]).all() and np.isfinite(window["gyro"]).all()
    assert estimate.tracking_state == expected_state, (name, estimate.tracking_state)
    assert np.isfinite(estimate.landmarks).all()
    if expected_status in (DEAD, INVALID):
        assert np.all(estimate.imu_attention[faulty] == 0)
    record(f"tracker: {name}", f"{name}, through driver health and the synchronizer", 1,
           f"IMU status {ImuStatus(expected_status).name}, tracking state {STATE_NAMES[estimate.tracking_state]}"
           + ("" if expected_status not in (DEAD, INVALID) else ", zero attention on the faulty IMUs")
           + (" (SATURATED is usable by design: gyro-only gravity update)" if expected_status == SATURATED else ""))


def test_non_finite_window_with_ok_status_is_degraded_not_ok(model):
    """A window that breaks the message contract (NaN/inf marked OK, e.g. from a foreign
    recording): the tracker must not call it OK (bug found: it did)."""
    _, window, tracker = chain_estimate(model)
    window = {k: np.array(v, copy=True) for k, v in window.items()}
    window["accel"][:, 3, 0] = np.nan
    window["gyro"][:, 8, :] = np.inf
    camera = tracker.camera
    tracker.reset()
    estimate = tracker.step(0, np.full((camera.height, camera.width), 90, np.uint8), window)
    assert estimate.tracking_state == TRACKING_DEGRADED
    assert np.isfinite(estimate.landmarks).all() and np.isfinite(estimate.sigma).all()
    record("tracker: NaN/inf in a window marked OK", "NaN accel on IMU 3, inf gyro on IMU 8, status OK", 1,
           "tracking state degraded (was ok before the fix), estimate finite")


# ====================================================================== fusion node (real rclpy)

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, model):
    return save_checkpoint(tmp_path_factory.mktemp("model") / "avi_ht.pt", model)


def synced_frame(stamp_ns, camera, status, accel=None, gyro=None):
    t = 14
    up = np.zeros((t, N, 3), np.float32)
    up[..., 2] = 1
    up[status == DEAD] = 0
    from avi_ht_ros.tracker.sync import ImuWindow
    window = ImuWindow(camera_stamp_ns=stamp_ns, accel=up * 9.81 if accel is None else accel,
                       gyro=np.zeros((t, N, 3), np.float32) if gyro is None else gyro, gravity_up=up,
                       status=status, stamps_ns=stamp_ns - 5_000_000 * np.arange(13, -1, -1),
                       valid=np.ones(t, bool), time_offset_s=0.0, state=0)
    image = convert.image_msg(stamp_ns, "head_camera_optical_frame",
                              np.full((camera.height, camera.width), 90, np.uint8))
    info = convert.camera_info_msg(stamp_ns, "head_camera_optical_frame", camera.to_camera_info_fields())
    return convert.synced_frame_msg(image, info, "right", window, 1.0)


@pytest.mark.ros
def test_fusion_node_publishes_a_finite_pose_for_every_frame_under_imu_faults(rclpy_context, checkpoint):
    from avi_ht_ros.nodes.fusion_node import LATEST_FRAME_QOS, FusionNode
    from node_harness import Harness

    camera = default_sim_camera()
    rng = np.random.default_rng(5)
    plan = []  # (label, status [14, N], accel, gyro, allowed states, sensors that must get no attention)
    for k in range(N + 1):
        sensors = sorted(rng.choice(N, k, replace=False).tolist())
        status = np.zeros((14, N), np.uint8)
        status[:, sensors] = DEAD
        allowed = ({TRACKING_OK, TRACKING_IMU_ONLY} if k == 0 else
                   {TRACKING_VISION_ONLY, TRACKING_LOST} if k == N else {TRACKING_DEGRADED, TRACKING_IMU_ONLY})
        plan.append((f"{k} dead", status, None, None, allowed, sensors))
    nan_accel = np.zeros((14, N, 3), np.float32)
    nan_accel[..., 2] = 9.81
    nan_accel[:, 2, 0] = np.nan
    inf_gyro = np.zeros((14, N, 3), np.float32)
    inf_gyro[:, 9, 1] = np.inf
    ok = np.zeros((14, N), np.uint8)
    plan.append(("NaN/inf marked OK", ok, nan_accel, inf_gyro, {TRACKING_DEGRADED, TRACKING_IMU_ONLY}, []))
    saturated = ok.copy()
    saturated[:, [1, 6]] = SATURATED
    plan.append(("2 saturated", saturated, None, None, {TRACKING_OK, TRACKING_IMU_ONLY}, []))
    invalid = ok.copy()
    invalid[:, [0, 11]] = INVALID
    plan.append(("2 invalid", invalid, None, None, {TRACKING_DEGRADED, TRACKING_IMU_ONLY}, [0, 11]))

    node = FusionNode(context=rclpy_context, namespace="right", parameter_overrides=[
        Parameter("model_path", value=str(checkpoint)), Parameter("tracker.lost_sigma_m", value=1.0)])
    h = Harness(rclpy_context, node)
    outcomes = collections.Counter()
    try:
        poses = h.collect(HandPose, "/right/hand_pose", base.RELIABLE_QOS)
        frame_pub = h.probe.create_publisher(SyncedFrame, "/right/synced_frame", LATEST_FRAME_QOS)
        h.spin_for(0.3)
        t0 = h.probe.get_clock().now().nanoseconds
        for i, (label, status, accel, gyro, allowed, silent) in enumerate(plan):
            base.publish_serialized(frame_pub, synced_frame(t0 + i * 16_666_667, camera, status, accel, gyro))
            assert h.spin_until(lambda: len(poses) > i, timeout=10.0), f"no pose for frame {i} ({label})"
            pose = convert.hand_pose_arrays_from_msg(convert.deserialize(poses[i], convert.HAND_POSE))
            assert pose["stamp_ns"] == t0 + i * 16_666_667
            assert np.isfinite(pose["landmarks"]).all() and np.isfinite(pose["landmark_sigma"]).all(), label
            assert pose["tracking_state"] in allowed, (label, pose["tracking_state"])
            attention = np.asarray(convert.deserialize(poses[i], convert.HAND_POSE).imu_attention)
            assert np.all(attention[silent] == 0), (label, attention)
            outcomes[STATE_NAMES[pose["tracking_state"]]] += 1
        assert node.frames == len(plan) and node.rejected == 0
    finally:
        h.close()
    record("fusion node: k = 0..12 dead IMUs, NaN/inf, saturated, invalid (rclpy)",
           "SyncedFrames with 0..12 dead IMUs, NaN/inf values marked OK, 2 saturated, 2 invalid IMUs", len(plan),
           f"{len(plan)}/{len(plan)} frames gave a finite HandPose; states {dict(outcomes)} (never ok with a dead, "
           "invalid or non-finite IMU; vision_only/lost with 12 dead); zero attention on dead/invalid IMUs")
