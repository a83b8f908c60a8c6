"""The glove driver node with real rclpy, reading a simulated glove through a pseudo-terminal."""
from __future__ import annotations

import numpy as np
import pytest
import yaml
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.driver.protocol import HAND_LEFT, GloveFrame
from avi_ht_ros.io import convert
from avi_ht_ros.io.bag import BagWriter
from avi_ht_ros.msg import GloveSample
from avi_ht_ros.nodes import base
from avi_ht_ros.nodes.glove_driver_node import GloveDriverNode
from node_harness import Harness

pytestmark = pytest.mark.ros


def write_still_hand_bag(path, side="right", seconds=2.0, dead=(), tilt_deg=(0.0,) * 12):
    """A flat, still hand (optionally with IMUs mounted tilted about their x axis)."""
    glove = GloveModel.reference()
    up = glove.flat_hand_up_vectors(side)
    rng = np.random.default_rng(0)
    with BagWriter(path) as writer:
        for k in range(int(seconds * 200)):
            stamp = 1_000_000_000 + k * 5_000_000
            accel = np.empty((12, 3))
            for i, (u, tilt) in enumerate(zip(up, tilt_deg)):
                c, s = np.cos(np.radians(tilt)), np.sin(np.radians(tilt))
                accel[i] = 9.81 * np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ u
            accel += rng.normal(0, 0.01, (12, 3))
            gyro = rng.normal(0, 0.001, (12, 3))
            status = np.zeros(12, np.uint8)
            for i in dead:
                accel[i], gyro[i], status[i] = 0, 0, 3
            writer.write(f"/{side}/glove/samples", convert.GLOVE_SAMPLE, stamp,
                         convert.glove_sample_msg(stamp, side, glove.frame_ids(side), accel, gyro, status, k, k * 5000))


def test_driver_publishes_200hz_samples_from_the_serial_protocol(rclpy_context, tmp_path):
    write_still_hand_bag(tmp_path / "bag", dead=(4,))
    node = GloveDriverNode(context=rclpy_context, namespace="right",
                           parameter_overrides=[Parameter("sim_bag", value=str(tmp_path / "bag"))])
    h = Harness(rclpy_context, node)
    try:
        samples = h.collect(GloveSample, "/right/glove/samples", base.GLOVE_QOS)
        h.spin_for(1.5)
        end_ns = node.get_clock().now().nanoseconds  # before deserializing (0.4 s on a loaded 2-core machine)
        msgs = [convert.deserialize(m, convert.GLOVE_SAMPLE) for m in samples]
        assert len(msgs) >= 250, len(msgs)
        stamps = np.array([convert.stamp_ns_of(m.header.stamp) for m in msgs])
        assert np.all(np.diff(stamps) > 0)
        # stamps follow the device clock (5 ms apart), not the bursty arrival times
        np.testing.assert_allclose(np.median(np.diff(stamps[len(stamps) // 2:])), 5e6, rtol=0.01)
        assert abs(stamps[-1] - end_ns) < 0.2e9  # device clock mapped to ROS time
        last = convert.glove_arrays_from_msg(msgs[-1])
        assert last[3][4] == 3 and (np.delete(last[3], 4) == 0).all()  # the dead IMU is flagged DEAD
        np.testing.assert_allclose(np.linalg.norm(np.delete(last[1], 4, axis=0), axis=1), 9.81, atol=0.1)
        assert [i.header.frame_id for i in msgs[-1].imus] == list(GloveModel.reference().frame_ids("right"))
        assert node.link.parser.stats.crc_errors == 0 and node.wrong_glove == 0
    finally:
        h.close()


def test_wrong_hand_glove_is_never_published_under_this_hand(rclpy_context, tmp_path):
    write_still_hand_bag(tmp_path / "bag")
    node = GloveDriverNode(context=rclpy_context, namespace="right",
                           parameter_overrides=[Parameter("sim_bag", value=str(tmp_path / "bag"))])
    try:
        node.link.stop()
        before = node.published
        left_frame = GloveFrame.from_si(handedness=HAND_LEFT, sequence=1, device_time_us=5, accel=np.zeros((12, 3)),
                                        gyro=np.zeros((12, 3)), accel_scale=1e-3, gyro_scale=1e-3)
        node.on_frame(left_frame, 0)
        assert node.published == before and node.wrong_glove == 1
    finally:
        node.destroy_node()
    with pytest.raises(ConfigError, match="no left glove samples"):
        GloveDriverNode(context=rclpy_context, namespace="left", parameter_overrides=[
            Parameter("side", value="left"), Parameter("sim_bag", value=str(tmp_path / "bag"))])


def test_calibration_service_recovers_mount_tilts_and_saves_them(rclpy_context, tmp_path):
    tilts = (3.0, -2.0, 0.0, 4.0, 1.0, 0.0, -3.0, 2.0, 0.0, 0.0, 1.5, 0.0)
    write_still_hand_bag(tmp_path / "bag", seconds=3.0, tilt_deg=tilts)
    calibration_file = tmp_path / "calib.yaml"
    node = GloveDriverNode(context=rclpy_context, namespace="right", parameter_overrides=[
        Parameter("sim_bag", value=str(tmp_path / "bag")), Parameter("calibration_duration_s", value=1.0),
        Parameter("calibration_file", value=str(calibration_file))])
    h = Harness(rclpy_context, node)
    try:
        client = h.probe.create_client(Trigger, "/right/glove/calibrate")
        assert h.spin_until(lambda: client.service_is_ready(), timeout=5.0)
        h.spin_for(0.5)
        future = client.call_async(Trigger.Request())
        assert h.spin_until(future.done, timeout=10.0)
        result = future.result()
        assert result.success, result.message
        assert calibration_file.is_file() and node.calibration is not None
        np.testing.assert_allclose(node.calibration.correction_deg, np.abs(tilts), atol=0.5)
        saved = yaml.safe_load(calibration_file.read_text())
        assert saved
    finally:
        h.close()
