"""The supervisor: the only actor on task processes.

One thread, one loop. It sleeps in `select()` on the wake FIFO and a signal pipe (SIGCHLD,
SIGTERM, SIGINT, SIGUSR1 handlers only set flags), with a ≤ 1 s poll as a safety net.
Each `run_once(now)` reaps exited children, finishes tasks, carries out cancels and
timeouts (TERM → grace → KILL of the whole tree), claims ready tasks and spawns them.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from offload.config import Settings
from offload.errors import OffloadError
from offload.logging import get_logger
from offload.output import progress_of
from offload.policies.limits import Limits, inheritable_soft_limits
from offload.queue.models import State, Task, new_task_id
from offload.queue.store import Store
from offload.supervisor import outcome
from offload.supervisor.cgroups import CgroupRoot, find_cgroup_root
from offload.supervisor.recovery import recover_orphans
from offload.supervisor.spawn import SpawnError, shell_base_env, spawn_task
from offload.supervisor.tree import TaskTree, adopted_children, proc_start_time
from offload.supervisor.wake import SupervisorLock, WakeFifo

__all__ = ["Supervisor"]

PROGRESS_INTERVAL_SECONDS = 1.0
HEARTBEAT_INTERVAL_SECONDS = 5.0
KILL_POLL_SECONDS = 0.01
UNKILLABLE_GIVE_UP_SECONDS = 10.0
ERROR_BACKOFF_SECONDS = 0.5
_PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> bool:
    """Makes orphaned grandchildren re-parent to us instead of init (Linux only)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


@dataclass
class _Running:
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


@dataclass
class _Flags:
    child: bool = False
    stop: bool = False
    drain: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Supervisor:
    """Runs the tasks of one data directory. Use `run()`, or `start()` + `run_once()`."""

    def __init__(self, settings: Settings, store: Store, *, detached: bool = False) -> None:
        self.settings = settings
        self.store = store
        self.detached = detached
        self.id = new_task_id()[:16]
        self.log = get_logger("supervisor")
        self.limits = Limits(
            address_space_bytes=(settings.max_address_space_mb or 0) * 1024 * 1024 or None,
            cpu_seconds=settings.max_cpu_seconds,
            open_files=settings.max_open_files,
            nice=settings.nice,
        )
        self.flags = _Flags()
        self._running: dict[int, _Running] = {}  # by main pid
        self._lingering: list[TaskTree] = []
        self._lock = SupervisorLock(settings.home)
        self._fifo: WakeFifo | None = None
        self._cgroups: CgroupRoot | None = None
        self._selector = selectors.DefaultSelector()
        self._signal_r, self._signal_w = -1, -1
        self._old_handlers: dict[int, Any] = {}
        self._claim_needed = True
        self._drain_logged = False
        # The allow-listed part of our own environment, filtered once: every shell task
        # starts from it (then its own env and the marker go on top).
        self._shell_env = shell_base_env(os.environ, settings.env_allow)
        self._next_progress = 0.0
        self._next_heartbeat = 0.0
        self._last_busy = time.monotonic()

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> None:
        """Takes the lock, recovers orphans, opens the wake FIFO and installs signal flags.

        Raises:
            SupervisorRunning: when another supervisor holds this data dir.
        """
        home = self.settings.home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.settings.logs_dir.mkdir(mode=0o700, exist_ok=True)
        self._lock.acquire()
        subreaper = _become_subreaper()
        inheritable_soft_limits(self.limits)
        if self.settings.cgroups:
            self._cgroups = find_cgroup_root(home)
        recovered = recover_orphans(self.store, self.settings.grace_seconds, self.log.info)
        self._install_signals()
        self._fifo = WakeFifo(home)
        self._selector.register(self._fifo.fd, selectors.EVENT_READ)
        self.store.heartbeat(self.id, os.getpid())
        self.log.info(
            "started",
            pid=os.getpid(),
            supervisor_id=self.id,
            subreaper=subreaper,
            cgroups=str(self._cgroups.path) if self._cgroups else None,
            recovered=recovered,
            max_concurrent=self.settings.max_concurrent,
        )

    def _install_signals(self) -> None:
        self._signal_r, self._signal_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._signal_w, warn_on_full_buffer=False)
        self._selector.register(self._signal_r, selectors.EVENT_READ)

        def on_child(signum: int, frame: FrameType | None) -> None:
            self.flags.child = True

        def on_stop(signum: int, frame: FrameType | None) -> None:
            self.flags.stop = True

        def on_drain(signum: int, frame: FrameType | None) -> None:
            self.flags.drain = True

        handlers = {
            signal.SIGCHLD: on_child,
            signal.SIGTERM: on_stop,
            signal.SIGINT: on_stop,
            signal.SIGUSR1: on_drain,
        }
        self._old_handlers = {sig: signal.signal(sig, fn) for sig, fn in handlers.items()}

    def run(self) -> int:
        """Starts, loops until stopped (or idle, when detached), cleans up; returns 0."""
        self.start()
        try:
            while not self.finished():
                self.wait(self._timeout(time.monotonic()))
                try:
                    self.run_once(time.monotonic())
                except Exception:  # the loop must outlive a failing disk or database
                    self.log.exception("loop_error")
                    self._claim_needed = True
                    self.wait(ERROR_BACKOFF_SECONDS)
        finally:
            self.close()
        return 0

    def close(self) -> None:
        """Releases the FIFO, the signal pipe and the lock."""
        if self._fifo is not None:
            self._fifo.close()
            self._fifo = None
        for tree in self._lingering:
            if tree.cgroup:
                CgroupRoot.remove(tree.cgroup)
        if self._cgroups is not None:
            self._cgroups.remove_root()
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)
        self._old_handlers = {}
        signal.set_wakeup_fd(-1)
        for fd in (self._signal_r, self._signal_w):
            if fd >= 0:
                os.close(fd)
        self._signal_r = self._signal_w = -1
        self._selector.close()
        self._lock.release()
        self.log.info("stopped", pid=os.getpid())

    def finished(self) -> bool:
        """True when the loop should end: stopped or drained with nothing left running."""
        if (self.flags.stop or self.flags.drain) and not self._running:
            return True
        if self.detached and not self._running and self.settings.idle_exit_seconds > 0:
            idle = time.monotonic() - self._last_busy
            if idle >= self.settings.idle_exit_seconds and not self.store.list(
                [State.PENDING], limit=1
            ):
                self.log.info("idle_exit", idle_seconds=round(idle))
                return True
        return False

    def wait(self, timeout: float) -> None:
        """Sleeps until poked, signalled or `timeout` seconds pass."""
        for key, _ in self._selector.select(timeout):
            if self._fifo is not None and key.fd == self._fifo.fd:
                self._fifo.drain()
                self._claim_needed = True
            else:
                try:
                    while os.read(self._signal_r, 512):
                        pass
                except BlockingIOError:
                    pass

    def _timeout(self, now: float) -> float:
        if any(r.kill_state or r.status is not None for r in self._running.values()):
            return KILL_POLL_SECONDS
        if self._lingering:
            return 0.05
        deadlines = [r.deadline for r in self._running.values() if r.deadline is not None]
        nearest = min([self.settings.poll_seconds, *(d - now for d in deadlines)])
        if self._running:
            nearest = min(nearest, self._next_progress - now)
        return max(0.0, nearest)

    # -- one step ------------------------------------------------------------------------
    def run_once(self, now: float) -> None:
        """One pass of the loop; a test may call it directly with its own `now`."""
        self._reap()
        self._finish_exited(now)
        if self.flags.stop:
            self._interrupt_all(now)
        if self.flags.drain and not self._drain_logged:
            self._drain_logged = True
            self.log.info("draining", running=len(self._running))
        if self._running:
            self._handle_cancels(now)
            self._handle_timeouts(now)
        self._advance_kills(now)
        self._sweep_lingering()
        if not (self.flags.stop or self.flags.drain):
            self._claim_and_spawn(now)
        if now >= self._next_progress:
            self._next_progress = now + PROGRESS_INTERVAL_SECONDS
            self._update_progress()
            self._claim_needed = True  # the safety-net poll
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + HEARTBEAT_INTERVAL_SECONDS
            self.store.heartbeat(self.id, os.getpid())
        if self._running:
            self._last_busy = now

    def _reap(self) -> None:
        self.flags.child = False
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            run = self._running.get(pid)
            if run is not None:
                run.status = status
                run.popen.returncode = os.waitstatus_to_exitcode(status)

    def _candidates(self) -> list[Any]:
        if self._cgroups is not None:
            return []  # the cgroup holds every process of the tree
        return adopted_children(set(self._running))

    def _finish_exited(self, now: float) -> None:
        for pid, run in list(self._running.items()):
            if run.status is None or run.kill_state is not None:
                continue
            candidates = self._candidates()
            if run.tree.alive(candidates):
                run.tree.signal(signal.SIGKILL, candidates)  # leftovers of a finished command
                self._lingering.append(run.tree)
            elif run.tree.cgroup:
                CgroupRoot.remove(run.tree.cgroup)
            state, code, sig, error = outcome.from_status(run.status)
            if state is not State.COMPLETED and run.task.type != "shell":
                error = self._worker_error(run.task.id) or error
            self._finish(pid, state, exit_code=code, signal=sig, error=error)

    def _worker_error(self, task_id: str) -> str | None:
        try:
            return self.store.get_many([task_id])[0].error
        except (IndexError, OffloadError):
            return None

    def _finish(self, pid: int, state: State, **kw: Any) -> None:
        run = self._running.pop(pid)
        try:
            self.store.finish(run.task.id, state, **kw)
        except OffloadError as exc:
            self.log.error("finish_failed", task_id=run.task.id, error=str(exc))
        self.log.info("finished", task_id=run.task.id, state=state.value, **kw)
        self._claim_needed = True

    def _start_kill(self, run: _Running, state: State, error: str, now: float) -> None:
        if run.kill_state is not None or run.status is not None:
            return  # already being killed, or it exited first: its own outcome stands
        run.kill_state, run.kill_error, run.kill_started = state, error, now
        run.tree.signal(signal.SIGTERM, self._candidates())
        self.log.info("killing", task_id=run.task.id, reason=state.value)

    def _handle_cancels(self, now: float) -> None:
        by_id = {r.task.id: r for r in self._running.values()}
        for task in self.store.cancel_requests():
            run = by_id.get(task.id)
            if run is not None:
                self._start_kill(run, State.CANCELLED, "cancelled while running", now)

    def _handle_timeouts(self, now: float) -> None:
        for run in self._running.values():
            if run.deadline is not None and now >= run.deadline:
                error = f"timed out after {run.task.timeout_seconds:g} s"
                self._start_kill(run, State.TIMED_OUT, error, now)

    def _interrupt_all(self, now: float) -> None:
        for run in self._running.values():
            self._start_kill(run, State.INTERRUPTED, "the supervisor was stopped while it ran", now)

    def _advance_kills(self, now: float) -> None:
        for pid, run in list(self._running.items()):
            if run.kill_state is None:
                continue
            candidates = self._candidates()
            if run.status is not None and not run.tree.alive(candidates):
                if run.tree.cgroup:
                    CgroupRoot.remove(run.tree.cgroup)
                self._finish(pid, run.kill_state, error=run.kill_error)
            elif not run.killed_hard and now >= run.kill_started + self.settings.grace_seconds:
                run.killed_hard = True
                run.tree.signal(signal.SIGKILL, candidates)
            elif run.killed_hard and now >= (
                run.kill_started + self.settings.grace_seconds + UNKILLABLE_GIVE_UP_SECONDS
            ):
                error = f"{run.kill_error}; some processes survived SIGKILL"
                self._lingering.append(run.tree)
                self._finish(pid, run.kill_state, error=error)

    def _sweep_lingering(self) -> None:
        if not self._lingering:
            return
        candidates = self._candidates()
        keep = []
        for tree in self._lingering:
            if tree.alive(candidates):
                tree.signal(signal.SIGKILL, candidates)
                keep.append(tree)
            elif tree.cgroup:
                CgroupRoot.remove(tree.cgroup)
        self._lingering = keep

    def _claim_and_spawn(self, now: float) -> None:
        free = self.settings.max_concurrent - len(self._running)
        if free <= 0 or not self._claim_needed:
            return
        self._claim_needed = False
        claimed = self.store.claim(
            free, self.id, self.settings.groups, self.settings.default_group_limit
        )
        for task in claimed:
            self._spawn(task, now)

    def _spawn(self, task: Task, now: float) -> None:
        try:
            spawned = spawn_task(
                task,
                logs_dir=self.settings.logs_dir,
                parent_env=os.environ,
                shell_env=self._shell_env,
                env_allow=self.settings.env_allow,
                limits=self.limits,
                cgroups=self._cgroups,
            )
        except SpawnError as exc:
            self.store.finish(task.id, State.FAILED, error=str(exc))
            self.log.info("spawn_failed", task_id=task.id, error=str(exc))
            self._claim_needed = True
            return
        pid = spawned.popen.pid
        timeout = task.timeout_seconds or self.settings.default_timeout_seconds
        self._running[pid] = _Running(
            task=task,
            popen=spawned.popen,
            tree=TaskTree(task.id, pid, spawned.cgroup),
            log_path=spawned.log_path,
            deadline=now + timeout if timeout else None,
        )
        self.store.mark_started(
            task.id,
            pid=pid,
            pgid=pid,
            proc_start=proc_start_time(pid),
            cgroup=spawned.cgroup,
            log_path=str(spawned.log_path),
        )

    def _update_progress(self) -> None:
        for run in self._running.values():
            found = progress_of(run.log_path)
            value = (found.fraction, found.message) if found else (None, None)
            if value != run.progress:
                run.progress = value
                self.store.set_progress(run.task.id, *value)
