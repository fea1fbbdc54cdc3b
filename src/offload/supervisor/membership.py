"""The supervisor as a member of a queue several hosts share: its lease, reaping, fencing.

A supervisor on a shared queue registers as a member (id, host, pid, labels, capacity) and
renews its lease every third of it. Each pass it also reaps: any member whose lease ran
out (a host that died, hung or lost the network) is marked lost by whichever live member
looks first, and its running tasks `interrupted` ("host H stopped renewing its lease at
T"), in one transaction.

Fencing is the other side of the same lease. A member that finds its own lease lost, by a
refused renewal, by a refused write (`LeaseLost`), or by its own clock saying the lease ran
out while it could not reach the queue, kills its task trees at once (TERM, grace, KILL:
the whole tree, as a cancel does) and writes nothing more about them: another member has
marked them, or will mark them, interrupted, and the queue refuses the writes anyway. Then
it registers again under a new id and goes on.
"""

from __future__ import annotations

import math
import os
import socket
from typing import Any

from offload.config import Settings
from offload.errors import OffloadError
from offload.queue.models import State, new_task_id
from offload.queue.shared import SharedQueue
from offload.queue.store import Store
from offload.supervisor.tracker import Tracker

__all__ = ["REAP_INTERVAL_SECONDS", "Membership", "host_name"]

RENEWS_PER_LEASE = 3
REAP_INTERVAL_SECONDS = 1.0


def host_name(settings: Settings) -> str:
    """The name this host's supervisor registers under."""
    return settings.host_name or socket.gethostname()


class Membership:
    """This supervisor's membership of a shared queue; driven by the loop with `now`."""

    def __init__(
        self, store: Store, shared: SharedQueue, settings: Settings, tracker: Tracker, log: Any
    ) -> None:
        self.store = store
        self.shared = shared
        self.tracker = tracker
        self.log = log
        self.host = host_name(settings)
        self.lease_seconds = settings.lease_seconds
        self.labels = settings.labels
        self.capacity = settings.max_concurrent
        self.id: str | None = None  # None until registered, and again once fenced
        self.fenced = 0  # how many times this supervisor lost its lease
        self._renewed = 0.0  # the pass (monotonic) in which the lease was last taken
        self._next_renew = 0.0
        self._next_reap = 0.0

    @property
    def renew_interval(self) -> float:
        return self.lease_seconds / RENEWS_PER_LEASE

    def next_due(self) -> float:
        """The monotonic time of the next renewal or reaping (for the loop's sleep)."""
        if self.id is None:
            return math.inf  # joining waits for the next pass
        return min(self._next_renew, self._next_reap, self._renewed + self.lease_seconds)

    # -- the loop's two calls --------------------------------------------------------------
    def check_clock(self, now: float) -> None:
        """Fences at once, without the queue, when the lease ran out by our own clock.

        A host cut off from the queue cannot hear that it was reaped; its own clock says
        so. `now` is the pass's start, before any renewal was sent, so this errs early.
        """
        if self.id is not None and now >= self._renewed + self.lease_seconds:
            self.fence(now, f"could not renew its lease within {self.lease_seconds:g} s")

    def step(self, now: float) -> None:
        """Joins (again), renews when due or when a write was refused, and reaps.

        Raises:
            OffloadError: the queue could not be reached; the loop retries after a pause.
        """
        if self.id is None:
            self.join(now)
        elif now >= self._next_renew or self.tracker.lease_lost:
            self.tracker.lease_lost = False
            if not self.store.renew_lease(self.id, self.lease_seconds):
                self.fence(now, "the queue refused to renew its lease")
                self.join(now)
                return
            self._renewed, self._next_renew = now, now + self.renew_interval
        if now >= self._next_reap:
            self._next_reap = now + min(REAP_INTERVAL_SECONDS, self.renew_interval)
            self.reap()

    # -- the parts ---------------------------------------------------------------------------
    def join(self, now: float) -> None:
        """Registers under a new id with a fresh lease."""
        member_id = new_task_id()[:16]
        self.store.register_member(
            member_id,
            host=self.host,
            pid=os.getpid(),
            labels=self.labels,
            capacity=self.capacity,
            lease_seconds=self.lease_seconds,
        )
        self.id = member_id
        self._renewed, self._next_renew = now, now + self.renew_interval
        self.log.info("member_joined", member_id=member_id, host=self.host, labels=self.labels)

    def reap(self) -> None:
        """Marks members whose lease ran out lost, and their running tasks interrupted."""
        reaped = self.store.reap_expired_members(self.shared.now_ms())
        by_error: dict[str, list[str]] = {}
        for task in reaped:
            by_error.setdefault(task.error or "", []).append(task.id)
        for error, ids in by_error.items():
            self.log.info("reaped_lost_member", error=error, interrupted=ids)

    def fence(self, now: float, why: str) -> None:
        """Kills every local task tree and gives up their ends: this member is finished."""
        lost, self.id = self.id, None
        self.fenced += 1
        error = f"the supervisor lost its lease ({why})"
        for run in self.tracker.running.values():
            self.tracker.abandoned.add(run.task.id)
            self.tracker.start_kill(run, State.INTERRUPTED, error, now)
        dropped = sorted(self.tracker.unrecorded)
        self.tracker.unrecorded.clear()  # the queue refuses them now; never retried
        self.tracker.lease_lost = False
        self.log.error(
            "lease_lost",
            member_id=lost,
            why=why,
            killing=sorted(self.tracker.abandoned),
            ends_dropped=dropped,
        )

    def leave(self) -> None:
        """Retires the member on a clean stop (tasks still running become interrupted)."""
        if self.id is None:
            return
        try:
            left = self.store.retire_member(self.id)
        except OffloadError as exc:  # its lease runs out instead, and a live member reaps it
            self.log.error("retire_failed", member_id=self.id, error=str(exc))
            return
        self.log.info("member_left", member_id=self.id, interrupted=[t.id for t in left])
        self.id = None
