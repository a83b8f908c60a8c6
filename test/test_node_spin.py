"""How every node process spins (``nodes.base.spin``): executor choice and a real spin loop."""
from __future__ import annotations

import pathlib
import threading
import time

import pytest
import rclpy
from std_msgs.msg import String

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.nodes import base


def test_executor_kind_follows_the_environment_and_falls_back():
    available = base.events_executor_available()
    assert base.executor_kind({}) == ("events" if available else "single")
    assert base.executor_kind({base.EXECUTOR_ENV: "single"}) == "single"
    assert base.executor_kind({base.EXECUTOR_ENV: " Events "}) == ("events" if available else "single")
    with pytest.raises(ConfigError, match=base.EXECUTOR_ENV):
        base.executor_kind({base.EXECUTOR_ENV: "multi"})


@pytest.mark.parametrize("kind", ["events", "single"])
def test_spin_runs_timers_and_subscriptions_until_shutdown(kind, monkeypatch):
    """A node spun by ``base.spin`` on ``base.default_executor`` (what ``run_node`` does) fires
    its timer, receives its messages and returns promptly when its context shuts down — with
    either executor."""
    if kind == "events" and not base.events_executor_available():
        pytest.skip("this rclpy has no events executor")
    monkeypatch.setenv(base.EXECUTOR_ENV, kind)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(f"spin_test_{kind}", context=context)
    ticks, received = [], []
    publisher = node.create_publisher(String, "spin_test", 10)

    def tick():
        ticks.append(time.monotonic())
        publisher.publish(String(data=str(len(ticks))))

    node.create_timer(0.01, tick)
    node.create_subscription(String, "spin_test", lambda msg: received.append(msg.data), 10)
    executor = base.default_executor(context)
    spinner = threading.Thread(target=base.spin, args=(node, executor), daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + 10.0
        while len(received) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(ticks) >= 20 and len(received) >= 20
        assert received[:5] == ["1", "2", "3", "4", "5"]
    finally:
        stopped_at = time.monotonic()
        context.shutdown()
        spinner.join(timeout=5.0)
        executor.shutdown()
        node.destroy_node()
    assert not spinner.is_alive()
    assert time.monotonic() - stopped_at < 2.0


@pytest.mark.ros
def test_a_node_process_on_the_default_executor_serves_parameter_services_and_stops_on_sigint(rclpy_context,
                                                                                            tmp_path):
    """The installed sync_node (what ``ros2 run`` starts; spun by ``run_node``) answers the
    parameter services — a valid runtime change is applied, an out-of-range one refused — and
    exits 0 on SIGINT."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    from avi_ht_ros.graph import STACK_DUMP_SIGNAL, GraphProcesses, NodeProcessSpec
    from avi_ht_ros.live_stats import process_scheduling
    from node_harness import Harness
    from test_realtime import fifo_permitted

    spec = NodeProcessSpec("sync_node", "spin_test_sync", "right")
    graph = GraphProcesses([spec], tmp_path).start()
    h = Harness(rclpy_context)
    try:
        client = h.probe.create_client(SetParameters, "/right/spin_test_sync/set_parameters")
        assert h.spin_until(client.service_is_ready, 60.0), "parameter service never came up"

        def set_offset(value: float):
            request = SetParameters.Request(parameters=[Parameter("sync.time_offset_s", value=value).to_parameter_msg()])
            future = client.call_async(request)
            assert h.spin_until(future.done, 10.0)
            return future.result().results[0]

        assert set_offset(0.02).successful
        refused = set_offset(100.0)
        assert not refused.successful and refused.reason

        # realtime_priority (default 30): every thread SCHED_FIFO 30 where this machine permits it
        process = graph.processes[0]
        fifo = fifo_permitted(30)
        policies = {path.name: process_scheduling(int(path.name))
                    for path in pathlib.Path(f"/proc/{process.pid}/task").iterdir()}
        assert len(policies) > 3 and set(policies.values()) == {"SCHED_FIFO 30" if fifo else "SCHED_OTHER"}, policies
        log = next(tmp_path.glob("*.log"))
        expected = ("SCHED_FIFO priority 30 on" if fifo else "normal scheduling: SCHED_FIFO priority 30 not applied")
        assert expected in log.read_text()

        # the stack-dump signal: every thread's stack into the log, and the node serves on
        process.send_signal(STACK_DUMP_SIGNAL)
        assert h.spin_until(lambda: "most recent call first" in log.read_text(), 10.0), log.read_text()[-2000:]
        assert ", line " in log.read_text() and " in spin" in log.read_text() and process.poll() is None
        assert set_offset(0.01).successful
    finally:
        h.close()
        codes = graph.stop()
    assert list(codes.values()) == [0], codes



def test_latest_worker_handles_the_newest_item_skips_overtaken_ones_and_survives_errors():
    """The in-process handoff of sync_fusion_node: a slow consumer never queues stale items."""
    handled, errors = [], []
    gate = threading.Event()

    class Logger:
        def error(self, message, **_):
            errors.append(message)

    def handle(item):
        gate.wait(5.0)
        if item == "bad":
            raise ValueError("bad item")
        handled.append(item)

    worker = base.LatestWorker(handle, Logger())
    try:
        worker.offer(1)
        deadline = time.monotonic() + 5.0
        while worker._item is not None and time.monotonic() < deadline:   # taken: item 1 is in hand
            time.sleep(0.001)
        for item in (2, 3, 4):                                             # 2 and 3 are overtaken
            worker.offer(item)
        gate.set()
        deadline = time.monotonic() + 5.0
        while worker.handled < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert handled == [1, 4] and worker.replaced == 2
        worker.offer("bad")
        deadline = time.monotonic() + 5.0
        while worker.errors < 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        worker.offer(5)      # the worker outlived the failing item
        while 5 not in handled and time.monotonic() < deadline:
            time.sleep(0.001)
        assert handled[-1] == 5 and worker.errors == len(errors) == 1 and "ValueError: bad item" in errors[0]
    finally:
        worker.stop()
    assert not worker._thread.is_alive()
    worker.offer(6)          # after stop: accepted, never handled, no error
    assert handled[-1] == 5
