"""The camera node with real rclpy: image folder and simulated bag sources, TF of the mount."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image
from tf2_msgs.msg import TFMessage

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.io import convert
from avi_ht_ros.io.bag import BagWriter
from avi_ht_ros.msg import HandGroundTruth
from avi_ht_ros.nodes import base
from avi_ht_ros.nodes.camera_node import CameraNode
from avi_ht_ros.nodes.tf_publisher import TF_STATIC_QOS
from node_harness import Harness

pytestmark = pytest.mark.ros


def test_folder_source_publishes_stamped_mono8_with_info_and_mount_tf(rclpy_context, tmp_path):
    for k in range(40):
        cv2.imwrite(str(tmp_path / f"{k:03d}.png"), np.full((480, 640), k, np.uint8))
    node = CameraNode(context=rclpy_context, parameter_overrides=[
        Parameter("source", value="folder"), Parameter("folder_path", value=str(tmp_path)),
        Parameter("fps", value=60.0), Parameter("loop", value=False)])
    h = Harness(rclpy_context, node)
    try:
        images = h.collect(Image, "/head_camera/image_raw", base.SENSOR_QOS)
        infos = h.collect(CameraInfo, "/head_camera/camera_info", base.SENSOR_QOS)
        statics = h.collect(TFMessage, "/tf_static", TF_STATIC_QOS)
        assert h.spin_until(lambda: len(images) >= 30 and statics, timeout=10.0)
        msgs = [convert.deserialize(m, convert.IMAGE) for m in images]
        stamps = np.array([convert.stamp_ns_of(m.header.stamp) for m in msgs])
        assert np.all(np.diff(stamps) > 0)
        np.testing.assert_allclose(np.median(np.diff(stamps)), 1e9 / 60, rtol=0.01)
        assert all(m.encoding == "mono8" and m.header.frame_id == "head_camera_optical_frame" for m in msgs)
        info = convert.deserialize(infos[0], convert.CAMERA_INFO)
        assert info.width == 640 and info.k[0] == 300.0
        tf = convert.deserialize(statics[-1], convert.TF_MESSAGE)
        children = {t.child_frame_id: t for t in tf.transforms}
        assert set(children) == {"head_camera", "head_camera_optical_frame"}
        q = children["head_camera_optical_frame"].transform.rotation
        # optical frame: z forward = body x, x right = body -y (REP-103)
        body_from_optical = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
        np.testing.assert_allclose(body_from_optical, [[0, 0, 1], [-1, 0, 0], [0, -1, 0]], atol=1e-9)
    finally:
        h.close()


def test_sim_source_publishes_ground_truth_restamped(rclpy_context, tmp_path):
    bag = tmp_path / "sim"
    pose = convert.hand_pose_msg(0, "head_camera_optical_frame", "right", 1, np.zeros(22), 1.0, [0, 0, 0.4],
                                 [0, 0, 0, 1], np.zeros((21, 3)))
    with BagWriter(bag) as writer:
        for k in range(60):
            stamp = 5_000_000_000 + k * 16_666_667
            writer.write("/head_camera/image_raw", convert.IMAGE, stamp,
                         convert.image_msg(stamp, "head_camera_optical_frame", np.full((480, 640), k, np.uint8)))
            pose.header.stamp = convert.stamp_msg(stamp)
            truth = convert.hand_ground_truth_msg(pose, np.ones(21), 0.0, "grasp")
            writer.write("/right/hand_ground_truth", convert.HAND_GROUND_TRUTH, stamp, truth)
    node = CameraNode(context=rclpy_context, parameter_overrides=[
        Parameter("source", value="sim"), Parameter("sim_bag", value=str(bag))])
    h = Harness(rclpy_context, node)
    try:
        images = h.collect(Image, "/head_camera/image_raw", base.SENSOR_QOS)
        truths = h.collect(HandGroundTruth, "/right/hand_ground_truth", base.RELIABLE_QOS)
        assert h.spin_until(lambda: len(truths) >= 20, timeout=10.0)
        image_stamps = {convert.stamp_ns_of(convert.deserialize(m, convert.IMAGE).header.stamp) for m in images}
        truth_msgs = [convert.deserialize(m, convert.HAND_GROUND_TRUTH) for m in truths]
        now = node.get_clock().now().nanoseconds
        for t in truth_msgs:
            stamp = convert.stamp_ns_of(t.header.stamp)
            assert stamp in image_stamps or stamp > max(image_stamps)  # same stamp as its image
            assert abs(stamp - now) < 2e9  # live time, not bag time
            assert t.activity == "grasp"
    finally:
        h.close()


def test_bad_source_configuration_is_one_clear_error(rclpy_context):
    with pytest.raises(ConfigError, match="sim_bag"):
        CameraNode(context=rclpy_context, parameter_overrides=[Parameter("source", value="sim")])
    with pytest.raises(ConfigError, match="source"):
        CameraNode(context=rclpy_context, parameter_overrides=[Parameter("source", value="webcam")])
