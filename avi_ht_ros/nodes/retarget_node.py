"""Retargeting node: tracked hand poses -> safe joint commands for a dexterous robot hand.

Thin wrapper over :mod:`avi_ht_ros.retarget`. Each ``hand_pose`` is retargeted
(uncertainty-weighted by the pose's per-landmark σ) into a target; the safety
filter turns targets into commands that respect position, velocity and
acceleration limits, gates on the tracking state and holds (or opens) when
tracking is lost or stale. It is stepped, and a command sent, as soon as a
pose is retargeted (``command_on_pose``: the pose's latency is not made to
wait for a tick) and by a fixed-rate control timer between poses — the timer
keeps running when poses stop, so the watchdog engages on time.

Publishes (in the hand's namespace): ``robot/joint_commands`` (JointState,
URDF joint names), ``robot/joint_states`` (for ``robot_state_publisher``),
optionally ``robot/joint_trajectory`` (ros2_control), ``robot/pinch``
(PinchEvent), the static TF placing the robot hand next to the human wrist
for RViz, and ``/diagnostics``.
"""
from __future__ import annotations

import collections
import dataclasses
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from avi_ht_ros.common import topics
from avi_ht_ros.common.params import param
from avi_ht_ros.common.paths import config_path
from avi_ht_ros.io import convert
from avi_ht_ros.msg import HandPose, PinchEvent
from avi_ht_ros.nodes import base
from avi_ht_ros.nodes.tf_publisher import TfPublisher
from avi_ht_ros.retarget.config import load_retarget_config
from avi_ht_ros.retarget.optimizer import Retargeter, RetargetInputError
from avi_ht_ros.retarget.safety import CommandSafetyFilter, JointLimits, PinchDetector, TrackingState


@dataclasses.dataclass(frozen=True)
class RetargetNodeParams:
    side: str = param("right", "hand this node retargets", choices=topics.SIDES)
    config: str = param("retarget_avi_hand_16dof.yaml", "retargeting config (config/ name or path): robot URDF, "
                        "landmark-to-link mapping, solver, safety")
    method: str = param("", "override the config's method ('' = config)", choices=("", "vector", "position",
                                                                                     "dexpilot"))
    use_uncertainty: bool = param(True, "weight task terms by the tracker's per-landmark sigma")
    control_rate_hz: float = param(100.0, "command rate of the safety filter between poses (also the watchdog "
                                   "tick)", range=(10.0, 1000.0), unit="Hz")
    command_on_pose: bool = param(True, "also step the safety filter and send a command as soon as a pose is "
                                  "retargeted (lowest latency; a tick within half a period after it is skipped); "
                                  "false: commands only at control_rate_hz")
    publish_trajectory: bool = param(False, "also publish trajectory_msgs/JointTrajectory for ros2_control")
    frame_prefix: str = param("", "TF prefix of the robot links ('' = '<side>_robot/')")
    latency_log: str = param("", base.latency_log_description("the joint command sent on its hand pose "
                                                              "(command_on_pose)"))
    display_offset_m: tuple[float, ...] = param((0.0, -0.15, 0.0), "where the robot hand is drawn in RViz, "
                                                "in the human wrist frame", unit="m")
    realtime_priority: int = base.realtime_priority_param(30)


PARAMETER_SETS = (("", RetargetNodeParams),)


class RetargetNode(Node):
    def __init__(self, **kwargs):
        super().__init__("retarget", **kwargs)
        (self.params,) = base.declare_parameter_sets(self, PARAMETER_SETS)
        config = load_retarget_config(config_path(self.params.config))
        self.retargeter = Retargeter(config, self.params.method or None)
        kinematics = self.retargeter.kinematics
        self.joint_names = list(self.retargeter.joint_names)
        self.limits = JointLimits.from_kinematics(kinematics, config.safety)
        self.safety = CommandSafetyFilter(self.limits, config.safety)
        self.pinch = PinchDetector(config.safety.pinch)
        self.prefix = self.params.frame_prefix or f"{self.params.side}_robot/"
        self.root_frame = self.prefix + config.wrist_link
        self.period_s = 1.0 / self.params.control_rate_hz
        self.poses = 0
        self.rejected = 0
        self.commands = 0
        self.commands_on_pose = 0
        self._last_command_s: float | None = None
        self.solve_ms: collections.deque[float] = collections.deque(maxlen=500)
        # camera stamp -> command sent on its pose
        self.command_latency_ms: collections.deque[float] = collections.deque(maxlen=600)
        self.latency_log = base.open_latency_log(self.params.latency_log)
        convert.prepare(convert.HAND_POSE, convert.JOINT_STATE, convert.PINCH_EVENT,
                        "trajectory_msgs/msg/JointTrajectory", "diagnostic_msgs/msg/DiagnosticArray")

        self.command_pub = self.create_publisher(JointState, topics.ROBOT_JOINT_COMMANDS, base.RELIABLE_QOS)
        self.state_pub = self.create_publisher(JointState, topics.ROBOT_JOINT_STATES, base.RELIABLE_QOS)
        self.trajectory_pub = (self.create_publisher(JointTrajectory, topics.ROBOT_TRAJECTORY, base.RELIABLE_QOS)
                               if self.params.publish_trajectory else None)
        self.pinch_pub = self.create_publisher(PinchEvent, topics.PINCH_EVENTS, base.RELIABLE_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, base.RELIABLE_QOS)
        self.create_subscription(HandPose, topics.HAND_POSE, self.on_hand_pose, base.RELIABLE_QOS, raw=True)
        self.create_timer(self.period_s, self.on_control_tick)
        self.create_timer(1.0, self.publish_diagnostics)
        self.tf = TfPublisher(self)
        offset = np.asarray(self.params.display_offset_m, float)
        self.tf.send_static([convert.transform_stamped_msg(0, topics.hand_frame(self.params.side, "wrist"),
                                                           self.root_frame, offset, [0, 0, 0, 1])])
        self.get_logger().info(f"retargeting the {self.params.side} hand to {config.urdf_path} "
                               f"({len(self.joint_names)} joints, {self.retargeter.method})")

    @staticmethod
    def _monotonic_s() -> float:
        return time.monotonic()

    def on_hand_pose(self, data: bytes) -> None:
        pose = convert.hand_pose_arrays_from_msg(convert.deserialize(data, convert.HAND_POSE))
        now = self._monotonic_s()
        self.poses += 1
        state = pose["tracking_state"]
        target = None
        if state != TrackingState.LOST:
            started = time.perf_counter()
            try:
                wrist = Rotation.from_quat(pose["wrist_rotation_xyzw"]).as_matrix()
                sigma = pose["landmark_sigma"] if self.params.use_uncertainty else None
                target = self.retargeter.retarget(pose["landmarks"], sigma, wrist)
            except (RetargetInputError, ValueError) as exc:
                self.rejected += 1  # bad input: the safety filter sees an unusable target and holds
                self.get_logger().warning(f"hand pose rejected: {exc}", throttle_duration_sec=2.0)
            self.solve_ms.append((time.perf_counter() - started) * 1e3)
        self.safety.update(now, target, state)
        valid = target is not None and state != TrackingState.LOST
        for event in self.pinch.update(now, pose["landmarks"] if valid else None, valid, pose["hand_scale"] or 1.0):
            base.publish_serialized(self.pinch_pub, convert.pinch_event_msg(
                pose["stamp_ns"], self.root_frame, self.params.side, event.finger, event.kind == "start",
                event.distance))
        if self.params.command_on_pose:
            # stepped to the sending instant (after the solve), so the command's stamp is its time
            published_ns = self.send_command(self._monotonic_s())
            self.commands_on_pose += 1
            self.command_latency_ms.append((published_ns - pose["stamp_ns"]) / 1e6)
            base.record_latency(self, self.latency_log, pose["stamp_ns"], published_ns)

    def on_control_tick(self) -> None:
        now = self._monotonic_s()
        if self.params.command_on_pose and self._last_command_s is not None and \
                now - self._last_command_s < 0.5 * self.period_s:
            return  # a pose's command just went out: no second one right behind it
        self.send_command(now)

    def send_command(self, now: float) -> int:
        """Step the safety filter to ``now`` (monotonic s) and publish its command; returns when the
        command was published (ROS time ns)."""
        command = self.safety.step(now)
        self._last_command_s = now
        stamp = base.now_ns(self)
        # commands and joint states are one message on two topics: built and serialized once
        joint_state = convert.serialize(convert.joint_state_msg(stamp, self.root_frame, self.joint_names,
                                                                command.position, command.velocity))
        self.command_pub.publish(joint_state)
        published_ns = base.now_ns(self)
        self.state_pub.publish(joint_state)
        if self.trajectory_pub is not None:
            base.publish_serialized(self.trajectory_pub, convert.joint_trajectory_msg(
                stamp, self.root_frame, self.joint_names, command.position, command.velocity, self.period_s))
        self.commands += 1
        return published_ns

    def publish_diagnostics(self) -> None:
        solve = np.array(self.solve_ms) if self.solve_ms else np.zeros(1)
        latency = np.array(self.command_latency_ms) if self.command_latency_ms else np.zeros(1)
        state = self.safety.state.value
        level = 0 if state == "tracking" else 1
        status = base.diagnostic_status(
            f"{self.get_name()}: {self.params.side} retargeting", self.root_frame, level, state,
            {"poses": self.poses, "rejected_poses": self.rejected, "commands": self.commands,
             "commands_on_pose": self.commands_on_pose,
             "solve_ms_p50": f"{np.percentile(solve, 50):.2f}", "solve_ms_p99": f"{np.percentile(solve, 99):.2f}",
             # camera stamp of a pose -> the command sent on it (command_on_pose), last 600 poses
             "command_latency_ms_p50": f"{np.percentile(latency, 50):.2f}",
             "command_latency_ms_p99": f"{np.percentile(latency, 99):.2f}",
             "pinch": ",".join(f for f, a in self.pinch.active.items() if a) or "none",
             "scheduling": base.scheduling_value(self)})
        base.publish_serialized(self.diag_pub, base.diagnostic_array(base.now_ns(self), [status]))

    def destroy_node(self):
        if self.latency_log is not None:
            self.latency_log.close()
        return super().destroy_node()


def main(args=None) -> int:
    return base.run_node(RetargetNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
