"""The supervisor: the only actor on task processes.

One loop, in one thread (a second only checkpoints the SQLite log, see
`SqliteDb.checkpoint_aside`). It sleeps in `select()` on the wake FIFO and a signal pipe
(SIGCHLD, SIGTERM, SIGINT, SIGUSR1 handlers only set flags), with a ≤ 1 s poll as a
safety net.
Each `run_once(now)` reaps exited children, finishes tasks, carries out cancels and
timeouts (TERM → grace → KILL of the whole tree), claims ready tasks and spawns them.

On a queue several hosts share (`Store.as_shared()`), the supervisor is also a member with
a lease (`membership.py`: renewing, reaping other members, fencing itself), ships task
output into the queue (`shipping.py`), and its `select()` also waits on the queue's
LISTEN/NOTIFY socket, so a submit or a cancel on any host wakes it at once.

Faults end, they do not loop: the supervisor's database connection gives up on a lock
after a fraction of a second, so a database another process holds never delays a kill
(the kill happens now, the record when the database answers); a full disk or a failing
database is logged once and retried with a pause; SIGTERM is always honoured.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from offload.collector import resume
from offload.config import Settings
from offload.errors import OffloadError, SupervisorRunning
from offload.logging import get_logger
from offload.policies.limits import inheritable_soft_limits, nice_for_tasks
from offload.queue.models import State, new_task_id
from offload.queue.store import Store
from offload.supervisor.cgroups import CgroupRoot
from offload.supervisor.containment import Containment, find_containment
from offload.supervisor.liveness import process_age, refuse_if_other_alive
from offload.supervisor.logwatch import LogWatch
from offload.supervisor.membership import Membership
from offload.supervisor.reconcile import adopt_lost, carry_out_cancels, kill_changed_outside
from offload.supervisor.recovery import recover_host, recover_orphans
from offload.supervisor.shipping import Shipper
from offload.supervisor.signals import Flags, become_subreaper
from offload.supervisor.starting import TaskStarter
from offload.supervisor.tracker import Running, Tracker
from offload.supervisor.wake import SupervisorLock, stop_asked_since
from offload.supervisor.wakeups import Wakeups

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
        self._own_id = new_task_id()[:16]
        self.log = get_logger("supervisor")
        self.flags = Flags()
        self.tracker = Tracker(store, settings.grace_seconds, self.log)
        self.tracker.on_finish = self._before_finish
        self.starter = TaskStarter(settings, store, self.tracker, keys or {}, self.log)
        self.logwatch = LogWatch(store, self.tracker, settings.max_output_bytes, self.log)
        self._shared = store.as_shared()
        self.membership: Membership | None = None
        self.shipper: Shipper | None = None
        if self._shared is not None:
            self.membership = Membership(store, self._shared, settings, self.tracker, self.log)
            self.shipper = Shipper(self._shared, self.tracker, self.log)
        self.wakeups = Wakeups(settings.home, self._shared, self.log)
        self._lock = SupervisorLock(settings.home)
        self._cgroups: CgroupRoot | None = None
        self._containment: Containment | None = None
        self._stop_checkpoints: Callable[[], None] | None = None
        self._claim_needed = True
        # Cancels are looked for when a wake-up may have brought one (a front end's poke
        # here, a notification on a shared queue) and each second, not on every pass:
        # a busy loop passes once a task, and the look cost each one ~27 us.
        self._cancels_due = True
        self._drain_logged = False
        self._store_down = ""  # the last database error, logged once until it clears
        self._store_retry_at = 0.0
        self._next_progress = 0.0
        self._next_progress_write = 0.0
        self._next_heartbeat = 0.0
        self._last_busy = time.monotonic()

    @property
    def id(self) -> str | None:
        """The id tasks are claimed under: the member id on a shared queue (None when fenced)."""
        return self.membership.id if self.membership is not None else self._own_id

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> None:
        """Takes the lock, recovers orphans, opens the wake FIFO and installs signal flags.

        On a shared queue it recovers only this host's leftovers, then joins as a member.

        Raises:
            SupervisorRunning: when another supervisor holds this data dir.
        """
        home = self.settings.home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.settings.logs_dir.mkdir(mode=0o700, exist_ok=True)
        began = time.time()
        waited = self._lock.acquire(DETACHED_LOCK_WAIT_SECONDS if self.detached else 0.0)
        if waited and stop_asked_since(home, began):
            self._lock.release()  # it waited on the one that was stopped: it stops too
            raise SupervisorRunning("a stop was asked for while this supervisor waited")
        try:
            if self.membership is None:  # on a shared queue the heartbeat is anyone's
                refuse_if_other_alive(self.store, home)
        except SupervisorRunning:
            self._lock.release()
            raise
        subreaper = become_subreaper()
        inheritable_soft_limits(self.starter.limits)
        nice = nice_for_tasks(self.starter.limits)  # the loop's, so its tasks are born with it
        self._containment = self.starter.containment = find_containment(self.settings, self.log)
        self._cgroups = self._containment.cgroups
        recovered = self._recover()
        self.wakeups.open(self.flags)
        # A stop that came while this supervisor started found no FIFO to poke: it stops
        # now, by the loop's own way out.
        age = process_age(os.getpid())
        if stop_asked_since(home, began if age is None else time.time() - age):
            self.flags.stop = True
        if self.membership is not None:
            self.membership.join(time.monotonic())
        else:
            self.store.heartbeat(self._own_id, os.getpid())
        set_busy_timeout = getattr(self.store, "set_busy_timeout", None)
        if set_busy_timeout is not None:  # from now on, never wait long on a lock
            set_busy_timeout(STORE_BUSY_TIMEOUT_SECONDS)
        checkpoint_aside = getattr(self.store, "checkpoint_aside", None)
        if checkpoint_aside is not None:  # and never sync the database files in the loop
            self._stop_checkpoints = checkpoint_aside()
        self.log.info(
            "started",
            pid=os.getpid(),
            supervisor_id=self.id,
            host=self.membership.host if self.membership else None,
            subreaper=subreaper,
            cgroups=str(self._cgroups.path) if self._cgroups else None,
            pid_namespaces=self._containment.pidns.available,
            sandbox=self._containment.sandbox.available,
            recovered=recovered,
            max_concurrent=self.settings.max_concurrent,
            nice=nice,
        )

    def _recover(self) -> int:
        """Cleans up after a dead predecessor: this data dir's, or this host's when shared."""
        grace, log = self.settings.grace_seconds, self.log.info
        if self.membership is None or self._shared is None:
            return recover_orphans(self.store, grace, log)
        # From here on a call gives up on an unreachable server in time to act on the lease.
        self._shared.limit_waits(self.membership.renew_interval)
        return recover_host(self.store, self._shared, self.membership.host, grace, log)

    def run(self) -> int:
        """Starts, loops until stopped (or idle, when detached), cleans up; returns 0."""
        self.start()
        resume(collect_first=True)
        try:
            while not self.finished():
                self.wait(self._timeout(time.monotonic()))
                try:
                    self.run_once(time.monotonic())
                except OffloadError as exc:  # a locked, full, failing or unreachable database
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
        """Retires the membership; releases the FIFO, the signal pipe and the lock."""
        if self.membership is not None:
            self.membership.leave()
        for tree in self.tracker.lingering:
            if tree.cgroup:
                CgroupRoot.remove(tree.cgroup)
        if self._cgroups is not None:
            self._cgroups.remove_root()
        if self._containment is not None:
            self._containment.close()
        self.wakeups.close()
        if self._stop_checkpoints is not None:
            self._stop_checkpoints()
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
        self.wakeups.close_fifo()
        try:
            pending = bool(self.store.list([State.PENDING], limit=1))
        except OffloadError:
            pending = True  # cannot tell: stay, and look again later
        if pending:
            self.wakeups.open_fifo()
            self._last_busy = time.monotonic()
            self._claim_needed = True
            return False
        self.log.info("idle_exit", idle_seconds=round(idle))
        return True

    def wait(self, timeout: float) -> None:
        """Sleeps until poked, signalled, notified by the queue or `timeout` seconds pass."""
        woken = self.wakeups.wait(timeout)
        self._claim_needed = self._claim_needed or woken.claim
        self._cancels_due = self._cancels_due or woken.cancel

    def _timeout(self, now: float) -> float:
        if self.tracker.busy or self.flags.stop:
            return KILL_POLL_SECONDS
        running = self.tracker.running.values()
        deadlines = [r.deadline for r in running if r.deadline is not None]
        if self.tracker.unrecorded:
            deadlines.append(self.tracker.retry_at)
        if self._store_down:
            deadlines.append(self._store_retry_at)
        if running:
            deadlines.append(self._next_progress)
            if self.shipper is not None:
                deadlines.append(self.shipper.next_at)
        if self.membership is not None:
            deadlines.append(self.membership.next_due())
        return max(0.0, min([self.settings.poll_seconds, *(d - now for d in deadlines)]))

    # -- one step ------------------------------------------------------------------------
    def run_once(self, now: float) -> None:
        """One pass of the loop; a test may call it directly with its own `now`.

        Kills come first and need no database: timeouts, the stop flag, the output cap and
        a lease run out by our own clock act on processes at once; what needs the database
        follows, and is skipped for a short pause after the database failed.
        """
        if self.flags.stop:
            self._interrupt_all(now)
        if self.membership is not None:
            self.membership.check_clock(now)
        self._handle_timeouts(now)
        if now >= self._next_progress:
            self._next_progress = now + PROGRESS_INTERVAL_SECONDS
            self.logwatch.enforce_cap(now)
        self.tracker.step(now)
        if self.flags.drain and not self._drain_logged:
            self._drain_logged = True
            self.log.info("draining", running=len(self.tracker.running))
        if self.tracker.running:
            self._last_busy = now
        if self._store_down and time.monotonic() < self._store_retry_at:
            return
        self._queue_pass(now)
        self._store_answered()

    def _queue_pass(self, now: float) -> None:
        """The part of a pass that needs the database."""
        if self.membership is not None:
            self.membership.step(now)  # before claiming: a fenced member claims nothing
        if self.tracker.running and self._cancels_due:
            carry_out_cancels(self.store, self.tracker, now)
            self._cancels_due = False  # only once looked at: a failed look is tried again
        if not (self.flags.stop or self.flags.drain):
            self._claim_and_spawn(now)
        if self.shipper is not None and now >= self.shipper.next_at:
            self.shipper.ship_running(now)
        if now >= self._next_progress_write:
            self._next_progress_write = now + PROGRESS_INTERVAL_SECONDS
            self.logwatch.update_progress()
            self._claim_needed = self._cancels_due = True  # the safety-net poll
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + HEARTBEAT_INTERVAL_SECONDS
            if self.membership is None:
                self.store.heartbeat(self._own_id, os.getpid())
            self._adopt_lost(now)
            kill_changed_outside(self.store, self.tracker, self.log, now)
            self.wakeups.restore()
            if not self._lock.restore():
                self.log.error("lock_lost", path=str(self._lock.path))

    def _handle_timeouts(self, now: float) -> None:
        for run in self.tracker.running.values():
            if run.deadline is not None and now >= run.deadline:
                error = f"timed out after {run.task.timeout_seconds:g} s"
                self.tracker.start_kill(run, State.TIMED_OUT, error, now)

    def _before_finish(self, run: Running, state: State) -> None:
        """Just before a task's end is written: its log's last word, here and in the queue."""
        self.logwatch.before_finish(run, state)
        if self.shipper is not None:
            self.shipper.ship_rest(run)

    def _interrupt_all(self, now: float) -> None:
        error = "the supervisor was stopped while it ran"
        for run in self.tracker.running.values():
            self.tracker.start_kill(run, State.INTERRUPTED, error, now)

    def _adopt_lost(self, now: float) -> None:
        adopt_lost(self.store, self.tracker, self.id)

    def _claim_and_spawn(self, now: float) -> None:
        if self.tracker.freed:
            self.tracker.freed = False
            self._claim_needed = True
        free = self.settings.max_concurrent - len(self.tracker.running)
        if free <= 0 or not self._claim_needed or self.id is None:
            return
        self._claim_needed = not self.starter.claim_and_spawn(free, self.id, now)
