"""Record serialized messages to a rosbag2 (MCAP) without ROS: the core of ``recorder_node``.

On a ROS 2 install ``record.launch.py`` runs ``ros2 bag record``; where ROS comes from
PyPI wheels (no ``rosbag2_py``) the ``recorder_node`` does the same job with this class.
Messages arrive as the CDR bytes an rclpy raw subscription delivers, from any thread,
through :meth:`BagRecorder.add` (cheap: a queue append); one writer thread appends
them to the bag in arrival order with their receive time as log time. :meth:`close`
stops accepting, writes everything still queued and closes the bag, so nothing that
was handed over is lost. The first write error is kept, stops the writing and is
re-raised by :meth:`close` (a bag is never silently truncated).
"""
from __future__ import annotations

import collections
import dataclasses
import pathlib
import threading
import time

from avi_ht_ros.common import topics
from avi_ht_ros.io.bag import BagError, BagWriter

#: What ``record.launch.py`` records (``ros2 bag record``) and ``recorder_node`` records by
#: default: the raw sensor streams, the simulator's/mocap ground truth, the static TF.
RAW_TOPICS: tuple[str, ...] = (
    topics.IMAGE,
    topics.CAMERA_INFO,
    *(topics.hand_topic(side, topics.GLOVE_SAMPLES) for side in ("right", "left")),
    *(topics.hand_topic(side, topics.HAND_GROUND_TRUTH) for side in ("right", "left")),
    topics.TF_STATIC,
)
#: Topics recorded with the latched (transient-local) QoS profile in the bag's metadata.
LATCHED_TOPICS: tuple[str, ...] = (topics.TF_STATIC,)


@dataclasses.dataclass(frozen=True)
class TopicStats:
    msgtype: str
    received: int
    written: int
    bytes: int
    first_receive_ns: int | None
    last_receive_ns: int | None


@dataclasses.dataclass(frozen=True)
class RecorderStats:
    path: str
    topics: dict[str, TopicStats]
    queued: int                 # handed over, not written yet
    max_queued: int
    rejected: int               # refused: after close, wrong type on a known topic, or after a write error
    error: str

    @property
    def received(self) -> int:
        return sum(t.received for t in self.topics.values())

    @property
    def written(self) -> int:
        return sum(t.written for t in self.topics.values())


class BagRecorder:
    """Thread-safe recorder of serialized messages into a new rosbag2 directory."""

    def __init__(self, path: str | pathlib.Path, storage: str = "mcap",
                 latched_topics: tuple[str, ...] = LATCHED_TOPICS):
        self.path = pathlib.Path(path)
        self._bag = BagWriter(self.path, storage)       # refuses an existing path
        self._latched = frozenset(latched_topics)
        self._queue: collections.deque = collections.deque()
        self._condition = threading.Condition()
        self._accepting = False
        self._types: dict[str, str] = {}
        self._received: collections.Counter = collections.Counter()
        self._written: collections.Counter = collections.Counter()
        self._bytes: collections.Counter = collections.Counter()
        self._first: dict[str, int] = {}
        self._last: dict[str, int] = {}
        self._max_queued = 0
        self._rejected = 0
        self._error = ""
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> "BagRecorder":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._bag.__enter__()
        self._accepting = True
        self._thread = threading.Thread(target=self._run, name="bag_writer", daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> "BagRecorder":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def add(self, topic: str, msgtype: str, data: bytes, receive_ns: int | None = None) -> bool:
        """Queue one message for writing (False: refused, and counted)."""
        stamp = time.time_ns() if receive_ns is None else int(receive_ns)
        with self._condition:
            known = self._types.setdefault(topic, msgtype)
            if not self._accepting or known != msgtype or self._error:
                self._rejected += 1
                return False
            self._queue.append((topic, msgtype, stamp, data))
            self._received[topic] += 1
            self._first.setdefault(topic, stamp)
            self._last[topic] = stamp
            self._max_queued = max(self._max_queued, len(self._queue))
            self._condition.notify()
        return True

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue and self._accepting:
                    self._condition.wait(0.5)
                if not self._queue:
                    return                      # closed and drained
                topic, msgtype, stamp, data = self._queue.popleft()
            if self._error:
                continue                        # a failed bag takes no more data (counted as queued-lost)
            try:
                self._bag.write_serialized(topic, msgtype, stamp, data, latched=topic in self._latched)
            except Exception as exc:  # noqa: BLE001 - disk full, type unknown to the store, ...
                with self._condition:
                    self._error = f"{topic}: {exc}"
                continue
            with self._condition:
                self._written[topic] += 1
                self._bytes[topic] += len(data)

    def stats(self) -> RecorderStats:
        with self._condition:
            per_topic = {t: TopicStats(self._types[t], self._received[t], self._written[t], self._bytes[t],
                                       self._first.get(t), self._last.get(t)) for t in self._types}
            return RecorderStats(str(self.path), per_topic, len(self._queue), self._max_queued, self._rejected,
                                 self._error)

    def close(self) -> RecorderStats:
        """Stop accepting, write everything queued, close the bag; raises BagError after a write error."""
        if not self._closed:
            self._closed = True
            with self._condition:
                self._accepting = False
                self._condition.notify_all()
            if self._thread is not None:
                self._thread.join()
            try:
                self._bag.close()
            except Exception as exc:  # noqa: BLE001
                self._error = self._error or f"closing: {exc}"
        stats = self.stats()
        if stats.error:
            lost = stats.received - stats.written
            raise BagError(f"{self.path}: recording failed ({stats.error}); {lost} received messages not written")
        return stats
