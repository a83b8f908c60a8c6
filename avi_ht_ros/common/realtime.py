"""Real-time (``SCHED_FIFO``) scheduling of a node process — what the nodes' ``realtime_priority`` sets.

A node's latency is mostly waiting for a CPU: on a loaded machine a thread woken by a glove
sample or a camera frame waits behind whatever normal-priority work holds the core. With
``SCHED_FIFO`` the node's threads run as soon as they are woken (before any normal thread)
and keep the core until they block; the nodes of this package block between messages, so
they take what they need and leave the rest to the machine (the kernel also caps real-time
threads at ``/proc/sys/kernel/sched_rt_runtime_us`` per second, 95 % by default).
ros2_control's controller manager does the same (``SCHED_FIFO`` 50 where permitted).

:func:`set_process_fifo_priority` gives *every* thread of the calling process the priority —
in Python the threads share one interpreter lock, so a real-time thread waiting for the
lock held by a normal one would wait behind the whole machine — and threads started later
inherit it from the thread that starts them (so would a child process; the nodes start none).

Permission: root, ``CAP_SYS_NICE``, or a real-time priority limit at least the priority
(``ulimit -r``; ``/etc/security/limits.conf``: ``@realtime - rtprio 98``; Docker:
``--cap-add=SYS_NICE`` or ``--ulimit rtprio=98``). Without it nothing changes and the
returned :class:`SchedulingOutcome` says why; the caller logs it and carries on.
Linux only (elsewhere: an outcome with the reason).
"""
from __future__ import annotations

import dataclasses
import os

#: what ``realtime_priority`` accepts: 0 = normal scheduling, 1..98 = SCHED_FIFO priority
#: (99 is left to the kernel's own threads, as is customary)
PRIORITY_RANGE = (0, 98)

_TASKS = "/proc/self/task"


@dataclasses.dataclass(frozen=True)
class SchedulingOutcome:
    requested: int            # the requested SCHED_FIFO priority (0: none requested)
    applied: bool             # every thread of the process has it
    threads: int              # threads changed
    error: str | None = None  # why it was not applied (None: applied, or nothing requested)

    def describe(self) -> str:
        if self.requested == 0:
            return "normal scheduling (realtime_priority 0)"
        if self.applied:
            return f"SCHED_FIFO priority {self.requested} on {self.threads} threads"
        return f"normal scheduling: SCHED_FIFO priority {self.requested} not applied ({self.error})"


def _thread_ids() -> set[int]:
    return {int(name) for name in os.listdir(_TASKS)}


def _rtprio_limit() -> str:
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
    except (ImportError, AttributeError, OSError):
        return "unknown"
    return "unlimited" if soft == resource.RLIM_INFINITY else str(soft)


def set_process_fifo_priority(priority: int) -> SchedulingOutcome:
    """Give every thread of this process ``SCHED_FIFO`` at ``priority`` (0: leave scheduling as it
    is). All or nothing: if a thread cannot be changed, the threads changed so far go back to
    normal scheduling and the outcome names the reason. Never raises for a refused request; a
    priority outside :data:`PRIORITY_RANGE` is a ``ValueError``."""
    priority = int(priority)
    low, high = PRIORITY_RANGE
    if not low <= priority <= high:
        raise ValueError(f"realtime priority {priority} is outside {low}..{high}")
    if priority == 0:
        return SchedulingOutcome(requested=0, applied=False, threads=0)
    if not hasattr(os, "sched_setscheduler") or not os.path.isdir(_TASKS):
        return SchedulingOutcome(priority, False, 0, "SCHED_FIFO is only supported on Linux")
    # (not SCHED_RESET_ON_FORK: it resets threads started later too, not only child processes)
    policy = os.SCHED_FIFO
    changed: list[int] = []
    gone: set[int] = set()
    try:
        # a thread started while a pass runs may inherit from a thread not changed yet: repeat until
        # a pass finds no thread it has not seen
        for _ in range(10):
            pending = sorted(_thread_ids() - set(changed) - gone)
            if not pending:
                break
            for tid in pending:
                try:
                    os.sched_setscheduler(tid, policy, os.sched_param(priority))
                except ProcessLookupError:
                    gone.add(tid)  # the thread ended meanwhile
                    continue
                changed.append(tid)
    except OSError as exc:
        for tid in changed:
            try:
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            except OSError:
                pass
        reason = exc.strerror or str(exc)
        if isinstance(exc, PermissionError):
            reason = (f"{reason}: needs root, CAP_SYS_NICE or a real-time priority limit >= {priority} "
                      f"(ulimit -r: {_rtprio_limit()}); see README 'Real-time scheduling'")
        return SchedulingOutcome(priority, False, 0, reason)
    return SchedulingOutcome(priority, True, len(changed))


def thread_scheduling(tid: int) -> tuple[int, int]:
    """``(policy, priority)`` of a thread — of this process or another (a process id names its main
    thread); a thread that is gone is a ``ProcessLookupError``."""
    return os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority


def thread_policies() -> dict[int, tuple[int, int]]:
    """``{thread id: (policy, priority)}`` of this process's threads."""
    policies = {}
    for tid in sorted(_thread_ids()):
        try:
            policies[tid] = thread_scheduling(tid)
        except ProcessLookupError:
            continue
    return policies


def describe_scheduling(policy: int, priority: int) -> str:
    """``SCHED_FIFO 30``, ``SCHED_OTHER``, ..."""
    names = {getattr(os, name): name for name in ("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH",
                                                   "SCHED_IDLE") if hasattr(os, name)}
    return names.get(policy, f"policy {policy}") + (f" {priority}" if priority else "")
