"""The time-synchronizer node with real rclpy: camera + glove streams in, SyncedFrames out."""
from __future__ import annotations

import numpy as np
import pytest
from rclpy.parameter import Parameter

from avi_ht_ros.common.camera import default_sim_camera
from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.io import convert
from avi_ht_ros.msg import GloveSample, SyncedFrame
from avi_ht_ros.nodes import base
from avi_ht_ros.nodes.sync_node import SyncNode
from node_harness import Harness, feed_lockstep, sync_input_publishers
from sensor_msgs.msg import CameraInfo, Image

pytestmark = pytest.mark.ros


def test_sync_node_pairs_every_frame_with_its_window(rclpy_context):
    glove = GloveModel.reference()
    node = SyncNode(context=rclpy_context, namespace="right",
                    parameter_overrides=[Parameter("time_offset_mode", value="fixed")])
    h = Harness(rclpy_context, node)
    try:
        frames = h.collect(SyncedFrame, "/right/synced_frame", base.RELIABLE_QOS)
        image_pub, info_pub, glove_pub = sync_input_publishers(h)
        camera = default_sim_camera()
        image = np.zeros((48, 64), np.uint8)
        # Lockstep on stamps (a starved machine changes nothing): glove samples on a 200 Hz grid up
        # to 10 ms past each camera stamp, then the frame; each message is waited for.
        t0 = h.probe.get_clock().now().nanoseconds
        base.publish_serialized(info_pub, convert.camera_info_msg(t0, "head_camera_optical_frame",
                                                                  camera.to_camera_info_fields()))
        assert h.spin_until(lambda: node.camera_info is not None, 10.0)
        sent_frames = 60
        feed_lockstep(h, node, image_pub, glove_pub, glove, t0, sent_frames, image)
        assert h.spin_until(lambda: len(frames) >= node.published, 10.0)
        assert len(frames) == sent_frames, (len(frames), sent_frames, node.synchronizer.stats)
        msgs = [convert.deserialize(f, convert.SYNCED_FRAME) for f in frames]
        complete = 0
        for msg in msgs:
            w = convert.window_arrays_from_synced_frame(msg)
            assert w["accel"].shape == (14, 12, 3)
            # the window's last slot is the sample nearest the camera instant (padded if it came too late)
            assert abs(int(w["stamps_ns"][-1]) - convert.stamp_ns_of(msg.header.stamp)) <= 2_500_000
            assert msg.valid_samples == int((w["status"] != 3).all(axis=1).sum())
            np.testing.assert_allclose(np.linalg.norm(w["gravity_up"][0], axis=1), 1.0, atol=1e-5)
            assert msg.camera_info.width == camera.width and msg.image.encoding == "mono8"
            complete += msg.window_state == 0
        # every sample of every window was there in time (the glove stream leads by 100 ms)
        assert complete == len(msgs), (complete, len(msgs))
        stats = node.synchronizer.stats
        assert stats.frames_dropped == 0 and stats.glove_out_of_order == 0
    finally:
        h.close()
