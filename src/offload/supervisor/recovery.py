"""Crash recovery: what a starting supervisor does with tasks a dead one left `running`."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import psutil

from offload.queue.models import State
from offload.queue.store import Store
from offload.supervisor.cgroups import CgroupRoot
from offload.supervisor.tree import MARKER, all_processes

__all__ = ["recover_orphans"]

_POLL_SECONDS = 0.02


def _survivors(task_id: str, cgroup: str | None) -> list[psutil.Process]:
    procs = []
    for proc in all_processes():
        try:
            if proc.environ().get(MARKER) == task_id:
                procs.append(proc)
        except (psutil.Error, OSError):
            continue
    if cgroup:
        for pid in CgroupRoot.pids(cgroup):
            try:
                procs.append(psutil.Process(pid))
            except psutil.Error:
                continue
    return procs


def _kill_survivors(
    task_id: str, cgroup: str | None, grace_seconds: float, clock: Callable[[], float]
) -> int:
    """TERM → grace → KILL every process of the task's tree; returns how many there were."""
    procs = _survivors(task_id, cgroup)
    if not procs:
        return 0
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)  # psutil checks the start time (pid reuse)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_seconds)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    if cgroup:
        CgroupRoot.kill(cgroup)
        deadline = clock() + 2.0
        while CgroupRoot.pids(cgroup) and clock() < deadline:
            time.sleep(_POLL_SECONDS)  # waiting on a condition with a deadline
        CgroupRoot.remove(cgroup)
    return len(procs)


def recover_orphans(
    store: Store,
    grace_seconds: float,
    log: Callable[..., None],
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Kills what is left of every `running` task and marks it interrupted; returns the count."""
    info = store.supervisor_info() or {}
    who = f"pid {info['pid']}" if info.get("pid") else "an earlier supervisor"
    count = 0
    for task in store.running():
        killed = _kill_survivors(task.id, task.cgroup, grace_seconds, clock)
        reason = f"the supervisor ({who}) died while this task ran"
        if killed:
            reason += f"; {killed} leftover process(es) were killed"
        store.finish(task.id, State.INTERRUPTED, error=reason)
        log("recovered_orphan", task_id=task.id, killed=killed)
        count += 1
    return count
