"""An in-process rclpy probe of a running graph (for ``avi-ht demo`` and ``avi-ht bench graph``).

Not a node executable: the demo and the graph benchmark create it inside their own
process to watch the graph the separate node processes form. It keeps

* the last ``/diagnostics`` status of every node (``diagnostics``: name -> :class:`Status`),
* ``{camera stamp: receive time}`` of the hand poses (and, with ``timing=True``, of the
  camera infos and, unless ``synced_frames=False``, the synchronized frames) read from the CDR
  header without decoding,
* the receive times of the joint commands and ``{glove stamp: receive time}`` of the glove samples (``timing=True``).

Receive times are ``time.time_ns()`` (the clock the camera stamps with).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, JointState

from avi_ht_ros.common import topics
from avi_ht_ros.io import convert
from avi_ht_ros.live_stats import header_stamp_ns
from avi_ht_ros.msg import GloveSample, HandPose, SyncedFrame
from avi_ht_ros.nodes import base

_DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.VOLATILE)
_POSE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)


@dataclasses.dataclass(frozen=True)
class Status:
    receive_ns: int
    level: int
    message: str
    values: dict


class GraphProbe:
    """Subscribes to a hand's outputs and every node's diagnostics; :meth:`spin_until` drives it."""

    def __init__(self, side: str = "right", timing: bool = False, context: rclpy.Context | None = None,
                 synced_frames: bool = True):
        self._own_context = context is None
        self.context = context or rclpy.Context()
        if self._own_context:
            rclpy.init(context=self.context)
        self.node = rclpy.create_node("avi_ht_graph_probe", context=self.context)
        # the nodes' executor: the single-threaded one took ~22 % of a core from the graph it measures
        self.executor = base.default_executor(self.context)
        self.executor.add_node(self.node)
        convert.prepare("diagnostic_msgs/msg/DiagnosticArray")
        self.side = side
        self.diagnostics: dict[str, Status] = {}
        self.poses: dict[int, int] = {}
        self.camera_infos: dict[int, int] = {}
        self.synced: dict[int, int] = {}
        self.command_receive_ns: list[int] = []
        self.glove: dict[int, int] = {}
        self.recording = True          # False: callbacks only count nothing (between phases)
        node = self.node
        node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diagnostics, _DIAGNOSTICS_QOS,
                                 raw=True)
        node.create_subscription(HandPose, topics.hand_topic(side, topics.HAND_POSE),
                                 self._stamped(self.poses), _POSE_QOS, raw=True)
        if timing:
            node.create_subscription(CameraInfo, topics.CAMERA_INFO, self._stamped(self.camera_infos),
                                     base.SENSOR_QOS, raw=True)
            if synced_frames:
                node.create_subscription(SyncedFrame, topics.hand_topic(side, topics.SYNCED_FRAME),
                                         self._stamped(self.synced), base.SENSOR_QOS, raw=True)
            node.create_subscription(JointState, topics.hand_topic(side, topics.ROBOT_JOINT_COMMANDS),
                                     self._on_command, _POSE_QOS, raw=True)
            node.create_subscription(GloveSample, topics.hand_topic(side, topics.GLOVE_SAMPLES),
                                     self._stamped(self.glove), base.GLOVE_QOS, raw=True)

    # -- callbacks ----------------------------------------------------------------------------
    def _stamped(self, store: dict[int, int]) -> Callable[[bytes], None]:
        def callback(data: bytes) -> None:
            received = time.time_ns()
            if self.recording:
                store.setdefault(header_stamp_ns(data), received)
        return callback

    def _on_command(self, data: bytes) -> None:
        if self.recording:
            self.command_receive_ns.append(time.time_ns())

    def _on_diagnostics(self, data: bytes) -> None:
        received = time.time_ns()
        for status in convert.deserialize(data, "diagnostic_msgs/msg/DiagnosticArray").status:
            self.diagnostics[status.name] = Status(received, int(status.level), status.message,
                                                   {kv.key: kv.value for kv in status.values})

    # -- driving ------------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget the timing data (not the diagnostics): a measurement starts now."""
        self.poses.clear()
        self.camera_infos.clear()
        self.synced.clear()
        self.command_receive_ns.clear()
        self.glove.clear()

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            self.executor.spin_once(timeout_sec=min(left, 0.05))

    def spin_until(self, predicate: Callable[[], bool], timeout_s: float,
                   check: Callable[[], None] | None = None, tick: Callable[[], None] | None = None) -> bool:
        """Spin until ``predicate()`` (True) or the timeout (False); ``check()`` may raise to abort."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.05)
            if check is not None:
                check()
            if tick is not None:
                tick()
        return predicate()

    def status(self, contains: str) -> Status | None:
        """The newest status whose name contains ``contains`` (e.g. 'hand fusion')."""
        found = [s for name, s in self.diagnostics.items() if contains in name]
        return max(found, key=lambda s: s.receive_ns) if found else None

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        if self._own_context:
            self.context.try_shutdown()
