"""The supervisor's table of running task processes: reaping, finishing and killing.

Everything here is driven by the loop in `daemon.py`, one step at a time, with `now`
passed in; nothing blocks. A finish the Store could not write (a locked or full database)
is kept and retried every second, so no task is left `running` because one write failed;
a finish the Store refused for good (the row was changed outside this supervisor) is
logged once and dropped. Every finish names the supervisor that claimed the task, so on a
shared queue a member that lost its lease is refused (`lease_lost` tells the loop); the
ends of `abandoned` tasks (the queue already marked them interrupted) are not written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offload.errors import IllegalTransition, LeaseLost, NotFound, OffloadError
from offload.queue.models import State, Task
from offload.queue.store import Store
from offload.supervisor import outcome
from offload.supervisor.cgroups import CgroupRoot
from offload.supervisor.pidns import LOG_FAILED, wrapped_status
from offload.supervisor.spawn import why_no_log
from offload.supervisor.tree import TaskTree, adopted_children

__all__ = ["Running", "Tracker"]

UNKILLABLE_GIVE_UP_SECONDS = 10.0
RECORD_RETRY_SECONDS = 1.0
# Leftovers that outlived that much SIGKILL (a process stuck in the kernel, on a dead NFS
# server, say) are swept this often, not on the loop's fast poll for good.
STUCK_SWEEP_SECONDS = 1.0


@dataclass
class Running:
    """One task process the supervisor started and has not finished yet."""

    task: Task
    popen: subprocess.Popen[bytes]
    tree: TaskTree
    log_path: Path
    deadline: float | None
    status: int | None = None  # raw wait status once the main process is reaped
    kill_state: State | None = None
    kill_error: str | None = None
    kill_started: float = 0.0
    killed_hard: bool = False
    progress: tuple[float | None, str | None] = (None, None)
    wrapped: bool = False  # an init or bwrap ran the command (see pidns.wrapped_status)
    log_by_init: bool = False  # the init creates the log (see pidns.init_argv)


class Tracker:
    """Running tasks by main pid, trees still being cleaned up, and finishes to retry."""

    def __init__(self, store: Store, grace_seconds: float, log: Any) -> None:
        self.store = store
        self.grace_seconds = grace_seconds
        self.log = log
        self.running: dict[int, Running] = {}
        self.lingering: list[TaskTree] = []
        self.unrecorded: dict[str, tuple[State, dict[str, Any]]] = {}
        self.freed = False  # a slot opened since the last claim
        self.retry_at = 0.0  # when unrecorded finishes are tried again (monotonic)
        self.on_finish: Any = None  # called with (run, state) just before a finish is written
        self.abandoned: set[str] = set()  # killed for a lost lease: their end is not ours
        self.lease_lost = False  # a write was refused as coming from a fenced member
        self._candidates: list[Any] | None = None
        self._next_stuck_sweep = 0.0
        self._now = 0.0

    # -- bookkeeping ---------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True while something needs the loop's fast poll (a kill or a fresh cleanup)."""
        return any(not self._stuck(tree) for tree in self.lingering) or any(
            r.kill_state or r.status is not None for r in self.running.values()
        )

    def _stuck(self, tree: TaskTree) -> bool:
        since = tree.lingering_since
        return since is not None and self._now - since >= UNKILLABLE_GIVE_UP_SECONDS

    def task_ids(self) -> set[str]:
        """Ids of every task this supervisor still owns (running or not yet recorded)."""
        return {r.task.id for r in self.running.values()} | set(self.unrecorded)

    def candidates(self) -> list[Any]:
        """Adopted orphans that may carry a task's marker (scanned once per loop step)."""
        if self._candidates is None:
            # Always, not only for trees without a cgroup: a root task can leave its cgroup
            # (and, without a PID namespace, re-parent to us with its marker).
            needed = bool(self.running or self.lingering)
            self._candidates = adopted_children(set(self.running)) if needed else []
        return self._candidates

    def record(self, task_id: str, state: State, **kw: Any) -> None:
        """Writes a task's final state, or keeps it to retry if the Store fails."""
        try:
            self.store.finish(task_id, state, **kw)
            self.unrecorded.pop(task_id, None)
        except LeaseLost as exc:  # fenced: the queue holds another outcome; never retried
            self.unrecorded.pop(task_id, None)
            self.lease_lost = True
            self.log.error("finish_refused", task_id=task_id, error=str(exc))
        except (IllegalTransition, NotFound) as exc:  # final: retrying cannot help
            self.unrecorded.pop(task_id, None)
            self.log.error("finish_refused", task_id=task_id, error=str(exc))
        except OffloadError as exc:
            if task_id not in self.unrecorded:
                self.log.error("finish_failed", task_id=task_id, error=str(exc))
            self.unrecorded[task_id] = (state, kw)
            self.retry_at = time.monotonic() + RECORD_RETRY_SECONDS
        self.freed = True

    def step(self, now: float) -> None:
        """Reaps, finishes exited tasks, advances kills and cleans up leftovers."""
        self._candidates = None
        self._reap()
        self._finish_exited()
        self._now = now
        self._advance_kills(now)
        self._sweep_lingering(now)
        if self.unrecorded and time.monotonic() >= self.retry_at:
            for task_id, (state, kw) in list(self.unrecorded.items()):
                self.record(task_id, state, **kw)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            run = self.running.get(pid)
            if run is not None:
                if run.wrapped:
                    status = wrapped_status(status)
                run.status = status
                run.popen.returncode = os.waitstatus_to_exitcode(status)
                run.tree.init_reaped()  # its namespace is gone, its pid (and group id) free

    def _pop(self, pid: int, state: State, *, gone: bool = False, **kw: Any) -> None:
        """Ends the tracking of a task, writes its end; `gone`: its tree is known empty."""
        run = self.running.pop(pid)
        cgroup = run.tree.cgroup
        if cgroup and (gone or not run.tree.alive()) and not CgroupRoot.remove(cgroup):
            # Not the task's tree (that is gone), but put in its cgroup from outside: it
            # ends with the task, as the cgroup does.
            run.tree.signal(signal.SIGKILL, [])
            self.lingering.append(run.tree)
        if run.task.id in self.abandoned:
            self.abandoned.discard(run.task.id)
            self.log.info("end_not_written", task_id=run.task.id, state=state.value)
            return
        if self.on_finish is not None:
            self.on_finish(run, state)
        self.record(run.task.id, state, supervisor_id=run.task.supervisor_id, **kw)
        self.log.info("finished", task_id=run.task.id, state=state.value, **kw)

    # -- natural ends ----------------------------------------------------------------------
    def _finish_exited(self) -> None:
        for pid, run in list(self.running.items()):
            if run.status is None or run.kill_state is not None:
                continue
            gone = not run.tree.alive(self.candidates)
            if not gone:
                run.tree.signal(signal.SIGKILL, self.candidates())  # leftovers of the command
                self.lingering.append(run.tree)
            state, code, sig, error = outcome.from_status(run.status)
            if run.log_by_init and code == LOG_FAILED and not run.log_path.is_file():
                error = why_no_log(run.log_path)
            elif state is not State.COMPLETED and run.task.type != "shell":
                error = self._worker_error(run.task.id) or error
            self._pop(pid, state, gone=gone, exit_code=code, signal=sig, error=error)

    def _worker_error(self, task_id: str) -> str | None:
        try:
            found = self.store.get_many([task_id])
        except OffloadError:
            return None
        return found[0].error if found else None

    # -- kills ------------------------------------------------------------------------------
    def start_kill(self, run: Running, state: State, error: str, now: float) -> None:
        """SIGTERMs a task's tree; the loop escalates and finishes it as `state`."""
        if run.kill_state is not None or run.status is not None:
            return  # already being killed, or it exited first: its own outcome stands
        run.kill_state, run.kill_error, run.kill_started = state, error, now
        run.tree.signal(signal.SIGTERM, self.candidates())
        self.log.info("killing", task_id=run.task.id, reason=state.value)

    def _advance_kills(self, now: float) -> None:
        for pid, run in list(self.running.items()):
            if run.kill_state is None:
                continue
            if run.status is not None and not run.tree.alive(self.candidates):
                self._pop(pid, run.kill_state, gone=True, error=run.kill_error)
            elif not run.killed_hard and now >= run.kill_started + self.grace_seconds:
                run.killed_hard = True
                run.tree.signal(signal.SIGKILL, self.candidates())
            elif run.killed_hard and now >= (
                run.kill_started + self.grace_seconds + UNKILLABLE_GIVE_UP_SECONDS
            ):
                self.lingering.append(run.tree)
                self._pop(
                    pid, run.kill_state, error=f"{run.kill_error}; some processes survived SIGKILL"
                )

    def _sweep_lingering(self, now: float) -> None:
        stuck_due = now >= self._next_stuck_sweep
        if stuck_due:
            self._next_stuck_sweep = now + STUCK_SWEEP_SECONDS
        keep = []
        for tree in self.lingering:
            if tree.lingering_since is None:
                tree.lingering_since = now
            if self._stuck(tree) and not stuck_due:
                keep.append(tree)
            elif tree.alive(self.candidates) or (tree.cgroup and CgroupRoot.pids(tree.cgroup)):
                tree.signal(signal.SIGKILL, self.candidates())
                keep.append(tree)
            elif tree.cgroup:
                CgroupRoot.remove(tree.cgroup)
        self.lingering = keep
