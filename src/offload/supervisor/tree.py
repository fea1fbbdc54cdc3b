"""Finding and killing every process of a task's tree.

A tree is: its PID namespace (where it has one: every process in it descends from its
init, and SIGKILL to the init ends them all), its process group, every process in its
cgroup, and every process carrying its `OFFLOAD_TASK_ID` marker (double-forked daemons
re-parented to the supervisor, which is a child subreaper). Pids are signalled only after
their start time is checked, so a reused pid is never hit; the init is the supervisor's
own unreaped child, so its pid cannot be reused while `init_pid` is set.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import psutil

from offload.supervisor.cgroups import CgroupRoot

__all__ = ["TaskTree", "adopted_children", "all_processes"]

MARKER = "OFFLOAD_TASK_ID"


def _has_marker(proc: psutil.Process, task_id: str) -> bool:
    try:
        return proc.environ().get(MARKER) == task_id
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
        return False


class TaskTree:
    """The processes of one task, addressed by pgid, cgroup and marker."""

    def __init__(
        self, task_id: str, pgid: int | None, cgroup: str | None, init_pid: int | None = None
    ) -> None:
        self.task_id = task_id
        self.pgid = pgid
        self.cgroup = cgroup
        self.init_pid = init_pid  # the unreaped init of the task's PID namespace, if any
        self.namespaced = init_pid is not None  # the tree lives in a PID namespace of its own
        self.lingering_since: float | None = None  # when the sweeps of its leftovers began

    def init_reaped(self) -> None:
        """Its namespace's init was reaped: that pid, and the group id it gave, are free.

        Every member of the group died with the namespace, so the id may name a stranger's
        group from now on: a sweep of leftovers must never signal it.
        """
        self.init_pid = None
        if self.namespaced:
            self.pgid = None

    def _signal_group(self, sig: int) -> None:
        if not self.pgid:
            return
        try:
            os.killpg(self.pgid, sig)
        except ProcessLookupError:
            self.pgid = None  # gone for good (see `_group_alive`)
        except PermissionError:
            pass

    def _group_alive(self) -> bool:
        if not self.pgid:
            return False
        try:
            os.killpg(self.pgid, 0)
            return True
        except ProcessLookupError:
            # Empty, and no process can join a group that is gone: from now on the id may
            # name a stranger's new session, which no sweep of ours may signal.
            self.pgid = None
            return False
        except PermissionError:
            return True

    def marked(self, candidates: list[psutil.Process]) -> list[psutil.Process]:
        """The candidates carrying this task's marker."""
        return [p for p in candidates if _has_marker(p, self.task_id)]

    def alive(self, candidates: Callable[[], list[psutil.Process]] = list) -> bool:
        """True while any process of the tree is left (zombies of ours excepted).

        `candidates` is asked for only when the cgroup and the group are empty and no PID
        namespace holds the tree: listing adopted orphans costs more than the other looks.
        """
        if self.namespaced and self.init_pid is None:
            # Its init was reaped, and an init's exit waits until the kernel has ended
            # every other process of its namespace: none of them can be left, in the
            # cgroup, the group or adopted by us (nothing leaves a PID namespace, and a
            # process inside can name no process outside to move into its cgroup).
            return False
        if self.cgroup and CgroupRoot.pids(self.cgroup):
            return True
        return self._group_alive() or bool(self.marked(candidates()))

    def signal(self, sig: int, candidates: list[psutil.Process]) -> None:
        """Sends `sig` to the namespace, the process group, the cgroup and marked processes.

        The init of a PID namespace ignores every signal it has no handler for except
        SIGKILL, so SIGTERM goes to each process in the namespace (they all descend from
        the init, even those that left the session); when the command exits, the init
        exits and the kernel kills the rest.
        """
        if self.init_pid:
            if sig == signal.SIGKILL:
                _signal_pid(self.init_pid, sig)
            else:
                for proc in _descendants(self.init_pid):
                    try:
                        proc.send_signal(sig)
                    except psutil.Error:
                        pass
        self._signal_group(sig)
        if self.cgroup:
            if sig == signal.SIGKILL and CgroupRoot.kill(self.cgroup):
                pass
            else:
                for pid in CgroupRoot.pids(self.cgroup):
                    _signal_pid(pid, sig)
        for proc in self.marked(candidates):
            try:
                proc.send_signal(sig)  # psutil checks the start time first (pid reuse)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _child_pids() -> list[int] | None:
    """This process's children from /proc/self/task/*/children (Linux), without a /proc scan."""
    try:
        pids: list[int] = []
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                pids.extend(int(p) for p in f.read().split())
        return pids
    except (OSError, ValueError):
        return None


def adopted_children(exclude: set[int]) -> list[psutil.Process]:
    """The supervisor's children that are not task main processes: adopted orphans."""
    pids = _child_pids()
    if pids is None:
        try:
            return [p for p in psutil.Process().children() if p.pid not in exclude]
        except psutil.Error:
            return []
    procs = []
    for pid in pids:
        if pid in exclude:
            continue
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            continue
    return procs


def all_processes() -> list[psutil.Process]:
    """Every process on the machine (for recovery, when orphans went to init)."""
    return list(psutil.process_iter())
