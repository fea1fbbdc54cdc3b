"""The supervisor: the only actor on task processes.

One thread, one loop. It sleeps in `select()` on the wake FIFO and a signal pipe (SIGCHLD,
SIGTERM, SIGINT, SIGUSR1 handlers only set flags), with a ≤ 1 s poll as a safety net.
Each `run_once(now)` reaps exited children, finishes tasks, carries out cancels and
timeouts (TERM → grace → KILL of the whole tree), claims ready tasks and spawns them.

Faults end, they do not loop: the supervisor's database connection gives up on a lock
after a fraction of a second, so a database another process holds never delays a kill
(the kill happens now, the record when the database answers); a full disk or a failing
database is logged once and retried with a pause; SIGTERM is always honoured.
"""

from __future__ import annotations

import os
import selectors
import time
from pathlib import Path

from offload.config import Settings
from offload.errors import OffloadError, SupervisorRunning
from offload.logging import get_logger
from offload.logs import final_progress, progress_of
from offload.policies.limits import Limits, inheritable_soft_limits
from offload.policies.submitter_env import task_base_env
from offload.queue.models import State, Task, new_task_id
from offload.queue.store import Store
from offload.supervisor.cgroups import CgroupRoot
from offload.supervisor.containment import Containment, find_containment
from offload.supervisor.liveness import heartbeat_state
from offload.supervisor.recovery import recover_orphans
from offload.supervisor.signals import Flags, SignalPipe, become_subreaper
from offload.supervisor.spawn import SpawnError, shell_base_env, spawn_task
from offload.supervisor.tracker import Running, Tracker
from offload.supervisor.tree import TaskTree, proc_start_time
from offload.supervisor.wake import SupervisorLock, WakeFifo

__all__ = ["Supervisor"]

PROGRESS_INTERVAL_SECONDS = 1.0
HEARTBEAT_INTERVAL_SECONDS = 5.0
KILL_POLL_SECONDS = 0.01
ERROR_BACKOFF_SECONDS = 0.5
DETACHED_LOCK_WAIT_SECONDS = 10.0
# How long one database write may wait on another process's lock: short, so the loop gets
# back to its deadlines and kills; a write that gives up is retried on a later pass.
STORE_BUSY_TIMEOUT_SECONDS = 0.1


class Supervisor:
    """Runs the tasks of one data directory. Use `run()`, or `start()` + `run_once()`."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        detached: bool = False,
        keys: dict[str, str] | None = None,
    ) -> None:
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
        self.flags = Flags()
        self.tracker = Tracker(store, settings.grace_seconds, self.log)
        self._lock = SupervisorLock(settings.home)
        self._fifo: WakeFifo | None = None
        self._signals: SignalPipe | None = None
        self._cgroups: CgroupRoot | None = None
        self._containment: Containment | None = None
        self._keys = keys or {}  # provider keys, handed to LLM/agent workers over a pipe
        self._selector = selectors.DefaultSelector()
        self._claim_needed = True
        self._drain_logged = False
        # The allow-listed part of our own environment, filtered once: every shell task
        # starts from it (then its own env and the marker go on top).
        self._shell_env = shell_base_env(os.environ, settings.env_allow)
        self.tracker.on_finish = self._on_finish
        self._cut: set[str] = set()  # tasks stopped for passing max_output_bytes
        self._store_down = ""  # the last database error, logged once until it clears
        self._store_retry_at = 0.0
        self._next_progress = 0.0
        self._next_progress_write = 0.0
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
        self._lock.acquire(DETACHED_LOCK_WAIT_SECONDS if self.detached else 0.0)
        try:
            self._refuse_if_other_alive()
        except SupervisorRunning:
            self._lock.release()
            raise
        subreaper = become_subreaper()
        inheritable_soft_limits(self.limits)
        self._containment = find_containment(self.settings, self.log)
        self._cgroups = self._containment.cgroups
        recovered = recover_orphans(self.store, self.settings.grace_seconds, self.log.info)
        self._signals = SignalPipe(self.flags)
        self._selector.register(self._signals.read_fd, selectors.EVENT_READ)
        self._open_fifo()
        self.store.heartbeat(self.id, os.getpid())
        set_busy_timeout = getattr(self.store, "set_busy_timeout", None)
        if set_busy_timeout is not None:  # from now on, never wait long on a lock
            set_busy_timeout(STORE_BUSY_TIMEOUT_SECONDS)
        self.log.info(
            "started",
            pid=os.getpid(),
            supervisor_id=self.id,
            subreaper=subreaper,
            cgroups=str(self._cgroups.path) if self._cgroups else None,
            pid_namespaces=self._containment.pidns.available,
            sandbox=self._containment.sandbox.available,
            recovered=recovered,
            max_concurrent=self.settings.max_concurrent,
        )

    def _refuse_if_other_alive(self) -> None:
        """Raises SupervisorRunning when the last heartbeat's supervisor still lives.

        The lock file proves nothing once deleted: a supervisor started after that would
        otherwise mark a live one's running tasks interrupted.
        """
        other = heartbeat_state(self.store)
        if other.alive and other.pid != os.getpid():
            raise SupervisorRunning(
                f"a supervisor (pid {other.pid}) already runs for {self.settings.home}, "
                "though its lock file was removed; `offload supervisor stop` stops it"
            )

    def _open_fifo(self) -> None:
        self._fifo = WakeFifo(self.settings.home)
        self._selector.register(self._fifo.fd, selectors.EVENT_READ)

    def _close_fifo(self) -> None:
        if self._fifo is not None:
            self._selector.unregister(self._fifo.fd)
            self._fifo.close()
            self._fifo = None

    def run(self) -> int:
        """Starts, loops until stopped (or idle, when detached), cleans up; returns 0."""
        self.start()
        try:
            while not self.finished():
                self.wait(self._timeout(time.monotonic()))
                try:
                    self.run_once(time.monotonic())
                except OffloadError as exc:  # a locked, full or failing database
                    self._store_failed(exc)
                except Exception:  # the loop must outlive a failing disk or database
                    self.log.exception("loop_error")
                    self._claim_needed = True
                    self._store_retry_at = time.monotonic() + ERROR_BACKOFF_SECONDS
        finally:
            self.close()
        return 0

    def _store_failed(self, exc: OffloadError) -> None:
        """Notes a database failure: logged once per distinct error, retried after a pause."""
        if str(exc) != self._store_down:
            self._store_down = str(exc)
            self.log.error("store_unavailable", error=str(exc))
        self._claim_needed = True
        self._store_retry_at = time.monotonic() + ERROR_BACKOFF_SECONDS

    def _store_answered(self) -> None:
        if self._store_down:
            self._store_down = ""
            self.log.info("store_available")

    def close(self) -> None:
        """Releases the FIFO, the signal pipe and the lock."""
        self._close_fifo()
        for tree in self.tracker.lingering:
            if tree.cgroup:
                CgroupRoot.remove(tree.cgroup)
        if self._cgroups is not None:
            self._cgroups.remove_root()
        if self._containment is not None:
            self._containment.close()
        if self._signals is not None:
            self._signals.close()
            self._signals = None
        self._selector.close()
        self._lock.release()
        self.log.info("stopped", pid=os.getpid())

    def finished(self) -> bool:
        """True when the loop should end: stopped or drained with nothing left running."""
        if self.tracker.running:
            return False
        if self.flags.stop:
            if self.tracker.unrecorded:  # still `running` in the Store: the next start
                self.log.error("unrecorded_at_exit", tasks=sorted(self.tracker.unrecorded))
            return True  # ...marks them interrupted; SIGTERM is always honoured
        if self.tracker.unrecorded:
            return False
        if self.flags.drain:
            return True
        if not self.detached or self.settings.idle_exit_seconds <= 0:
            return False
        idle = time.monotonic() - self._last_busy
        if idle < self.settings.idle_exit_seconds:
            return False
        # Close the FIFO first: from now on a front end starts a new supervisor (which
        # waits for our lock). Only then look for work, so no submission falls between.
        self._close_fifo()
        try:
            pending = bool(self.store.list([State.PENDING], limit=1))
        except OffloadError:
            pending = True  # cannot tell: stay, and look again later
        if pending:
            self._open_fifo()
            self._last_busy = time.monotonic()
            self._claim_needed = True
            return False
        self.log.info("idle_exit", idle_seconds=round(idle))
        return True

    def wait(self, timeout: float) -> None:
        """Sleeps until poked, signalled or `timeout` seconds pass."""
        for key, _ in self._selector.select(timeout):
            if self._fifo is not None and key.fd == self._fifo.fd:
                self._fifo.drain()
                self._claim_needed = True
            elif self._signals is not None:
                self._signals.drain()

    def _timeout(self, now: float) -> float:
        if self.tracker.busy or self.flags.stop:
            return KILL_POLL_SECONDS
        running = self.tracker.running.values()
        deadlines = [r.deadline for r in running if r.deadline is not None]
        if self.tracker.unrecorded:
            deadlines.append(self.tracker.retry_at)
        if self._store_down:
            deadlines.append(self._store_retry_at)
        nearest = min([self.settings.poll_seconds, *(d - now for d in deadlines)])
        if running:
            nearest = min(nearest, self._next_progress - now)
        return max(0.0, nearest)

    # -- one step ------------------------------------------------------------------------
    def run_once(self, now: float) -> None:
        """One pass of the loop; a test may call it directly with its own `now`.

        Kills come first and need no database: timeouts, the stop flag and the output cap
        act on processes at once; what needs the database follows, and is skipped for a
        short pause after the database failed.
        """
        if self.flags.stop:
            self._interrupt_all(now)
        self._handle_timeouts(now)
        if now >= self._next_progress:
            self._next_progress = now + PROGRESS_INTERVAL_SECONDS
            self._enforce_output_cap(now)
        self.tracker.step(now)
        if self.flags.drain and not self._drain_logged:
            self._drain_logged = True
            self.log.info("draining", running=len(self.tracker.running))
        if self.tracker.running:
            self._last_busy = now
        if self._store_down and time.monotonic() < self._store_retry_at:
            return
        if self.tracker.running:
            self._handle_cancels(now)
        if not (self.flags.stop or self.flags.drain):
            self._claim_and_spawn(now)
        if now >= self._next_progress_write:
            self._next_progress_write = now + PROGRESS_INTERVAL_SECONDS
            self._update_progress()
            self._claim_needed = True  # the safety-net poll
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + HEARTBEAT_INTERVAL_SECONDS
            self.store.heartbeat(self.id, os.getpid())
            self._adopt_lost(now)
            self._check_own_rows(now)
            self._restore_paths()
        self._store_answered()

    def _handle_cancels(self, now: float) -> None:
        by_id = {r.task.id: r for r in self.tracker.running.values()}
        for task in self.store.cancel_requests():
            run = by_id.get(task.id)
            if run is not None:
                self.tracker.start_kill(run, State.CANCELLED, "cancelled while running", now)

    def _handle_timeouts(self, now: float) -> None:
        for run in self.tracker.running.values():
            if run.deadline is not None and now >= run.deadline:
                error = f"timed out after {run.task.timeout_seconds:g} s"
                self.tracker.start_kill(run, State.TIMED_OUT, error, now)

    def _enforce_output_cap(self, now: float) -> None:
        """Stops a task whose log passed `max_output_bytes`; its log is cut there, with a note."""
        cap = self.settings.max_output_bytes
        if not cap:
            return
        for run in self.tracker.running.values():
            if run.kill_state is not None or run.status is not None:
                continue
            try:
                if os.stat(run.log_path).st_size <= cap:
                    continue
                os.truncate(run.log_path, cap)  # frees the disk now; cut again at the end
            except OSError as exc:  # a full disk must not keep the task alive
                self.log.error("output_cap_error", task_id=run.task.id, error=str(exc))
            self._cut.add(run.task.id)
            error = f"its output passed max_output_bytes ({cap} bytes); the log was cut there"
            self.tracker.start_kill(run, State.FAILED, error, now)

    def _check_own_rows(self, now: float) -> None:
        """Kills the trees of tasks whose rows were changed outside this supervisor.

        Someone marked them final (or another supervisor took them): their finish will be
        refused, so their processes must not run on unmanaged.
        """
        mine = {r.task.id: r for r in self.tracker.running.values() if r.kill_state is None}
        if not mine:
            return
        for task in self.store.get_many(list(mine)):
            if task.state is not State.RUNNING or task.supervisor_id != self.id:
                run = mine[task.id]
                self.log.error("row_changed_outside", task_id=task.id, state=task.state.value)
                error = f"its record was changed outside the supervisor ({task.state.value})"
                self.tracker.start_kill(run, task.state, error, now)

    def _restore_paths(self) -> None:
        """Recreates the wake FIFO and retakes the lock if someone deleted their files."""
        if self._fifo is not None and self._fifo.replaced():
            self.log.error("fifo_restored", path=str(self._fifo.path))
            self._close_fifo()
            self._open_fifo()
        if not self._lock.restore():
            self.log.error("lock_lost", path=str(self._lock.path))

    def _on_finish(self, run: Running, state: State) -> None:
        """Just before a task's end is written: cut an over-long log, record final progress."""
        if run.task.id in self._cut:
            self._cut.discard(run.task.id)
            self._cut_log(run.log_path)
        self._final_progress(run, state)

    def _cut_log(self, path: Path) -> None:
        """Cuts a stopped task's log at the cap and says so at the cut (the tree is dead)."""
        cap = self.settings.max_output_bytes or 0
        note = f"\n[offload: output cut at {cap} bytes (max_output_bytes); the task was stopped]\n"
        try:
            os.truncate(path, cap)
            with open(path, "ab") as log:
                log.write(note.encode())
        except OSError as exc:
            self.log.error("output_cap_error", path=str(path), error=str(exc))

    def _final_progress(self, run: Running, state: State) -> None:
        """Writes a finishing task's last progress marker (of its whole log) before its end.

        A completed task that showed progress ends at 100%.
        """
        try:
            found = final_progress(run.log_path)
        except OSError:
            return
        if found is None:
            return
        fraction = 1.0 if state is State.COMPLETED else found.fraction
        value = (fraction, found.message)
        if value == run.progress:
            return
        try:
            self.store.set_progress(run.task.id, *value)
        except OffloadError as exc:
            self.log.error("progress_failed", task_id=run.task.id, error=str(exc))

    def _interrupt_all(self, now: float) -> None:
        error = "the supervisor was stopped while it ran"
        for run in self.tracker.running.values():
            self.tracker.start_kill(run, State.INTERRUPTED, error, now)

    def _adopt_lost(self, now: float) -> None:
        """Fails tasks this supervisor claimed but holds no process for (a lost spawn)."""
        mine = self.tracker.task_ids()
        for task in self.store.running():
            if task.supervisor_id == self.id and task.id not in mine:
                error = "the supervisor lost track of it before it started; retry it"
                self.tracker.record(task.id, State.FAILED, error=error)

    def _claim_and_spawn(self, now: float) -> None:
        if self.tracker.freed:
            self.tracker.freed = False
            self._claim_needed = True
        free = self.settings.max_concurrent - len(self.tracker.running)
        if free <= 0 or not self._claim_needed:
            return
        self._claim_needed = False
        claimed = self.store.claim(
            free,
            self.id,
            self.settings.groups,
            self.settings.default_group_limit,
            labels=self.settings.labels,
        )
        for task in claimed:
            try:
                self._spawn(task, now)
            except Exception as exc:  # one task's failure must not strand the others
                self.log.exception("spawn_error", task_id=task.id)
                self.tracker.record(task.id, State.FAILED, error=f"could not start: {exc}")

    def _spawn(self, task: Task, now: float) -> None:
        assert self._containment is not None, "start() first"
        base_env = task_base_env(
            task.environ, self._shell_env, unbuffered=self.settings.python_unbuffered
        )
        try:
            spawned = spawn_task(
                task,
                logs_dir=self.settings.logs_dir,
                parent_env=os.environ,
                shell_env=base_env,
                env_allow=(*self.settings.env_allow, *base_env),
                limits=self.limits,
                containment=self._containment,
                keys=self._keys,
            )
        except SpawnError as exc:
            self.log.info("spawn_failed", task_id=task.id, error=str(exc))
            self.tracker.record(task.id, State.FAILED, error=str(exc))
            return
        pid = spawned.popen.pid
        timeout = task.timeout_seconds or self.settings.default_timeout_seconds
        self.tracker.running[pid] = Running(
            task=task,
            popen=spawned.popen,
            tree=TaskTree(task.id, pid, spawned.cgroup, pid if spawned.pid_namespace else None),
            log_path=spawned.log_path,
            deadline=now + timeout if timeout else None,
            wrapped=spawned.wrapped,
        )
        try:
            self.store.mark_started(
                task.id,
                pid=pid,
                pgid=pid,
                proc_start=proc_start_time(pid),
                cgroup=spawned.cgroup,
                log_path=str(spawned.log_path),
                containment=spawned.containment,
            )
        except OffloadError as exc:  # it runs and is tracked; only the record is missing
            self.log.error("mark_started_failed", task_id=task.id, error=str(exc))

    def _update_progress(self) -> None:
        for run in self.tracker.running.values():
            found = progress_of(run.log_path)
            value = (found.fraction, found.message) if found else (None, None)
            if value != run.progress:
                run.progress = value
                try:
                    self.store.set_progress(run.task.id, *value)
                except OffloadError as exc:
                    self.log.error("progress_failed", task_id=run.task.id, error=str(exc))
