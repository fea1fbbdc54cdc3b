"""The Store interface: the single source of truth every front end and the supervisor use.

Only implementations of this interface speak SQL. Method names are verbs of the domain;
arguments and results are offload's own records, so a PostgreSQL implementation can
follow without touching any caller. Every state change is one transaction that names
the states it is allowed from and appends an event to the change feed.
"""

from __future__ import annotations

import builtins
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence

from offload.queue.members import LEASE_SECONDS, Member
from offload.queue.models import PURGEABLE_STATES, Event, State, Task, TaskSpec
from offload.records import field, record

TYPE_CHECKING = False  # typing costs ~3 ms of every CLI call; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from offload.queue.shared import SharedQueue

__all__ = ["DayCost", "HostFigures", "Stats", "Store"]

_EVENT_POLL_SECONDS = 0.05


@record
class DayCost:
    """Tasks finished and USD spent on one UTC day, split by model and task type."""

    day: str
    finished: int
    cost_usd: float
    by_model: dict[str, float] = field(default_factory=dict)
    by_type: dict[str, float] = field(default_factory=dict)


@record
class HostFigures:
    """The tasks one host's supervisors are running and have finished (several hosts).

    `host` is None for tasks whose supervisor has left the queue: a supervisor that
    stops cleanly removes its member record, and with it the link to its host.
    """

    host: str | None
    running: int
    finished: int


@record
class Stats:
    """Counts by state and spending, as `offload stats` and `queue_stats` show them.

    `hosts` is filled only by a Store several hosts share (PostgreSQL), busiest first.
    """

    counts: dict[str, int]
    total: int
    cost_today_usd: float
    cost_total_usd: float
    tokens_in: int
    tokens_out: int
    days: builtins.list[DayCost]
    hosts: builtins.list[HostFigures] = field(default_factory=builtins.list)


class Store(ABC):
    """Durable queue of tasks with an append-only event feed.

    Raises:
        NotFound, AmbiguousId: for ids that match no task or several.
        IllegalTransition: when a task is not in a state the change is allowed from.
        InvalidInput: for submissions that break the queue's rules (unknown dependency).
        StoreError: when the underlying database fails (disk full, corrupt file).
    """

    # -- submitting and reading ------------------------------------------------------
    @abstractmethod
    def submit(self, specs: Sequence[TaskSpec]) -> builtins.list[Task]:
        """Stores validated submissions as pending tasks, all or nothing."""

    @abstractmethod
    def get(self, task_id: str) -> Task:
        """Returns the task with this id or unique prefix (at least 6 hex characters)."""

    @abstractmethod
    def get_many(self, task_ids: Iterable[str]) -> builtins.list[Task]:
        """Returns the tasks with these exact ids (missing ones are skipped)."""

    @abstractmethod
    def list(
        self,
        states: Iterable[State] | None = None,
        *,
        limit: int = 50,
        offset: int = 0,
        workspace: str | None = None,
        parent_id: str | None = None,
    ) -> builtins.list[Task]:
        """Returns tasks newest first, optionally filtered by state, workspace or parent."""

    @abstractmethod
    def stats(self, now_ms: int, days: int = 14) -> Stats:
        """Counts by state and the spending of today and of the last `days` days."""

    # -- the supervisor's side -------------------------------------------------------
    @abstractmethod
    def claim(
        self,
        n: int,
        supervisor_id: str,
        group_limits: Mapping[str, int],
        default_group_limit: int = 1,
        labels: Sequence[str] = (),
    ) -> builtins.list[Task]:
        """Atomically moves up to `n` ready pending tasks to running and returns them.

        Ready means: every dependency completed, the task's group below its limit, and
        every label the task must run on (`run_on`) among the claimer's `labels`.
        Order: priority (1 first), then submission order.
        """

    @abstractmethod
    def mark_started(
        self,
        task_id: str,
        *,
        pid: int,
        pgid: int,
        proc_start: float | None,
        cgroup: str | None,
        log_path: str,
        containment: str | None = None,
        supervisor_id: str | None = None,
    ) -> None:
        """Records the process a running task was spawned as, and what contains it.

        With `supervisor_id` the write is fenced: refused with LeaseLost unless the task is
        still running under that supervisor and its lease holds. So are the other writes
        about a task that take it.
        """

    @abstractmethod
    def finish(
        self,
        task_id: str,
        state: State,
        *,
        exit_code: int | None = None,
        signal: int | None = None,
        error: str | None = None,
        supervisor_id: str | None = None,
    ) -> None:
        """Moves a running task to a final state; fails its pending dependents if not completed.

        It returns nothing: the supervisor writes a task's end and moves on, and building
        the row back into a Task (its policy and environment decoded) cost it a third of
        the write. `get` reads it.
        """

    @abstractmethod
    def running(self) -> builtins.list[Task]:
        """Every task in state running."""

    @abstractmethod
    def cancel_requests(self) -> builtins.list[Task]:
        """Running tasks whose cancel has been asked for and not yet carried out."""

    @abstractmethod
    def set_progress(
        self,
        task_id: str,
        fraction: float | None,
        message: str | None,
        *,
        supervisor_id: str | None = None,
    ) -> None:
        """Stores a running task's latest progress (an event only when it changed)."""

    @abstractmethod
    def record_usage(
        self,
        task_id: str,
        *,
        tokens_in: int,
        tokens_out: int,
        cost_usd: float | None,
        model_used: str,
        tokens_cached: int = 0,
    ) -> None:
        """Adds LLM tokens and cost to a task (cost stays null while every part is unknown).

        `tokens_cached` is the part of `tokens_in` read from a prompt cache.
        """

    @abstractmethod
    def record_result(
        self,
        task_id: str,
        *,
        result: str | None = None,
        files_written: Sequence[str] = (),
        error: str | None = None,
        supervisor_id: str | None = None,
    ) -> None:
        """Stores what a task produced: its text result, the files it wrote, or why it failed.

        A worker process calls this before it exits; the supervisor keeps `error` as the
        task's reason when the worker then exits non-zero.
        """

    @abstractmethod
    def record_event(self, task_id: str, kind: str, **detail: Any) -> None:
        """Appends a task-specific event (e.g. which rules file steered it) to the feed."""

    @abstractmethod
    def heartbeat(self, supervisor_id: str, pid: int) -> None:
        """Records that supervisor `supervisor_id` (process `pid`) is alive now."""

    @abstractmethod
    def supervisor_info(self) -> dict[str, str] | None:
        """The last supervisor's id, pid and heartbeat time, if any ever ran."""

    # -- members and leases (several hosts; see queue/members.py) -------------------
    @abstractmethod
    def register_member(
        self,
        member_id: str,
        *,
        host: str,
        pid: int,
        labels: Sequence[str] = (),
        capacity: int,
        lease_seconds: float = LEASE_SECONDS,
    ) -> Member:
        """Registers a supervisor with a fresh lease (re-registering a live id renews it).

        Raises:
            LeaseLost: when this id was already reaped; a restarted supervisor takes a new id.
        """

    @abstractmethod
    def renew_lease(self, member_id: str, lease_seconds: float = LEASE_SECONDS) -> bool:
        """Extends the member's lease; False when it had already run out or was reaped.

        False means fenced: the caller must kill its task trees, since another member may
        already have marked them interrupted.
        """

    @abstractmethod
    def reap_expired_members(self, now_ms: int) -> builtins.list[Task]:
        """Marks every member whose lease ran out before `now_ms` lost, and its running
        tasks `interrupted`, in one transaction; returns those tasks."""

    @abstractmethod
    def members(self) -> builtins.list[Member]:
        """Every registered member, lost ones included, oldest first."""

    @abstractmethod
    def retire_member(self, member_id: str) -> builtins.list[Task]:
        """Removes a member that stops cleanly; its still-running tasks become interrupted."""

    def as_shared(self) -> SharedQueue | None:
        """This queue's shared side when several hosts may use it, else None.

        A supervisor on a shared queue is a member with a lease: it reaps expired members,
        is fenced when its own lease is lost, and ships task output (queue/shared.py).
        """
        return None

    def wait_for_event(self, cursor: int, timeout: float) -> bool:
        """Blocks until an event after `cursor` exists or `timeout` seconds pass.

        Returns True when there is something to read with `events_since(cursor)`. This
        default polls (fine for one host); PostgreSQL overrides it with LISTEN/NOTIFY.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            if self.last_event_seq() > cursor:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(_EVENT_POLL_SECONDS, left))

    # -- people and agents acting on tasks -------------------------------------------
    @abstractmethod
    def request_cancel(self, task_id: str) -> Task:
        """Cancels a pending task at once, or asks the supervisor to kill a running one."""

    @abstractmethod
    def retry(self, task_id: str) -> Task:
        """Puts a failed, timed-out, interrupted or cancelled task back to pending."""

    @abstractmethod
    def retry_failed(self, workspace: str | None = None) -> builtins.list[Task]:
        """Retries every failed, timed-out and interrupted task (dependencies first).

        A task whose dependency is still failed or cancelled is skipped, not an error.
        """

    @abstractmethod
    def purge(
        self,
        *,
        older_than_ms: int | None = None,
        states: Iterable[State] = PURGEABLE_STATES,
        workspace: str | None = None,
    ) -> builtins.list[Task]:
        """Removes finished tasks (and their logs) that finished before `older_than_ms`."""

    # -- the change feed -------------------------------------------------------------
    @abstractmethod
    def events_since(
        self, cursor: int, *, limit: int = 500, task_ids: Iterable[str] | None = None
    ) -> builtins.list[Event]:
        """Events after `cursor` (an event seq), oldest first."""

    @abstractmethod
    def last_event_seq(self) -> int:
        """The seq of the newest event, or 0: the cursor to start following from now."""

    @abstractmethod
    def close(self) -> None:
        """Releases the connection."""
