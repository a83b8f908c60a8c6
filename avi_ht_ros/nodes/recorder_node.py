"""Recorder node: the configured topics, as received, into a rosbag2 (MCAP) directory.

What ``ros2 bag record`` does on a ROS 2 install (``record.launch.py``), for where
``rosbag2_py``/``ros2cli`` do not exist (ROS from PyPI wheels): the demo runs it.
Thin wrapper over :class:`avi_ht_ros.io.recorder.BagRecorder`.

Topics are found by name: every ``discovery_period_s`` the graph is searched for the
configured topics not yet subscribed; each is subscribed *raw* (the CDR bytes go to the
bag unchanged) with the QoS its publishers offer — reliable when they all publish
reliable (nothing is lost to a busy recorder), best effort otherwise, transient local
when they all latch (``/tf_static``). The log time of a message is its receive time.

On SIGINT/SIGTERM the node stops spinning, takes whatever the middleware still holds
for it, writes everything queued and closes the bag before exiting: messages that
reached the recorder are never lost. Per-topic counts, queue depth and write errors go
to ``/diagnostics``, and so do the messages the middleware reports lost before they
reached the recorder (a reliable publisher overwrote them in its history before a
starved recorder acknowledged them; the raw-topic publishers keep seconds of history,
``base.RAW_IMAGE_QOS``/``RAW_CAMERA_QOS``/``RAW_GLOVE_QOS``).
"""
from __future__ import annotations

import dataclasses
import datetime
import importlib
import signal
import sys
import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.event_handler import QoSMessageLostInfo, SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from avi_ht_ros.common import topics
from avi_ht_ros.common.errors import AviHtError, ConfigError
from avi_ht_ros.common.params import param
from avi_ht_ros.io import convert
from avi_ht_ros.io.recorder import LATCHED_TOPICS, RAW_TOPICS, BagRecorder
from avi_ht_ros.nodes import base


@dataclasses.dataclass(frozen=True)
class RecorderNodeParams:
    output: str = param("", "bag directory to create; must not exist ('' = avi_ht_recording_<date>_<time> in the "
                        "working directory)")
    topics: tuple[str, ...] = param(RAW_TOPICS, "topics to record (absolute names; default: the raw topics "
                                    "record.launch.py records)")
    storage: str = param("mcap", "rosbag2 storage plugin", choices=("mcap", "sqlite3"))
    history_depth: int = param(1000, "subscription queue per topic: messages held while the recorder is busy",
                               range=(1, 100000))
    discovery_period_s: float = param(0.2, "how often the graph is searched for topics not yet subscribed",
                                      range=(0.01, 60.0), unit="s")
    diagnostics_period_s: float = param(1.0, "period of /diagnostics", range=(0.1, 60.0), unit="s")
    drain_s: float = param(0.3, "on shutdown, keep taking messages until none arrived for this long",
                           range=(0.0, 10.0), unit="s")
    realtime_priority: int = base.realtime_priority_param(0)

    def __post_init__(self):
        if not self.topics:
            raise ConfigError("parameter 'topics'", "name at least one topic")
        bad = [t for t in self.topics if not t.startswith("/")]
        if bad:
            raise ConfigError("parameter 'topics'", f"topic names must be absolute, got {bad}")


PARAMETER_SETS = (("", RecorderNodeParams),)


def message_class(msgtype: str):
    """The rclpy message class of ``pkg/msg/Name``."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


class RecorderNode(Node):
    def __init__(self, **kwargs):
        super().__init__("recorder", **kwargs)
        (self.params,) = base.declare_parameter_sets(self, PARAMETER_SETS)
        output = self.params.output or datetime.datetime.now().strftime("avi_ht_recording_%Y%m%d_%H%M%S")
        convert.prepare("diagnostic_msgs/msg/DiagnosticArray")
        self.recorder = BagRecorder(output, self.params.storage, LATCHED_TOPICS).start()
        self.subscriptions_by_topic: dict[str, object] = {}
        self.qos_by_topic: dict[str, str] = {}
        self.lost_by_topic: dict[str, int] = {}    # reported lost by the middleware (never reached us)
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, base.RELIABLE_QOS)
        self.create_timer(self.params.discovery_period_s, self.discover)
        self.create_timer(self.params.diagnostics_period_s, self.publish_diagnostics)
        self.discover()
        self.get_logger().info(f"recording {len(self.params.topics)} topics to {self.recorder.path}")

    def _qos_for(self, topic: str) -> tuple[QoSProfile, str]:
        publishers = self.get_publishers_info_by_topic(topic)
        reliable = bool(publishers) and all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                                            for p in publishers)
        latched = bool(publishers) and all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
                                           for p in publishers)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.params.history_depth,
                         reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
        return qos, ("reliable" if reliable else "best_effort") + (", transient_local" if latched else "")

    def discover(self) -> None:
        wanted = [t for t in self.params.topics if t not in self.subscriptions_by_topic]
        if not wanted:
            return
        available = dict(self.get_topic_names_and_types())
        for topic in wanted:
            types = available.get(topic)
            # a topic also appears when only subscribers exist: wait for a publisher, whose QoS decides ours
            if not types or not self.get_publishers_info_by_topic(topic):
                continue
            if len(types) > 1:
                self.get_logger().warning(f"{topic} has several types {types}; recording {types[0]}")
            msgtype = types[0]
            try:
                cls = message_class(msgtype)
            except (ImportError, AttributeError, ValueError) as exc:
                self.get_logger().error(f"{topic}: cannot import {msgtype} ({exc}); not recorded",
                                        throttle_duration_sec=10.0)
                continue
            qos, description = self._qos_for(topic)
            self.subscriptions_by_topic[topic] = self.create_subscription(
                cls, topic, lambda data, topic=topic, msgtype=msgtype: self.on_message(topic, msgtype, data),
                qos, raw=True, event_callbacks=SubscriptionEventCallbacks(
                    message_lost=lambda info, topic=topic: self.on_message_lost(topic, info)))
            self.qos_by_topic[topic] = description
            self.get_logger().info(f"recording {topic} ({msgtype}, {description})")

    def on_message(self, topic: str, msgtype: str, data: bytes) -> None:
        self.recorder.add(topic, msgtype, data, base.now_ns(self))

    def on_message_lost(self, topic: str, info: QoSMessageLostInfo) -> None:
        if info.total_count_change > 0:
            self.lost_by_topic[topic] = self.lost_by_topic.get(topic, 0) + info.total_count_change
            self.get_logger().warning(f"{topic}: {info.total_count_change} messages lost before reaching the "
                                      f"recorder ({self.lost_by_topic[topic]} so far)", throttle_duration_sec=5.0)

    def publish_diagnostics(self) -> None:
        stats = self.recorder.stats()
        missing = [t for t in self.params.topics if t not in self.subscriptions_by_topic]
        values = {"path": stats.path, "received": stats.received, "written": stats.written, "queued": stats.queued,
                  "max_queued": stats.max_queued, "rejected": stats.rejected,
                  "bytes": sum(t.bytes for t in stats.topics.values()),
                  "waiting_for": ",".join(missing) or "none", "lost": sum(self.lost_by_topic.values()),
                  "scheduling": base.scheduling_value(self)}
        for topic in self.params.topics:
            entry = stats.topics.get(topic)
            values[f"topic.{topic}"] = entry.received if entry is not None else 0
            values[f"lost.{topic}"] = self.lost_by_topic.get(topic, 0)
        level = 2 if stats.error else (1 if missing or values["lost"] else 0)
        message = (f"write error: {stats.error}" if stats.error else
                   f"waiting for {len(missing)} topics" if missing else
                   f"recording; {values['lost']} messages lost before reaching the recorder" if values["lost"] else
                   "recording")
        status = base.diagnostic_status(f"{self.get_name()}: rosbag2 recorder", stats.path, level, message, values)
        base.publish_serialized(self.diag_pub, base.diagnostic_array(base.now_ns(self), [status]))

    def finish(self) -> int:
        """Close the bag (everything queued is written); 0, or 2 after a write error."""
        try:
            stats = self.recorder.close()
        except AviHtError as exc:
            self.get_logger().error(str(exc))
            return 2
        self.get_logger().info(f"recorded {stats.written} messages on {len(stats.topics)} topics to {stats.path}")
        if self.lost_by_topic:
            self.get_logger().warning(f"messages lost before reaching the recorder: {self.lost_by_topic}")
        return 0


def drain(executor, node: RecorderNode, empty_polls: int = 5) -> None:
    """Take what the middleware already holds for this process's readers: until no message
    arrived for ``drain_s`` *and* the last ``empty_polls`` polls took none, or after
    ``max(10 s, 10 drain_s)`` (publishers still running: stop anyway). Wall-clock quiet
    alone is no proof on a starved CPU (the process may simply not have run); a poll that
    finds nothing ready is."""
    now = time.monotonic()
    quiet_since, deadline = now, now + max(10.0, 10.0 * node.params.drain_s)
    last, empty = node.recorder.stats().received, 0
    while time.monotonic() < deadline and (empty < empty_polls
                                           or time.monotonic() - quiet_since < node.params.drain_s):
        executor.spin_once(timeout_sec=0.02)
        received = node.recorder.stats().received
        if received != last:
            last, quiet_since, empty = received, time.monotonic(), 0
        else:
            empty += 1


def main(args=None) -> int:
    """Spin until SIGINT/SIGTERM, drain what the middleware still holds, close the bag."""
    stop = threading.Event()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    node = executor = None
    code = 0
    try:
        executor = base.default_executor()
        node = RecorderNode()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
        drain(executor, node)
    except AviHtError as exc:
        print(f"[recorder] error: {exc}", file=sys.stderr)
        code = 2
    finally:
        if node is not None:
            code = node.finish() or code
            executor.remove_node(node)
            node.destroy_node()
        if executor is not None:
            executor.shutdown()
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
