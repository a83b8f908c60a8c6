"""The fusion node with real rclpy: SyncedFrames in; poses, joint states, TF and markers out."""
from __future__ import annotations

import numpy as np
import pytest
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from avi_ht_ros.common.camera import default_sim_camera
from avi_ht_ros.common.errors import AviHtError
from avi_ht_ros.io import convert
from avi_ht_ros.live_stats import read_latency_log
from avi_ht_ros.msg import HandPose, SyncedFrame
from avi_ht_ros.nodes import base
from avi_ht_ros.nodes.fusion_node import LATEST_FRAME_QOS, FusionNode
from avi_ht_ros.nodes.tf_publisher import TF_QOS
from avi_ht_ros.tracker.sync import ImuWindow
from node_harness import Harness

pytestmark = pytest.mark.ros


def synced_frame(stamp_ns, camera, dead=()):
    t, n = 14, 12
    status = np.zeros((t, n), np.uint8)
    status[:, list(dead)] = 3
    up = np.zeros((t, n, 3), np.float32)
    up[..., 2] = 1
    window = ImuWindow(camera_stamp_ns=stamp_ns, accel=up * 9.81, gyro=np.zeros((t, n, 3), np.float32),
                       gravity_up=up, status=status, stamps_ns=stamp_ns - 5_000_000 * np.arange(13, -1, -1),
                       valid=np.ones(t, bool), time_offset_s=0.0, state=0)
    image = convert.image_msg(stamp_ns, "head_camera_optical_frame",
                              np.full((camera.height, camera.width), 90, np.uint8))
    info = convert.camera_info_msg(stamp_ns, "head_camera_optical_frame", camera.to_camera_info_fields())
    return convert.synced_frame_msg(image, info, "right", window, 1.0)


def test_fusion_node_publishes_pose_joints_tf_markers(rclpy_context, untrained_avi_ht_checkpoint, tmp_path):
    camera = default_sim_camera()
    node = FusionNode(context=rclpy_context, namespace="right", parameter_overrides=[
        Parameter("model_path", value=str(untrained_avi_ht_checkpoint)),
        Parameter("tracker.lost_sigma_m", value=1.0), Parameter("latency_log", value=str(tmp_path / "latency.csv"))])
    h = Harness(rclpy_context, node)
    try:
        poses = h.collect(HandPose, "/right/hand_pose", base.RELIABLE_QOS)
        joints = h.collect(JointState, "/right/hand_joint_states", base.RELIABLE_QOS)
        tfs = h.collect(TFMessage, "/tf", TF_QOS)
        markers = h.collect(MarkerArray, "/right/hand_markers", base.RELIABLE_QOS)
        frame_pub = h.probe.create_publisher(SyncedFrame, "/right/synced_frame", LATEST_FRAME_QOS)
        h.spin_for(0.3)
        t0 = h.probe.get_clock().now().nanoseconds
        for k in range(12):
            base.publish_serialized(frame_pub, synced_frame(t0 + k * 16_666_667, camera, dead=(5,) if k > 8 else ()))
            h.spin_until(lambda: len(poses) > k, timeout=5.0)
        assert h.spin_until(lambda: len(joints) == 12 and len(markers) == 12, timeout=5.0)
        assert len(poses) == 12
        pose_msgs = [convert.deserialize(p, convert.HAND_POSE) for p in poses]
        assert [convert.stamp_ns_of(p.header.stamp) for p in pose_msgs] == [t0 + k * 16_666_667 for k in range(12)]
        assert pose_msgs[0].tracking_state == HandPose.TRACKING_OK
        # a dead IMU is never reported as OK (DEGRADED, or IMU_ONLY if this untrained model's
        # estimate left the camera view)
        assert pose_msgs[-1].tracking_state in (HandPose.TRACKING_DEGRADED, HandPose.TRACKING_IMU_ONLY)
        assert len(pose_msgs[0].imu_attention) == 12 and 0.0 <= pose_msgs[0].vision_weight <= 1.0
        joint = convert.deserialize(joints[0], convert.JOINT_STATE)
        assert len(joint.name) == 22 and joint.name[0] == "right_thumb_cmc_flex"
        children = {t.child_frame_id for m in tfs for t in convert.deserialize(m, convert.TF_MESSAGE).transforms}
        assert {"right_wrist", "right_palm", "right_index_distal", "right_thumb_distal"} <= children
        assert node.dropped == 0 and node.frames == 12 and node.marker_arrays == 12
        # the default inference_backend (auto) runs the network on ONNX Runtime where it is installed
        from avi_ht_ros.models.onnx_backend import OnnxFrameModel, onnxruntime_available
        assert isinstance(node.model, OnnxFrameModel) == onnxruntime_available(), node.backend
        # nobody subscribed to the markers: poses go on, no marker is built
        h.probe.destroy_subscription(next(s for s in h.probe.subscriptions if s.topic_name == "/right/hand_markers"))
        assert h.spin_until(lambda: node.marker_pub.get_subscription_count() == 0, timeout=5.0)
        for k in range(12, 15):
            base.publish_serialized(frame_pub, synced_frame(t0 + k * 16_666_667, camera))
            h.spin_until(lambda: len(poses) > k, timeout=5.0)
        assert node.frames == 15 and node.marker_arrays == 12
        # a network that fails on a frame (runtime error inside it): the frame is dropped and
        # counted, the track restarts, the node keeps serving the next frames
        working = node.model

        def failing(inputs, state=None):
            raise RuntimeError("injected inference failure")
        node.tracker.model = failing
        base.publish_serialized(frame_pub, synced_frame(t0 + 15 * 16_666_667, camera))
        assert h.spin_until(lambda: node.inference_errors == 1, timeout=5.0)
        node.tracker.model = working
        base.publish_serialized(frame_pub, synced_frame(t0 + 16 * 16_666_667, camera))
        assert h.spin_until(lambda: len(poses) == 16, timeout=5.0)
        assert node.frames == 16 and node.inference_errors == 1
    finally:
        h.close()
    # latency_log: each published pose's camera stamp and when it was published (the failed frame: none)
    stamps, published = read_latency_log(tmp_path / "latency.csv")
    assert stamps.tolist() == [convert.stamp_ns_of(convert.deserialize(p, convert.HAND_POSE).header.stamp)
                               for p in poses]
    assert (np.diff(published) > 0).all()   # (this test sends frames stamped ahead of the clock)


def test_refuses_a_pickle_payload_model(rclpy_context, tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"state_dict": Payload()}, protocol=2))
    with pytest.raises(AviHtError, match="evil.pt"):
        FusionNode(context=rclpy_context, parameter_overrides=[Parameter("model_path", value=str(bad))])
