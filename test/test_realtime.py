"""Real-time scheduling of a node process (``realtime_priority``), ROS-free.

The scheduling changes run in a child process: the test process itself keeps normal scheduling.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from avi_ht_ros.common import realtime

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_FIFO is Linux scheduling")


def fifo_permitted(priority: int = 30) -> bool:
    """Whether a process of this user may take SCHED_FIFO at ``priority`` (asked of the kernel directly)."""
    code = f"import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param({priority}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


CHILD = textwrap.dedent("""
    import json, os, subprocess, sys, threading
    from avi_ht_ros.common import realtime

    stop = threading.Event()
    before = [threading.Thread(target=stop.wait) for _ in range(3)]
    for thread in before:
        thread.start()
    outcome = realtime.set_process_fifo_priority(int(sys.argv[1]))
    after = threading.Thread(target=stop.wait)   # started once the priority is set: inherits it
    after.start()
    policies = realtime.thread_policies()
    stop.set()
    print(json.dumps({"applied": outcome.applied, "threads": outcome.threads, "error": outcome.error,
                      "describe": outcome.describe(), "policies": list(policies.values())}))
""")


def run_child(priority: int) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, str(priority)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_priority_reaches_every_thread_and_the_threads_started_later():
    data = run_child(7)
    assert len(data["policies"]) == 5  # main + 3 started before + 1 after
    if fifo_permitted(7):
        assert data["applied"] and data["error"] is None
        assert data["threads"] == 4, data  # the ones there when it was set
        assert data["policies"] == [[os.SCHED_FIFO, 7]] * 5, data["policies"]
        assert data["describe"] == "SCHED_FIFO priority 7 on 4 threads"
    else:  # this machine refuses: nothing changed, and the outcome says why
        assert not data["applied"] and "CAP_SYS_NICE" in data["error"]
        assert data["policies"] == [[os.SCHED_OTHER, 0]] * 5, data["policies"]
        assert data["describe"].startswith("normal scheduling: SCHED_FIFO priority 7 not applied")


def test_priority_zero_leaves_the_scheduling_alone():
    data = run_child(0)
    assert not data["applied"] and data["error"] is None and data["threads"] == 0
    assert data["policies"] == [[os.SCHED_OTHER, 0]] * 5
    assert data["describe"] == "normal scheduling (realtime_priority 0)"


@pytest.mark.parametrize("priority", [-1, 99, 1000])
def test_a_priority_outside_the_range_is_an_error(priority):
    with pytest.raises(ValueError, match="outside 0..98"):
        realtime.set_process_fifo_priority(priority)


def test_a_refusal_part_way_puts_the_changed_threads_back(monkeypatch):
    """All or nothing: the kernel refuses the second thread (e.g. a thread of another user's
    capability set) -> the first goes back to normal scheduling and the reason is reported."""
    calls = []

    def sched_setscheduler(tid, policy, param):
        calls.append((tid, policy, param.sched_priority))
        if len([c for c in calls if c[1] == os.SCHED_FIFO]) == 2:
            raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(realtime, "_thread_ids", lambda: {101, 102, 103})
    monkeypatch.setattr(os, "sched_setscheduler", sched_setscheduler)
    outcome = realtime.set_process_fifo_priority(30)
    assert not outcome.applied and outcome.threads == 0
    assert "Operation not permitted" in outcome.error and "ulimit -r" in outcome.error
    assert calls == [(101, os.SCHED_FIFO, 30), (102, os.SCHED_FIFO, 30), (101, os.SCHED_OTHER, 0)]


def test_a_thread_that_ends_meanwhile_is_skipped(monkeypatch):
    changed = []

    def sched_setscheduler(tid, policy, param):
        if tid == 102:
            raise ProcessLookupError(3, "No such process")
        changed.append(tid)

    monkeypatch.setattr(realtime, "_thread_ids", lambda: {101, 102, 103})
    monkeypatch.setattr(os, "sched_setscheduler", sched_setscheduler)
    outcome = realtime.set_process_fifo_priority(30)
    assert outcome.applied and outcome.threads == 2 and changed == [101, 103]
