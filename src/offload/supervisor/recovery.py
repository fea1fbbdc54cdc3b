"""Crash recovery: what a starting supervisor does with tasks a dead one left `running`.

A survivor is any process of the task's tree: its main process (the init of its PID
namespace, where it had one) when pid *and* start time match the record, and everything
descending from it (which, with a namespace, is everything in it, whatever session,
cgroup or environment it chose); anything in its cgroup, carrying its marker, or in its
process group and started after the task did (so a reused group id never points us at a
stranger). All survivors of all tasks get SIGTERM together, one grace period, then
SIGKILL (a namespace init ignores SIGTERM, so it is not waited for: its SIGKILL ends
whatever is left inside); then every task becomes `interrupted` with the reason.

On a queue several hosts share, a starting supervisor looks only at its own host's
earlier members (`recover_host`): other hosts' tasks are theirs, and a live member reaps
a dead host's.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import psutil

from offload.errors import IllegalTransition
from offload.queue.members import Member
from offload.queue.models import State, Task
from offload.queue.shared import SharedQueue
from offload.queue.store import Store
from offload.supervisor.cgroups import CgroupRoot
from offload.supervisor.liveness import process_start
from offload.supervisor.pidns import namespace_of
from offload.supervisor.tree import MARKER, all_processes

__all__ = ["kill_leftovers", "recover_host", "recover_orphans"]

_POLL_SECONDS = 0.02
_CLOCK_SLACK_SECONDS = 1.0  # psutil start times and our wall clock differ by jiffies
_START_TIME_SLACK_SECONDS = 0.05  # the same psutil reading, taken twice


def _in_group(proc: psutil.Process, task: Task) -> bool:
    """In the task's process group and started after the task (a reused pgid is a stranger)."""
    try:
        if task.pgid and os.getpgid(proc.pid) == task.pgid and task.started_at is not None:
            return proc.create_time() >= task.started_at / 1000 - _CLOCK_SLACK_SECONDS
    except (psutil.Error, OSError):
        pass
    return False


def _marker(proc: psutil.Process) -> str | None:
    try:
        return proc.environ().get(MARKER)
    except (psutil.Error, OSError):
        return None


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
            if proc.pid in pids or _in_group(proc, task):
                found[task.id].setdefault(proc.pid, proc)
    for proc in everyone:  # one read of each environment, however many tasks
        marked = found.get(_marker(proc) or "")
        if marked is not None:
            marked.setdefault(proc.pid, proc)
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


def kill_leftovers(
    tasks: list[Task], grace_seconds: float, clock: Callable[[], float] = time.monotonic
) -> dict[str, int]:
    """Kills what is left of the tasks' trees on this machine; returns the count per task."""
    if not tasks:
        return {}
    survivors, inits = _survivors(tasks)
    everyone = [p for procs in survivors.values() for p in procs]
    _signal_all(everyone, signal.SIGTERM)
    waited = [p for p in everyone if p.pid not in inits]
    _, alive = psutil.wait_procs(waited, timeout=grace_seconds) if waited else ([], [])
    _signal_all([*alive, *(p for p in everyone if p.pid in inits)], signal.SIGKILL)
    _empty_cgroups(tasks, clock)
    return {task.id: len(survivors[task.id]) for task in tasks}


def _reason(who: str, killed: int) -> str:
    reason = f"the supervisor ({who}) died while this task ran"
    if killed:
        reason += f"; {killed} leftover process(es) were killed"
    return reason


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
    killed = kill_leftovers(tasks, grace_seconds, clock)
    for task in tasks:
        store.finish(task.id, State.INTERRUPTED, error=_reason(who, killed[task.id]))
        log("recovered_orphan", task_id=task.id, killed=killed[task.id])
    return len(tasks)


def _member_alive(member: Member, now_ms: int, offset_s: float) -> bool:
    """A member of this host still holds its lease and its process (pid + start) runs.

    `offset_s` turns a local process start time into the queue's clock.
    """
    if not member.alive_at(now_ms) or member.pid == os.getpid():
        return False
    start = process_start(member.pid)
    return start is not None and start + offset_s <= member.registered_at / 1000 + 1.0


def recover_host(
    store: Store,
    shared: SharedQueue,
    host: str,
    grace_seconds: float,
    log: Callable[..., None],
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Cleans up after earlier supervisors of this host on a shared queue; returns the count.

    Only members registered under this host's name are looked at, and only those that are
    gone: lost, out of lease, or whose process no longer runs here. Their tasks still
    `running` become interrupted; survivors of those and of the ones a live member already
    marked interrupted are killed. Then the members are retired, so this happens once.
    Tasks of other hosts, and of live supervisors of this host (another data dir), are
    never touched.
    """
    now = shared.now_ms()
    offset_s = now / 1000 - time.time()
    gone = [m for m in store.members() if m.host == host and not _member_alive(m, now, offset_s)]
    if not gone:
        return 0
    pids = {m.id: m.pid for m in gone}
    tasks = shared.tasks_of_members(pids, (State.RUNNING, State.INTERRUPTED))
    killed = kill_leftovers(tasks, grace_seconds, clock)
    for task in tasks:
        if task.state is State.RUNNING:
            who = f"on {host}, pid {pids.get(task.supervisor_id or '', '?')}"
            try:
                store.finish(task.id, State.INTERRUPTED, error=_reason(who, killed[task.id]))
            except IllegalTransition:
                pass  # a live member reaped it a moment ago
        if task.state is State.RUNNING or killed[task.id]:
            log("recovered_orphan", task_id=task.id, killed=killed[task.id])
    for member in gone:
        store.retire_member(member.id)
    return len(tasks)
