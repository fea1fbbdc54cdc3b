"""Crash recovery: what a starting supervisor does with tasks a dead one left `running`.

A survivor is any process of the task's tree: its main process (the init of its PID
namespace, where it had one) when pid *and* start time match the record, and everything
descending from it (which, with a namespace, is everything in it, whatever session,
cgroup or environment it chose); anything in its cgroup, carrying its marker, or in its
process group and started after the task did (so a reused group id never points us at a
stranger). All survivors of all tasks get SIGTERM together, one grace period, then
SIGKILL (a namespace init ignores SIGTERM, so it is not waited for: its SIGKILL ends
whatever is left inside); then every task becomes `interrupted` with the reason.
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
from offload.supervisor.pidns import namespace_of
from offload.supervisor.tree import MARKER, all_processes

__all__ = ["recover_orphans"]

_POLL_SECONDS = 0.02
_CLOCK_SLACK_SECONDS = 1.0  # psutil start times and our wall clock differ by jiffies
_START_TIME_SLACK_SECONDS = 0.05  # the same psutil reading, taken twice


def _belongs(proc: psutil.Process, task: Task) -> bool:
    try:
        if proc.environ().get(MARKER) == task.id:
            return True
        if task.pgid and os.getpgid(proc.pid) == task.pgid and task.started_at is not None:
            return proc.create_time() >= task.started_at / 1000 - _CLOCK_SLACK_SECONDS
    except (psutil.Error, OSError):
        pass
    return False


def _main_process(task: Task) -> psutil.Process | None:
    """The task's recorded main process, if that very process (pid + start time) lives."""
    if not task.pid or task.proc_start is None:
        return None
    try:
        proc = psutil.Process(task.pid)
        if abs(proc.create_time() - task.proc_start) > _START_TIME_SLACK_SECONDS:
            return None  # the pid was reused by a stranger
        return proc
    except psutil.Error:
        return None


def _survivors(tasks: list[Task]) -> tuple[dict[str, list[psutil.Process]], set[int]]:
    """Each task's leftover processes, and the pids of namespace inits among them."""
    found: dict[str, dict[int, psutil.Process]] = {t.id: {} for t in tasks}
    inits: set[int] = set()
    everyone = [p for p in all_processes() if p.pid != os.getpid()]
    ours = namespace_of(os.getpid())
    for task in tasks:
        main = _main_process(task)
        if main is not None:
            found[task.id][main.pid] = main
            if namespace_of(main.pid) != ours:
                inits.add(main.pid)
            for child in _descendants(main):
                found[task.id][child.pid] = child
        pids = set(CgroupRoot.pids(task.cgroup)) if task.cgroup else set()
        for proc in everyone:
            if proc.pid in pids or _belongs(proc, task):
                found[task.id].setdefault(proc.pid, proc)
    return {k: list(v.values()) for k, v in found.items()}, inits


def _descendants(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


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
    survivors, inits = _survivors(tasks)
    everyone = [p for procs in survivors.values() for p in procs]
    _signal_all(everyone, signal.SIGTERM)
    waited = [p for p in everyone if p.pid not in inits]
    _, alive = psutil.wait_procs(waited, timeout=grace_seconds) if waited else ([], [])
    _signal_all([*alive, *(p for p in everyone if p.pid in inits)], signal.SIGKILL)
    _empty_cgroups(tasks, clock)
    for task in tasks:
        killed = len(survivors[task.id])
        reason = f"the supervisor ({who}) died while this task ran"
        if killed:
            reason += f"; {killed} leftover process(es) were killed"
        store.finish(task.id, State.INTERRUPTED, error=reason)
        log("recovered_orphan", task_id=task.id, killed=killed)
    return len(tasks)
