"""Crash recovery: what a starting supervisor does with tasks a dead one left `running`.

A survivor is any process of the task's tree: in its cgroup, carrying its marker, or in
its process group and started after the task did (so a reused group id never points us
at a stranger). All survivors of all tasks get SIGTERM together, one grace period, then
SIGKILL; then every task becomes `interrupted` with the reason.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import psutil

from offload.queue.models import State, Task
from offload.queue.store import Store
from offload.supervisor.cgroups import CgroupRoot
from offload.supervisor.tree import MARKER, all_processes

__all__ = ["recover_orphans"]

_POLL_SECONDS = 0.02
_CLOCK_SLACK_SECONDS = 1.0  # psutil start times and our wall clock differ by jiffies


def _belongs(proc: psutil.Process, task: Task) -> bool:
    try:
        if proc.environ().get(MARKER) == task.id:
            return True
        if task.pgid and os.getpgid(proc.pid) == task.pgid and task.started_at is not None:
            return proc.create_time() >= task.started_at / 1000 - _CLOCK_SLACK_SECONDS
    except (psutil.Error, OSError):
        pass
    return False


def _survivors(tasks: list[Task]) -> dict[str, list[psutil.Process]]:
    found: dict[str, list[psutil.Process]] = {t.id: [] for t in tasks}
    everyone = [p for p in all_processes() if p.pid != os.getpid()]
    for task in tasks:
        pids = set(CgroupRoot.pids(task.cgroup)) if task.cgroup else set()
        for proc in everyone:
            if proc.pid in pids or _belongs(proc, task):
                found[task.id].append(proc)
    return found


def _signal_all(procs: list[psutil.Process], sig: int) -> None:
    for proc in procs:
        try:
            proc.send_signal(sig)  # psutil checks the start time first (pid reuse)
        except psutil.Error:
            pass


def _empty_cgroups(tasks: list[Task], clock: Callable[[], float]) -> None:
    for task in tasks:
        if not task.cgroup:
            continue
        CgroupRoot.kill(task.cgroup)
        deadline = clock() + 2.0
        while CgroupRoot.pids(task.cgroup) and clock() < deadline:
            time.sleep(_POLL_SECONDS)  # waiting on a condition with a deadline
        CgroupRoot.remove(task.cgroup)


def recover_orphans(
    store: Store,
    grace_seconds: float,
    log: Callable[..., None],
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Kills what is left of every `running` task and marks it interrupted; returns the count."""
    tasks = store.running()
    if not tasks:
        return 0
    info = store.supervisor_info() or {}
    who = f"pid {info['pid']}" if info.get("pid") else "an earlier supervisor"
    survivors = _survivors(tasks)
    everyone = [p for procs in survivors.values() for p in procs]
    _signal_all(everyone, signal.SIGTERM)
    _, alive = psutil.wait_procs(everyone, timeout=grace_seconds) if everyone else ([], [])
    _signal_all(alive, signal.SIGKILL)
    _empty_cgroups(tasks, clock)
    for task in tasks:
        killed = len(survivors[task.id])
        reason = f"the supervisor ({who}) died while this task ran"
        if killed:
            reason += f"; {killed} leftover process(es) were killed"
        store.finish(task.id, State.INTERRUPTED, error=reason)
        log("recovered_orphan", task_id=task.id, killed=killed)
    return len(tasks)
