"""rosbag2 reading and writing without ROS, through ``rosbags``.

Bags are MCAP by default (what ``ros2 bag record -s mcap`` writes); sqlite3 is
available too. Messages are ``rosbags`` message objects built with
:func:`avi_ht_ros.io.messages.typestore` (standard types + ours), so the
bytes are exactly what rclpy would write.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Iterable, Iterator

from rosbags.highlevel import AnyReader
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer

from avi_ht_ros.common.errors import AviHtError
from avi_ht_ros.io.messages import typestore

_NO_TIME = QosTime(sec=0, nsec=0)


def _qos(durability: QosDurability, depth: int) -> Qos:
    return Qos(history=QosHistory.KEEP_LAST, depth=depth, reliability=QosReliability.RELIABLE,
               durability=durability, deadline=_NO_TIME, lifespan=_NO_TIME,
               liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=_NO_TIME,
               avoid_ros_namespace_conventions=False)


LATCHED_QOS = _qos(QosDurability.TRANSIENT_LOCAL, 1)     # /tf_static
STREAM_QOS = _qos(QosDurability.VOLATILE, 100)


class BagError(AviHtError):
    """A bag cannot be read or written."""


class BagWriter:
    """Write messages to a new rosbag2 directory (context manager)."""

    def __init__(self, path: str | pathlib.Path, storage: str = "mcap"):
        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise BagError(f"{path}: storage must be one of {sorted(plugins)}, got {storage!r}")
        self.path = pathlib.Path(path)
        if self.path.exists():
            raise BagError(f"{self.path}: already exists (bags are never overwritten)")
        self.store = typestore()
        self._writer = Writer(self.path, version=9, storage_plugin=plugins[storage])
        self._connections: dict[str, Any] = {}
        self._open = False
        self.counts: dict[str, int] = {}

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        self._open = True
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._open:
            self._writer.close()
            self._open = False

    def write(self, topic: str, msgtype: str, stamp_ns: int, msg: Any, *, latched: bool = False) -> None:
        """Append ``msg`` (a rosbags message of ``msgtype``) at log time ``stamp_ns``."""
        self.write_serialized(topic, msgtype, stamp_ns, self.store.serialize_cdr(msg, msgtype), latched=latched)

    def write_serialized(self, topic: str, msgtype: str, stamp_ns: int, data: bytes | memoryview, *,
                         latched: bool = False) -> None:
        """Append a message already in CDR bytes (what an rclpy raw subscription receives)."""
        connection = self._connections.get(topic)
        if connection is None:
            qos = LATCHED_QOS if latched else STREAM_QOS
            connection = self._writer.add_connection(topic, msgtype, typestore=self.store,
                                                     offered_qos_profiles=[qos])
            self._connections[topic] = connection
        elif connection.msgtype != msgtype:
            raise BagError(f"{self.path}: topic {topic} already has type {connection.msgtype}, not {msgtype}")
        self._writer.write(connection, int(stamp_ns), data)
        self.counts[topic] = self.counts.get(topic, 0) + 1


@dataclasses.dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    log_time_ns: int
    msg: Any


def bag_topics(path: str | pathlib.Path) -> dict[str, tuple[str, int]]:
    """``{topic: (msgtype, message count)}`` of a bag."""
    with _reader(path) as reader:
        return {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}


def read_messages(path: str | pathlib.Path, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
    """Decoded messages of ``topics`` (all if None) in log-time order."""
    wanted = None if topics is None else set(topics)
    with _reader(path) as reader:
        connections = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not connections:
            return  # (rosbags reads *every* connection when given an empty list)
        for connection, log_time, raw in reader.messages(connections=connections):
            yield BagMessage(connection.topic, connection.msgtype, log_time,
                             reader.deserialize(raw, connection.msgtype))


def read_serialized(path: str | pathlib.Path, topics: Iterable[str]) -> Iterator[tuple[str, str, int, bytes]]:
    """``(topic, msgtype, log_time_ns, CDR bytes)`` of ``topics`` in log-time order, not decoded."""
    wanted = set(topics)
    with _reader(path) as reader:
        connections = [c for c in reader.connections if c.topic in wanted]
        if not connections:
            return
        for connection, log_time, raw in reader.messages(connections=connections):
            yield connection.topic, connection.msgtype, log_time, raw


def _reader(path: str | pathlib.Path) -> AnyReader:
    path = pathlib.Path(path)
    if not path.exists():
        raise BagError(f"{path}: no such bag")
    try:
        return AnyReader([path], default_typestore=typestore())
    except Exception as exc:  # rosbags raises several types for unreadable bags
        raise BagError(f"{path}: cannot open bag ({exc})") from exc
