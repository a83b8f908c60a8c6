"""The retargeting node with real rclpy: poses in, limited commands out, watchdog, pinch events."""
from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import JointState

from avi_ht_ros.common.hand_model import JOINT_INDEX, forward_kinematics_numpy
from avi_ht_ros.io import convert
from avi_ht_ros.live_stats import read_latency_log
from avi_ht_ros.msg import HandPose, PinchEvent
from avi_ht_ros.nodes import base
from avi_ht_ros.nodes.retarget_node import RetargetNode
from node_harness import Harness

pytestmark = pytest.mark.ros


def pose_msg(stamp_ns, joint_angles, state=HandPose.TRACKING_OK):
    rotation = np.eye(3)
    translation = np.array([0.0, 0.05, 0.4])
    fk = forward_kinematics_numpy(joint_angles, rotation, translation, 1.0, "right")
    return convert.hand_pose_msg(stamp_ns, "head_camera_optical_frame", "right", state, joint_angles, 1.0,
                                 translation, [0, 0, 0, 1], fk.landmarks, np.full(21, 0.005), np.zeros(12), 0.5)


def pinch_angles(amount):
    """Thumb and index curl towards each other as ``amount`` goes 0 -> 1."""
    q = np.zeros(22)
    # tips touch at amount = 1 (found by minimizing the FK thumb-index tip distance)
    for name, value in {"thumb_cmc_abd": -0.2, "thumb_cmc_flex": 0.785, "thumb_mcp_flex": -0.175,
                        "thumb_ip_flex": -0.258, "thumb_mcp_abd": 0.065, "index_mcp_flex": 0.075,
                        "index_pip_flex": 1.658, "index_dip_flex": -0.116, "index_mcp_abd": 0.019}.items():
        q[JOINT_INDEX[name]] = value * amount
    return q


def pose_publisher_at_60hz(h, pose_pub, message_of, limit=None):
    """An ``every`` callback for ``Harness.spin_for``: publishes ``message_of(k, now_ns)`` for
    k = 0, 1, ... every 1/60 s (at most ``limit`` poses). Returns ``(callback, state)``."""
    clock = h.probe.get_clock()
    state = {"next": 0, "k": 0}

    def publish(_):
        now = clock.now().nanoseconds
        if now >= state["next"] and (limit is None or state["k"] < limit):
            base.publish_serialized(pose_pub, message_of(state["k"], now))
            state["k"] += 1
            state["next"] = now + 16_666_667

    return publish, state


def test_commands_are_limited_watchdog_holds_and_pinches_are_reported(rclpy_context):
    node = RetargetNode(context=rclpy_context, namespace="right")
    h = Harness(rclpy_context, node)
    try:
        commands = h.collect(JointState, "/right/robot/joint_commands", base.RELIABLE_QOS)
        pinches = h.collect(PinchEvent, "/right/robot/pinch", base.RELIABLE_QOS)
        pose_pub = h.probe.create_publisher(HandPose, "/right/hand_pose", base.RELIABLE_QOS)
        h.spin_for(0.3)
        # close the pinch over 1 s, then hold it
        publish, _ = pose_publisher_at_60hz(h, pose_pub, lambda k, now: pose_msg(now, pinch_angles(min(1.0, k / 60.0))))
        h.spin_for(2.0, every=publish)
        assert node.safety.state.value in ("tracking", "engaging")
        before_stop = len(commands)
        h.spin_for(0.6)  # poses stop: stale after 150 ms -> hold
        assert node.safety.state.value == "holding"
        msgs = [convert.deserialize(m, convert.JOINT_STATE) for m in commands]
        positions = np.array([m.position for m in msgs])
        stamps = np.array([convert.stamp_ns_of(m.header.stamp) for m in msgs]) / 1e9
        lower, upper = node.limits.lower, node.limits.upper
        assert np.all(positions >= lower - 1e-9) and np.all(positions <= upper + 1e-9)
        speed = np.abs(np.diff(positions, axis=0)) / np.maximum(np.diff(stamps), 1e-3)[:, None]
        assert np.all(speed <= node.limits.velocity * 1.5)  # stamp jitter of the probe's receive path
        held = positions[-10:]
        assert np.ptp(held, axis=0).max() < 1e-6  # holding still, not snapping anywhere
        assert np.abs(positions[-1]).max() > 0.05  # held where the hand was, not at zeros
        assert len(msgs) > 0.7 * 100 * 2.6 and len(msgs) - before_stop > 30  # the timer keeps commanding
        events = [convert.deserialize(m, convert.PINCH_EVENT) for m in pinches]
        assert any(e.finger == "index" and e.pinching for e in events), events
        assert list(msgs[-1].name) == node.joint_names
    finally:
        h.close()


def test_lost_tracking_is_gated(rclpy_context):
    node = RetargetNode(context=rclpy_context, namespace="right")
    start = node.safety.position.copy()
    h = Harness(rclpy_context, node)
    try:
        pose_pub = h.probe.create_publisher(HandPose, "/right/hand_pose", base.RELIABLE_QOS)
        h.spin_for(0.3)
        publish, _ = pose_publisher_at_60hz(h, pose_pub, lambda k, now: pose_msg(now, pinch_angles(1.0),
                                                                                HandPose.TRACKING_LOST))
        h.spin_for(1.0, every=publish)
        assert node.safety.state.value in ("idle", "holding")  # never engages on lost tracking
        np.testing.assert_array_equal(node.safety.position, start)  # and never moves
    finally:
        h.close()


@pytest.mark.parametrize("command_on_pose", [True, False])
def test_a_pose_is_commanded_without_waiting_for_a_tick(rclpy_context, command_on_pose, tmp_path):
    """With ``command_on_pose`` every retargeted pose sends a command at once (a slow 10 Hz timer
    then only fills gaps) and ``latency_log`` ties each pose's camera stamp to when its command was
    published; without it commands go out on the timer only (nothing to log)."""
    from rclpy.parameter import Parameter

    node = RetargetNode(context=rclpy_context, namespace="right", parameter_overrides=[
        Parameter("control_rate_hz", value=10.0), Parameter("command_on_pose", value=command_on_pose),
        Parameter("latency_log", value=str(tmp_path / "latency.csv"))])
    h = Harness(rclpy_context, node)
    try:
        commands = h.collect(JointState, "/right/robot/joint_commands", base.RELIABLE_QOS)
        pose_pub = h.probe.create_publisher(HandPose, "/right/hand_pose", base.RELIABLE_QOS)
        h.spin_for(0.3)
        publish, _ = pose_publisher_at_60hz(h, pose_pub, lambda k, now: pose_msg(now, pinch_angles(0.5)), limit=60)
        h.spin_for(1.5, every=publish)
        h.spin_for(0.2)
        assert node.poses >= 30, node.poses
        if command_on_pose:
            assert node.commands_on_pose == node.poses
            assert node.commands >= node.poses and len(commands) >= node.poses
        else:
            assert node.commands_on_pose == 0
            assert node.commands <= 1.7 * 10 * 2.0  # ~10 Hz over the ~1.7 s since the node started
        sent = sorted(convert.stamp_ns_of(convert.deserialize(c, convert.JOINT_STATE).header.stamp) for c in commands)
        poses = node.poses
    finally:
        h.close()
    stamps, published = read_latency_log(tmp_path / "latency.csv")
    if command_on_pose:
        assert stamps.size == poses and (np.diff(stamps) > 0).all() and (published > stamps).all()
        # published right after a command stamped with the time it was computed
        before = np.searchsorted(sent, published, side="right") - 1
        assert (before >= 0).all() and (published - np.asarray(sent)[before] < 50_000_000).all()
    else:
        assert stamps.size == 0
