"""What every node shares: parameters, QoS, publishing, diagnostics, ``main``.

Parameters are declared from a frozen dataclass whose fields carry their
description and range (:func:`param`). :func:`declare_parameters` declares
each with a ``ParameterDescriptor`` (description, range, read-only), reads
the values once at start-up and builds the dataclass, whose ``__post_init__``
validates cross-field rules. A bad value stops the node with one line naming
the parameter (:class:`~avi_ht_ros.common.errors.ConfigError`), never a
traceback. ``avi-ht params`` prints the same metadata as the README tables.
"""
from __future__ import annotations

import faulthandler
import math
import os
import sys
import threading
import time
import traceback
from typing import Any, Callable, Sequence

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

from avi_ht_ros.common import realtime
from avi_ht_ros.common.errors import AviHtError, ConfigError
from avi_ht_ros.common.params import param, param_specs
from avi_ht_ros.graph import STACK_DUMP_SIGNAL
from avi_ht_ros.io import convert
from avi_ht_ros.live_stats import LatencyLog

# sensor streams: best effort, keep last 10 (rclpy's qos_profile_sensor_data uses depth 5)
SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                        reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)
# 200 Hz glove streams: sensor-data QoS with 0.5 s of history, so a burst of samples
# (USB serial delivers several frames per read; an executor may stall briefly) is
# never overwritten before it is taken (measured: best-effort bursts larger than the
# depth lose the excess).
GLOVE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                       reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)
# reliable with the same 0.5 s history (what subscribers that must not miss a sample use;
# the glove driver publishes RAW_GLOVE_QOS)
RELIABLE_GLOVE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                                reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
# outputs consumers must not miss (poses, commands): reliable
RELIABLE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                          reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
# Raw sensor streams (what a recorder must get whole): reliable, with enough history that a
# recorder starved of CPU still gets every message. A reliable keep-last writer drops its
# oldest sample when the history is full, acknowledged or not, and repairs a lost
# transmission only after a heartbeat: Fast DDS piggybacks one on the data when the history
# is full or every ~socket-send-buffer of bytes (every image; every ~50 glove samples), else
# sends one every 3 s. Measured with a recorder at nice 19 on a saturated CPU: with 10 camera /
# 100 glove samples 2-10 % of every raw topic was lost (the middleware reported each as lost);
# with 2 s of history no image or glove sample was, but camera_info and ground truth (< 1 kB:
# no piggybacked heartbeat, repaired only after the 3 s one) still were. Hence 2 s for the
# image and the glove, 10 s for the small camera topics. Memory: a volatile Fast DDS writer
# drops a sample once every reliable reader acknowledged it (best-effort readers, e.g. the sync
# node, hold nothing), so the history only fills while a reliable subscriber lags; worst case
# 120 x 307 kB (640x480 mono8) = 37 MB for the image, 400 x 4.1 kB = 1.6 MB for the glove,
# 600 x (0.4 + 0.9) kB = 0.8 MB for camera_info + ground truth.
RAW_IMAGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=120,
                           reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
RAW_CAMERA_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=600,
                            reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
RAW_GLOVE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=400,
                           reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
assert qos_profile_sensor_data.reliability == ReliabilityPolicy.BEST_EFFORT


def _descriptor(spec) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    text = [spec.description]
    if spec.choices:
        text.append(f"one of {list(spec.choices)}")
    descriptor.additional_constraints = "; ".join(text[1:])
    if spec.range is not None:
        low, high = spec.range
        if spec.type is int:
            descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=0)]
        elif spec.type is float and math.isfinite(low) and math.isfinite(high):
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high),
                                                                  step=0.0)]
    return descriptor


def declare_parameters(node: Node, params_cls: type, prefix: str = "") -> Any:
    """Declare every field of ``params_cls`` on ``node`` and return the validated dataclass."""
    values = {}
    for spec in param_specs(params_cls):
        name = prefix + spec.name
        try:
            parameter = node.declare_parameter(name, spec.ros_default, _descriptor(spec))
        except Exception as exc:  # rclpy raises InvalidParameterValueException & co.
            raise ConfigError(f"parameter '{name}'", f"rejected: {exc}") from None
        value = parameter.value
        values[spec.name] = spec.coerce(name, value)
    try:
        return params_cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"parameters of {node.get_name()}", str(exc)) from None


def declare_parameter_sets(node: Node, parameter_sets) -> tuple:
    """Declare every ``(prefix, dataclass)`` of a node's ``PARAMETER_SETS``; the validated instances."""
    return tuple(declare_parameters(node, cls, prefix) for prefix, cls in parameter_sets)


def publish_serialized(publisher, msg: Any) -> None:
    """Publish a message built by :mod:`avi_ht_ros.io.convert` (its CDR bytes)."""
    publisher.publish(convert.serialize(msg))


def now_ns(node: Node) -> int:
    return node.get_clock().now().nanoseconds


def latency_log_description(output: str) -> str:
    """The description of a node's ``latency_log`` parameter; ``output``: what it publishes per frame."""
    return (f"CSV file of each frame's camera stamp and the time {output} was published ('' = off; read by "
            f"avi-ht bench graph)")


def realtime_priority_param(default: int) -> Any:
    """The ``realtime_priority`` parameter of a node's parameter dataclass (what :func:`run_node`
    applies to the node's process; see :mod:`avi_ht_ros.common.realtime`)."""
    return param(default, "SCHED_FIFO priority of the node's process, all threads (0 = normal scheduling; not "
                 "permitted: a warning, normal scheduling; README 'Real-time scheduling')",
                 range=realtime.PRIORITY_RANGE)


def apply_realtime_priority(nodes: Sequence[Node]) -> realtime.SchedulingOutcome:
    """Give the process the highest ``params.realtime_priority`` of ``nodes`` (logged; a refusal is a
    warning, the nodes run on with normal scheduling); each node keeps the outcome as
    ``scheduling`` for its diagnostics (:func:`scheduling_value`)."""
    priority = max((int(getattr(getattr(node, "params", None), "realtime_priority", 0)) for node in nodes),
                   default=0)
    outcome = realtime.set_process_fifo_priority(priority)
    for node in nodes:
        node.scheduling = outcome
    if outcome.requested and outcome.applied:
        nodes[0].get_logger().info(outcome.describe())
    elif outcome.requested:
        nodes[0].get_logger().warning(outcome.describe())
    return outcome


def scheduling_value(node: Node) -> str:
    """The node's process scheduling for its ``/diagnostics`` (set by :func:`apply_realtime_priority`)."""
    outcome = getattr(node, "scheduling", None)
    return outcome.describe() if outcome is not None else "normal scheduling"


def open_latency_log(path: str) -> LatencyLog | None:
    """The node's :class:`~avi_ht_ros.live_stats.LatencyLog` (parameter ``latency_log``), None when
    the parameter is empty; a file that cannot be written is a :class:`ConfigError`."""
    if not path:
        return None
    try:
        return LatencyLog(path)
    except OSError as exc:
        raise ConfigError("latency_log", f"cannot write {path}: {exc}") from exc


def record_latency(node: Node, log: LatencyLog | None, camera_stamp_ns: int, published_ns: int) -> None:
    """Log one frame's publication; a write error disables the log with one error message."""
    if log is not None:
        error = log.record(camera_stamp_ns, published_ns)
        if error is not None:
            node.get_logger().error(f"latency_log {log.path} disabled after {log.records} frames: {error}")


class RateMeter:
    """Messages per second over a sliding window (for diagnostics)."""

    def __init__(self, window_s: float = 2.0):
        self.window_s = window_s
        self._times: list[float] = []

    def tick(self, t: float | None = None) -> None:
        t = time.monotonic() if t is None else t
        self._times.append(t)
        cutoff = t - self.window_s
        while self._times and self._times[0] < cutoff:
            self._times.pop(0)

    def rate(self, t: float | None = None) -> float:
        t = time.monotonic() if t is None else t
        recent = [x for x in self._times if x >= t - self.window_s]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-9)


def diagnostic_status(name: str, hardware_id: str, level: int, message: str, values: dict[str, Any]) -> Any:
    """A ``diagnostic_msgs/DiagnosticStatus`` (levels: 0 OK, 1 WARN, 2 ERROR, 3 STALE)."""
    return convert.new_message(
        "diagnostic_msgs/msg/DiagnosticStatus", level=int(level), name=name,
        message=message, hardware_id=hardware_id,
        values=[convert.new_message("diagnostic_msgs/msg/KeyValue", key=str(k), value=str(v))
                for k, v in values.items()])


def diagnostic_array(stamp_ns: int, statuses: list[Any]) -> Any:
    return convert.new_message("diagnostic_msgs/msg/DiagnosticArray",
                               header=convert.header_msg(stamp_ns, ""), status=statuses)


class LatestWorker:
    """A worker thread that runs ``handle(*item)`` on the newest offered item, dropping older ones.

    :meth:`offer` never blocks: it replaces an item not yet taken (``replaced`` counts them) and
    wakes the worker. What a keep-last-1 subscription gives a node in its own process, for a
    consumer in the producer's process: a slow ``handle`` skips stale items instead of queueing
    latency, and runs beside the producer's callbacks (code that releases the GIL, e.g. ONNX
    Runtime, runs in parallel with them). An exception escaping ``handle`` is logged with its
    traceback and counted (``errors``); the worker goes on with the next item.

    ``handle_background`` (optional): work to do ahead while nothing is offered — an item given
    to :meth:`offer_background` (the newest only) is handled when no :meth:`offer` item waits;
    an offered item always goes first. The fusion node prepares a frame's vision half this way
    while the synchronizer completes the frame's IMU window.
    """

    def __init__(self, handle: Callable[..., None], logger, name: str = "latest-worker",
                 handle_background: Callable[..., None] | None = None):
        self._handle = handle
        self._handle_background = handle_background
        self._logger = logger
        self._condition = threading.Condition()
        self._item: tuple | None = None
        self._background: tuple | None = None
        self._stopping = False
        self.replaced = 0
        self.handled = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def offer(self, *item) -> None:
        with self._condition:
            if self._item is not None:
                self.replaced += 1
            self._item = item
            self._condition.notify()

    def offer_background(self, *item) -> None:
        if self._handle_background is None:
            raise RuntimeError(f"{self._thread.name}: no background handler")
        with self._condition:
            self._background = item
            self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                while self._item is None and self._background is None and not self._stopping:
                    self._condition.wait()
                if self._stopping:
                    return
                if self._item is not None:
                    handle, item, self._item = self._handle, self._item, None
                else:
                    handle, item, self._background = self._handle_background, self._background, None
            try:
                handle(*item)
            except Exception:  # noqa: BLE001 - the worker must outlive a bad item
                self.errors += 1
                self._logger.error(f"{self._thread.name}: item failed:\n{traceback.format_exc()}",
                                   throttle_duration_sec=2.0)
            if handle is self._handle:
                self.handled += 1

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish the item in hand (if any), drop waiting ones, end the thread."""
        with self._condition:
            self._stopping = True
            self._condition.notify()
        self._thread.join(timeout_s)


EXECUTOR_ENV = "AVI_HT_EXECUTOR"
EXECUTOR_CHOICES = ("events", "single")
# how long one wait of the executor may block before the spin loop checks for shutdown
_SPIN_WAIT_S = 0.1


def events_executor_available() -> bool:
    try:
        from rclpy.experimental import EventsExecutor  # noqa: F401  (rclpy >= 9, Kilted)
    except ImportError:
        return False
    return True


def executor_kind(environ: dict | None = None) -> str:
    """Which executor a single-threaded node spins: ``$AVI_HT_EXECUTOR`` (``events`` or
    ``single``; for A/B runs), else rclpy's C++ events executor where this rclpy has it, else
    the Python single-threaded one. An unknown value is a :class:`ConfigError`; asking for
    ``events`` on an rclpy without it falls back to ``single`` (the nodes behave the same)."""
    requested = (os.environ if environ is None else environ).get(EXECUTOR_ENV, "").strip().lower()
    if requested and requested not in EXECUTOR_CHOICES:
        raise ConfigError(EXECUTOR_ENV, f"{requested!r} is not one of {list(EXECUTOR_CHOICES)}")
    if requested == "single" or not events_executor_available():
        return "single"
    return "events"


def default_executor(context=None) -> Any:
    """The executor :func:`executor_kind` names, for ``context`` (default: rclpy's)."""
    if executor_kind() == "events":
        from rclpy.experimental import EventsExecutor
        return EventsExecutor(context=context)
    from rclpy.executors import SingleThreadedExecutor
    return SingleThreadedExecutor(context=context)


def spin(nodes: Node | Sequence[Node], executor: Any) -> None:
    """Spin ``nodes`` (one node, or the nodes of one process) on ``executor`` until its context
    shuts down, in bounded waits.

    Bounded because rclpy's events executor, which runs the callbacks of timers and
    subscriptions from C++ (CPU measured with ``avi-ht bench graph``: see README), keeps the
    GIL busy in an unbounded ``spin_once()`` (what ``rclpy.spin`` calls), and its ``spin()``
    ran no timer in rclpy 9.1."""
    nodes = [nodes] if isinstance(nodes, Node) else list(nodes)
    for node in nodes:
        executor.add_node(node)
    try:
        while executor.context.ok():
            executor.spin_once(timeout_sec=_SPIN_WAIT_S)
    except ExternalShutdownException:
        pass  # the context shut down during a wait: the normal end
    finally:
        for node in nodes:
            executor.remove_node(node)


def run_node(make_node: Callable[[], Node | Sequence[Node]], args: list[str] | None = None,
             make_executor: Callable[[], Any] | None = None) -> int:
    """``main()`` body shared by every node executable: init, spin, clean shutdown, clear errors.

    ``make_node`` returns the node, or the nodes one process runs (``sync_fusion_node``), all
    spun by one executor. ``make_executor`` (default: :func:`default_executor`, the choice of
    :func:`executor_kind`) is called after ``rclpy.init``. Once the nodes are made, the process
    gets their ``realtime_priority`` (:func:`apply_realtime_priority`).
    """
    # `kill -USR1 <pid>`: every thread's stack to stderr (the node runs on), e.g. to see where a hang is
    faulthandler.register(STACK_DUMP_SIGNAL, all_threads=True)
    rclpy.init(args=args)
    nodes: list[Node] = []
    executor = None
    try:
        made = make_node()
        nodes = [made] if isinstance(made, Node) else list(made)
        # after start-up (model export, warm-up run with normal priority), before the first message
        apply_realtime_priority(nodes)
        executor = make_executor() if make_executor is not None else default_executor()
        spin(nodes, executor)
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    except AviHtError as exc:
        # a node that failed to start has no name yet: name the executable instead
        name = nodes[0].get_name() if nodes else os.path.basename(sys.argv[0] or "avi_ht_ros")
        print(f"[{name}] error: {exc}", file=sys.stderr)
        return 2
    finally:
        if executor is not None:
            executor.shutdown()
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()


__all__ = [
    "declare_parameter_sets", "SENSOR_QOS", "GLOVE_QOS", "RELIABLE_GLOVE_QOS", "RELIABLE_QOS", "RAW_IMAGE_QOS",
    "RAW_CAMERA_QOS", "RAW_GLOVE_QOS", "LATCHED_QOS", "declare_parameters", "publish_serialized", "now_ns",
    "RateMeter", "diagnostic_status", "diagnostic_array", "run_node", "spin", "default_executor", "executor_kind",
    "events_executor_available", "EXECUTOR_ENV", "LatestWorker", "latency_log_description", "open_latency_log",
    "record_latency", "realtime_priority_param", "apply_realtime_priority", "scheduling_value",
]
