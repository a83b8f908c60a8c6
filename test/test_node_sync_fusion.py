"""sync_fusion_node with real rclpy: camera + glove streams in, hand poses out, no SyncedFrame hop."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from rclpy.parameter import Parameter

from avi_ht_ros.common.camera import default_sim_camera
from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.io import convert
from avi_ht_ros.msg import HandPose, SyncedFrame
from avi_ht_ros.nodes import base
from avi_ht_ros.nodes.sync_fusion_node import make_nodes
from avi_ht_ros.tracker.sync import ImuWindow
from node_harness import Harness, feed_lockstep, publish_glove_samples, sync_input_publishers

pytestmark = pytest.mark.ros


def synced_inputs(stamp_ns: int, image: np.ndarray, camera) -> tuple:
    """What the sync node hands over: image and camera-info messages and a complete IMU window."""
    t, n = 14, 12
    up = np.zeros((t, n, 3), np.float32)
    up[..., 2] = 1
    window = ImuWindow(camera_stamp_ns=stamp_ns, accel=up * 9.81, gyro=np.zeros((t, n, 3), np.float32),
                       gravity_up=up, status=np.zeros((t, n), np.uint8),
                       stamps_ns=stamp_ns - 5_000_000 * np.arange(13, -1, -1), valid=np.ones(t, bool),
                       time_offset_s=0.0, state=0)
    return (convert.image_msg(stamp_ns, "head_camera_optical_frame", image),
            convert.camera_info_msg(stamp_ns, "head_camera_optical_frame", camera.to_camera_info_fields()), window)


def _start_streams(h: Harness, sync, camera) -> tuple:
    """Hand poses collected, input publishers, the camera info delivered: ``(poses, image_pub,
    glove_pub, t0)``."""
    poses = h.collect(HandPose, "/right/hand_pose", base.RELIABLE_QOS)
    image_pub, info_pub, glove_pub = sync_input_publishers(h)
    t0 = h.probe.get_clock().now().nanoseconds
    base.publish_serialized(info_pub, convert.camera_info_msg(t0, "head_camera_optical_frame",
                                                              camera.to_camera_info_fields()))
    assert h.spin_until(lambda: sync.camera_info is not None, 10.0)
    return poses, image_pub, glove_pub, t0


def test_frames_reach_the_fusion_node_in_process_and_the_topic_only_for_a_subscriber(rclpy_context,
                                                                                     untrained_avi_ht_checkpoint):
    glove = GloveModel.reference()
    camera = default_sim_camera()
    sync, fusion = make_nodes(context=rclpy_context, namespace="right", parameter_overrides=[
        Parameter("time_offset_mode", value="fixed"), 
        Parameter("model_path", value=str(untrained_avi_ht_checkpoint)),
        Parameter("tracker.lost_sigma_m", value=1.0)])
    assert (sync.get_name(), fusion.get_name()) == ("glove_camera_sync", "hand_fusion")
    assert sync.frame_sink == fusion.handoff.offer and sync.frame_prefetch == fusion.handoff.offer_background
    h = Harness(rclpy_context, sync, fusion)
    try:
        poses, image_pub, glove_pub, t0 = _start_streams(h, sync, camera)
        image = np.full((camera.height, camera.width), 90, np.uint8)
        built = []
        make_msg = convert.synced_frame_msg

        def counting_synced_frame_msg(*args, **kwargs):
            built.append(1)
            return make_msg(*args, **kwargs)

        convert.synced_frame_msg = counting_synced_frame_msg
        try:
            # nobody subscribes to synced_frame: every frame goes to the fusion node by a call, none is built
            assert sync.synced_pub.get_subscription_count() == 0
            tracked = lambda j: h.spin_until(lambda: fusion.frames + fusion.dropped > j, 10.0)  # noqa: E731
            feed_lockstep(h, sync, image_pub, glove_pub, glove, t0, 12, image, after_frame=tracked)
            assert sync.published == 12 and fusion.frames == 12 and not built
            assert h.spin_until(lambda: len(poses) == 12, 10.0)
            stamps = [convert.stamp_ns_of(convert.deserialize(p, convert.HAND_POSE).header.stamp) for p in poses]
            assert stamps == [t0 + 100_000_000 + j * 16_666_667 for j in range(12)]
            # an observer (a recorder, a probe) subscribes: the topic carries the frames again, and the
            # fusion node still gets each frame once, in-process
            observed = h.collect(SyncedFrame, "/right/synced_frame", base.RELIABLE_QOS)
            assert h.spin_until(lambda: sync.synced_pub.get_subscription_count() == 1, 10.0)
            # (the glove grid goes on from 300 ms, after the last sample sent; frames go on at 300 ms)
            feed_lockstep(h, sync, image_pub, glove_pub, glove, t0 + 300_000_000, 6, image, seed=1, first_frame_ns=0,
                          after_frame=lambda j: tracked(12 + j))
            assert h.spin_until(lambda: len(observed) == 6 and len(poses) == 18, 10.0)
            assert len(built) == 6 and fusion.frames == 18 and fusion.dropped == 0 and fusion.rejected == 0
        finally:
            convert.synced_frame_msg = make_msg
        # frames offered faster than they are tracked: the newest goes next, the overtaken one is
        # skipped and counted as a dropped frame (never queued behind), the track goes on
        frames_before = fusion.frames
        release = threading.Event()
        on_synced = fusion.on_synced

        def slow_on_synced(*item):
            release.wait(10.0)
            on_synced(*item)

        fusion.handoff._handle = slow_on_synced
        offered = [synced_inputs(t0 + 400_000_000 + k * 16_666_667, image, camera) for k in range(3)]
        fusion.handoff.offer(*offered[0])
        assert h.spin_until(lambda: fusion.handoff._item is None, 5.0)   # taken: now "tracking" frame 0
        fusion.handoff.offer(*offered[1])
        fusion.handoff.offer(*offered[2])                                 # overtakes frame 1
        release.set()
        assert h.spin_until(lambda: fusion.frames == frames_before + 2, 10.0)
        assert fusion.handoff.replaced == 1 and fusion.dropped == 1 and fusion.handoff.errors == 0
    finally:
        h.close()


@pytest.mark.parametrize("prefetch", [True, False], ids=["prefetch", "no_prefetch"])
def test_a_frame_waiting_for_its_glove_window_has_its_vision_half_run_meanwhile(rclpy_context, prefetch):
    """The image comes before the glove samples around its stamp (the common case live: the glove
    path is slower than the camera's): the sync node hands it to the fusion node at once, whose
    tracking thread crops it and runs the network's vision half (ONNX Runtime graphs of the two
    halves) while the window completes; the frame is then finished with the fusion half. Every
    frame after the first (which searches, and runs whole) is prefetched; ``prefetch_vision:
    false`` runs every frame whole. (The shipped model: an untrained one places the hand out of
    view, where every frame searches and runs whole.)"""
    glove = GloveModel.reference()
    camera = default_sim_camera()
    sync, fusion = make_nodes(context=rclpy_context, namespace="right", parameter_overrides=[
        Parameter("time_offset_mode", value="fixed"), Parameter("prefetch_vision", value=prefetch),
        Parameter("tracker.lost_sigma_m", value=1.0)])
    assert (sync.frame_prefetch is not None) == prefetch
    h = Harness(rclpy_context, sync, fusion)
    try:
        poses, image_pub, glove_pub, t0 = _start_streams(h, sync, camera)
        image = np.full((camera.height, camera.width), 90, np.uint8)
        image[200:280, 280:360] = 200
        rng = np.random.default_rng(0)
        stats = sync.synchronizer.stats
        seq = 0
        frames = 8
        for j in range(frames):
            camera_ns = t0 + 100_000_000 + j * 16_666_667
            # the samples around the stamp are still to come
            seq = publish_glove_samples(h, sync, glove_pub, glove, t0, seq, camera_ns - 6_000_000, rng)
            before = stats.camera_frames
            base.publish_serialized(image_pub, convert.image_msg(camera_ns, "head_camera_optical_frame", image))
            assert h.spin_until(lambda: stats.camera_frames > before, 10.0), "image not received"
            if prefetch and j > 0:
                assert h.spin_until(lambda: fusion.prefetched_frames == j, 10.0), f"frame {j} not prefetched"
            assert sync.published == j                   # ... so the frame waits for them
            seq = publish_glove_samples(h, sync, glove_pub, glove, t0, seq, camera_ns + 10_000_000, rng)
            assert h.spin_until(lambda: len(poses) == j + 1, 10.0), f"no pose for frame {j}"
        assert h.spin_until(lambda: fusion.frames == frames, 10.0)   # (counted just after the pose is sent)
        assert fusion.dropped == 0 and fusion.rejected == 0
        assert fusion.prefetched_frames == (frames - 1 if prefetch else 0) and fusion.handoff.errors == 0
        stamps = [convert.stamp_ns_of(convert.deserialize(p, convert.HAND_POSE).header.stamp) for p in poses]
        assert stamps == [t0 + 100_000_000 + j * 16_666_667 for j in range(frames)]
    finally:
        h.close()


def test_the_installed_executable_runs_both_nodes_and_stops_on_sigint(rclpy_context, tmp_path,
                                                                     untrained_avi_ht_checkpoint):
    """What ``ros2 launch`` starts: both config files loaded, both nodes up under their own names
    in the namespace, parameters reaching each node, exit 0 on SIGINT."""
    from rcl_interfaces.srv import GetParameters

    from avi_ht_ros.graph import GraphProcesses, NodeProcessSpec

    model = str(untrained_avi_ht_checkpoint)
    spec = NodeProcessSpec("sync_fusion_node", None, "right", (
        ("model_path", model), ("sync.max_wait_s", 0.02), ("smoothing", False)))
    assert spec.command().count("--params-file") == 2 and "__node:=" not in " ".join(spec.command())
    graph = GraphProcesses([spec], tmp_path).start()
    h = Harness(rclpy_context)
    try:
        def get(node: str, names: list[str]):
            client = h.probe.create_client(GetParameters, f"/right/{node}/get_parameters")
            assert h.spin_until(client.service_is_ready, 60.0), f"{node}: parameter service never came up"
            future = client.call_async(GetParameters.Request(names=names))
            assert h.spin_until(future.done, 10.0)
            return [v for v in future.result().values]

        sync_values = get("glove_camera_sync", ["sync.max_wait_s", "side", "poll_rate_hz"])
        assert [sync_values[0].double_value, sync_values[1].string_value, sync_values[2].double_value] == \
            [0.02, "right", 100.0]
        fusion_values = get("hand_fusion", ["smoothing", "model_path", "side"])
        assert [fusion_values[0].bool_value, fusion_values[1].string_value, fusion_values[2].string_value] == \
            [False, model, "right"]
        assert not graph.failed()
    finally:
        h.close()
        codes = graph.stop()
    assert list(codes.values()) == [0], codes
