"""Figures of a running node graph, ROS-free: per-process CPU/RSS, message stamps, stage latencies.

Used by ``avi-ht demo`` (on the bag its recorder wrote: log time = receive time) and
``avi-ht bench graph`` (on what an in-process probe received).

* :class:`ProcessSampler` — CPU % (of one core) and RSS of processes from ``/proc/<pid>/stat``
  and ``/proc/<pid>/status`` (Linux), and their scheduling policy, between :meth:`~ProcessSampler.start` and
  :meth:`~ProcessSampler.sample`.
* :func:`header_stamp_ns` — the ``header.stamp`` of a CDR-serialized message whose first
  field is a ``std_msgs/Header`` (Image, CameraInfo, GloveSample, SyncedFrame, HandPose,
  JointState, ...) without deserializing the rest (a 300 kB image costs nothing).
* :func:`stage_latencies` — the pipeline's latencies from stamps and receive times:
  every message of a camera frame carries the frame's acquisition stamp (synced frame and
  hand pose copy the image header), so a stage's latency is the difference of receive times
  of the same stamp; joint commands are stamped by the retargeting node's control timer, so
  the retargeting stage is "pose received → first command received after it".
* :class:`LatencyLog` / :func:`read_latency_log` — what a node itself saw: each frame's camera
  stamp and the time the node published its output (the fusion node's hand pose, the
  retargeting node's joint command sent on that pose), written by the node (parameter
  ``latency_log``) and read back by ``avi-ht bench graph``. No subscriber's delivery in it, and
  a command is tied to the pose it was computed from (the probe can only take the next command
  it receives, which may be a control-timer command sent before the pose was retargeted).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import struct
import time
from typing import Mapping

import numpy as np

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# -- processes ------------------------------------------------------------------------------

def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time (all threads) of a process, in seconds."""
    text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()   # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS   # utime, stime (fields 14, 15)


def process_memory_mb(pid: int) -> tuple[float, float]:
    """(resident set size, peak resident set size) of a process in MB."""
    rss = peak = float("nan")
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024.0
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024.0
    return rss, peak


def process_scheduling(pid: int) -> str:
    """The scheduling policy and real-time priority of a process's main thread (or of the thread
    with that id), e.g. ``SCHED_FIFO 30`` or ``SCHED_OTHER``."""
    from avi_ht_ros.common.realtime import describe_scheduling, thread_scheduling
    return describe_scheduling(*thread_scheduling(pid))


@dataclasses.dataclass(frozen=True)
class ProcessUsage:
    cpu_percent: float     # of one core, over the sampled interval
    rss_mb: float
    peak_rss_mb: float
    alive: bool
    scheduling: str = ""   # policy and priority at the end of the interval (:func:`process_scheduling`)


class ProcessSampler:
    """CPU and memory of named processes over an interval."""

    def __init__(self, pids: Mapping[str, int]):
        self.pids = dict(pids)
        self._start: dict[str, float] = {}
        self._t0 = 0.0

    def start(self) -> "ProcessSampler":
        self._t0 = time.monotonic()
        self._start = {}
        for name, pid in self.pids.items():
            try:
                self._start[name] = process_cpu_seconds(pid)
            except (OSError, ValueError, IndexError):
                pass
        return self

    def sample(self) -> dict[str, ProcessUsage]:
        wall = max(time.monotonic() - self._t0, 1e-9)
        out = {}
        for name, pid in self.pids.items():
            try:
                cpu = process_cpu_seconds(pid)
                rss, peak = process_memory_mb(pid)
                scheduling = process_scheduling(pid)
                alive = True
            except (OSError, ValueError, IndexError):
                cpu, rss, peak, alive, scheduling = float("nan"), float("nan"), float("nan"), False, ""
            base = self._start.get(name, float("nan"))
            out[name] = ProcessUsage(100.0 * (cpu - base) / wall, rss, peak, alive, scheduling)
        return out


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


# -- messages -------------------------------------------------------------------------------

def header_stamp_ns(data: bytes | memoryview) -> int:
    """``header.stamp`` (ns) of a CDR message that starts with a ``std_msgs/Header``."""
    if len(data) < 12:
        raise ValueError("message too short for a header")
    little = data[1] in (0x01, 0x03)      # CDR_LE / PL_CDR_LE encapsulation
    sec, nanosec = struct.unpack_from("<iI" if little else ">iI", data, 4)
    return sec * 1_000_000_000 + nanosec


# -- latencies ------------------------------------------------------------------------------

def latency_stats(values_ms: np.ndarray | list) -> dict[str, float]:
    """p50/p90/p99/max/mean (ms) and the count of finite values."""
    values = np.asarray(values_ms, np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"n": 0, "p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "max": float("nan"),
                "mean": float("nan")}
    return {"n": int(values.size), "p50": float(np.percentile(values, 50)), "p90": float(np.percentile(values, 90)),
            "p99": float(np.percentile(values, 99)), "max": float(values.max()), "mean": float(values.mean())}


#: Stages of :func:`stage_latencies`, in pipeline order, with their table labels.
STAGES: dict[str, str] = {
    "camera_publish": "camera stamp -> image received",
    "camera_info": "camera stamp -> camera info received (published just after the image)",
    "glove": "glove stamp -> glove sample received (every sample, 200 Hz)",
    "sync": "camera stamp -> synced frame received",
    "fusion": "synced frame -> hand pose received",
    "retarget": "hand pose -> next joint command received",
    "end_to_end_pose": "camera stamp -> hand pose received (end to end)",
    "end_to_end_command": "camera stamp -> joint command received (incl. retargeting)",
    # what the nodes themselves logged (LatencyLog): no subscriber's delivery, each command tied to its pose
    "pose_published": "camera stamp -> hand pose published (fusion node's log)",
    "command_published": "camera stamp -> joint command published on that pose (retargeting node's log)",
}


def stage_latencies(poses: Mapping[int, int], synced: Mapping[int, int] | None = None,
                    images: Mapping[int, int] | None = None, command_receive_ns: np.ndarray | None = None
                    ) -> dict[str, np.ndarray]:
    """Per-frame latencies (ms) of every stage, keyed like :data:`STAGES`.

    ``poses``/``synced``/``images``: ``{camera stamp ns: receive time ns}`` of the hand poses,
    synchronized frames and images; ``command_receive_ns``: receive times of the joint
    commands. Stages whose input is missing are left out.
    """
    out: dict[str, np.ndarray] = {}
    pose_stamps = np.array(sorted(poses), np.int64)
    pose_recv = np.array([poses[s] for s in pose_stamps], np.int64)
    if images:
        stamps = np.array(sorted(images), np.int64)
        out["camera_publish"] = (np.array([images[s] for s in stamps]) - stamps) / 1e6
    if synced:
        stamps = np.array(sorted(synced), np.int64)
        out["sync"] = (np.array([synced[s] for s in stamps]) - stamps) / 1e6
        both = [s for s in pose_stamps if s in synced]
        out["fusion"] = np.array([poses[s] - synced[s] for s in both], np.float64) / 1e6
    out["end_to_end_pose"] = (pose_recv - pose_stamps) / 1e6
    if command_receive_ns is not None and len(command_receive_ns):
        commands = np.sort(np.asarray(command_receive_ns, np.int64))
        index = np.searchsorted(commands, pose_recv, side="left")
        has = index < commands.size
        retarget = np.full(pose_recv.size, np.nan)
        retarget[has] = (commands[index[has]] - pose_recv[has]) / 1e6
        out["retarget"] = retarget
        out["end_to_end_command"] = (pose_recv - pose_stamps) / 1e6 + retarget
    return out


LATENCY_LOG_HEADER = "camera_stamp_ns,published_ns"


class LatencyLog:
    """A node's per-frame log: ``camera_stamp_ns,published_ns`` lines (ROS-clock nanoseconds).

    Opened at node start-up (a path that cannot be written is an :class:`OSError` there, which
    the node reports as a configuration error); :meth:`record` costs a formatted line in a
    buffered file. A write that fails later (disk full, file system gone) disables the log and
    is reported once by :meth:`record`'s return value — it never stops the node.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self._file = open(self.path, "w", buffering=1 << 16, encoding="ascii")  # noqa: SIM115 - closed in close()
        self._file.write(LATENCY_LOG_HEADER + "\n")
        self.records = 0
        self.error: OSError | None = None

    def record(self, camera_stamp_ns: int, published_ns: int) -> OSError | None:
        """Log one frame; returns the error that just disabled the log (once), else None."""
        if self._file is None:
            return None
        try:
            self._file.write(f"{int(camera_stamp_ns)},{int(published_ns)}\n")
        except OSError as exc:
            self.error = exc
            self.close()
            return exc
        self.records += 1
        return None

    def close(self) -> None:
        """Close the file; an error closing it is kept in :attr:`error` unless an earlier one is there."""
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except OSError as exc:
                self.error = self.error or exc


def read_latency_log(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(camera_stamp_ns, published_ns)`` int64 arrays of a :class:`LatencyLog` file; a missing
    header or a malformed line is a ``ValueError`` naming the file (a last line cut off by a
    killed node is skipped)."""
    lines = pathlib.Path(path).read_text(encoding="ascii").splitlines()
    if not lines or lines[0] != LATENCY_LOG_HEADER:
        raise ValueError(f"{path}: not a latency log (first line must be {LATENCY_LOG_HEADER!r})")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            stamp, published = (int(field) for field in line.split(","))   # two integers, or ValueError
            rows.append((stamp, published))
        except ValueError:
            if number == len(lines):
                break      # the last line of a node that did not close its log
            raise ValueError(f"{path}:{number}: expected two integers, got {line!r}") from None
    data = np.array(rows, np.int64).reshape(-1, 2)
    return data[:, 0], data[:, 1]


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain-text table, first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(cells))
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
