"""The queue as one workspace sees it: what every MCP tool does, without the protocol.

A `Desk` reads and writes the Store for one workspace and wakes the supervisor after
every change; it never runs or kills a process. Confinement lives here: a task of another
workspace is reported as not found, as if it did not exist. Errors are offload's own
(`OffloadError`); the tool layer turns them into MCP error results.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offload.config import Settings
from offload.errors import InvalidInput, NotFound, OffloadError
from offload.logs import Tail, read_tail
from offload.queue.models import ACTIVE_STATES, FINAL_STATES, PURGEABLE_STATES, State, Task
from offload.queue.store import Stats, Store
from offload.submission import MAX_BATCH, Submitter

__all__ = ["MAX_LIST", "STATE_FILTERS", "Desk"]

MAX_LIST = 200
MIN_PREFIX = 6  # ARCHITECTURE §3: ids are accepted by any unique prefix of 6 or more
_HEX = "0123456789abcdef"
MAX_AGE_SECONDS = 100 * 365 * 86400  # "older than a century" already means every task
STATE_FILTERS: dict[str, frozenset[State]] = {
    **{s.value: frozenset({s}) for s in State},
    "active": ACTIVE_STATES,
    "finished": FINAL_STATES,
}


@dataclass
class Desk:
    """One workspace's view of the queue.

    Attributes:
        settings: Where the data dir is and what the policy says.
        store: The queue.
        submitter: Validates submissions for this workspace (policy, paths, limits).
        wake: Wakes the supervisor, starting one when none runs.
        clock_ms: The current time in milliseconds (an input, so tests can pin it).
    """

    settings: Settings
    store: Store
    submitter: Submitter
    wake: Callable[[], object]
    clock_ms: Callable[[], int]

    @property
    def workspace(self) -> str:
        """The resolved workspace directory, as tasks record it."""
        return str(self.submitter.workspace)

    # -- reading ---------------------------------------------------------------------
    def task(self, task_id: str) -> Task:
        """The task with this id or unique prefix, if it belongs to this workspace.

        Raises:
            NotFound: No task of this workspace matches.
            AmbiguousId: The prefix matches several tasks.
            InvalidInput: `task_id` is not a string.
        """
        if not isinstance(task_id, str):
            raise InvalidInput("task_id must be a string: the id returned by submit_task")
        key = task_id.strip().lower()
        if len(key) < MIN_PREFIX or key.strip(_HEX):
            raise NotFound(
                f"{task_id[:40]!r} is not a task id: give the id submit_task returned, or a "
                f"unique prefix of {MIN_PREFIX} or more of its hex characters"
            )
        try:
            task = self.store.get(task_id)
        except NotFound:
            task = None
        if task is None or task.workspace != self.workspace:
            raise NotFound(
                f"no task {task_id[:40]!r} in this workspace; list_tasks shows its tasks"
            )
        return task

    def tasks(self, task_ids: Sequence[str]) -> list[Task]:
        """The tasks with these ids (each checked as `task`), duplicates dropped, in order."""
        if not task_ids:
            raise InvalidInput("task_ids is empty; give the ids to wait for")
        if len(task_ids) > MAX_BATCH:
            raise InvalidInput(f"{len(task_ids)} task ids; the limit is {MAX_BATCH} per call")
        found: dict[str, Task] = {}
        for task_id in task_ids:
            task = self.task(task_id)
            found.setdefault(task.id, task)
        return list(found.values())

    def log_path(self, task: Task) -> Path:
        """Where the task's output log is (or will be)."""
        return Path(task.log_path) if task.log_path else self.settings.logs_dir / f"{task.id}.log"

    def tail(self, task: Task, lines: int, max_bytes: int) -> Tail:
        """The last `lines` lines (at most `max_bytes`) of the task's output.

        Raises:
            InvalidInput: A limit is out of range.
        """
        try:
            return read_tail(self.log_path(task), lines=lines, max_bytes=max_bytes)
        except OSError as exc:
            raise InvalidInput(f"cannot read the output of task {task.id[:12]}: {exc}") from exc

    def listing(self, state: str | None, limit: int, all_workspaces: bool) -> list[Task]:
        """Tasks newest first, this workspace's unless `all_workspaces`.

        Raises:
            InvalidInput: Unknown state filter.
        """
        states = None
        if state is not None:
            if state not in STATE_FILTERS:
                raise InvalidInput(
                    f"unknown state {state!r}; use one of {', '.join(STATE_FILTERS)}"
                )
            states = STATE_FILTERS[state]
        workspace = None if all_workspaces else self.workspace
        return self.store.list(states, limit=max(1, min(limit, MAX_LIST)), workspace=workspace)

    def stats(self) -> Stats:
        """Counts and spending of the whole queue."""
        return self.store.stats(self.clock_ms())

    # -- changing --------------------------------------------------------------------
    def submit(self, raws: Sequence[Mapping[str, Any]]) -> list[Task]:
        """Validates and stores submissions all or nothing, then wakes the supervisor.

        Raises:
            InvalidInput: A field is wrong; for a batch the message names the entry.
            PolicyRefused: Policy refuses a command, path or variable.
        """
        if not raws:
            raise InvalidInput("the batch is empty; give at least one task")
        if len(raws) > MAX_BATCH:
            raise InvalidInput(
                f"the batch has {len(raws)} tasks; the limit is {MAX_BATCH} per call"
            )
        specs = []
        for number, raw in enumerate(raws, 1):
            try:
                specs.append(self.submitter.build(raw, self._resolve_dependency))
            except OffloadError as exc:
                if len(raws) > 1:
                    raise type(exc)(f"task {number} of the batch: {exc}") from None
                raise
        tasks = self.store.submit(specs)
        self.wake()
        return tasks

    def _resolve_dependency(self, task_id: str) -> str:
        return self.task(task_id).id

    def cancel(self, task_id: str) -> Task:
        """Cancels a pending task at once, or asks the supervisor to stop a running one.

        Raises:
            NotFound: No such task here.
            IllegalTransition: The task has already finished.
        """
        task = self.store.request_cancel(self.task(task_id).id)
        self.wake()
        return task

    def retry(self, task_id: str) -> Task:
        """Puts a failed, timed-out, interrupted or cancelled task back in the queue."""
        task = self.store.retry(self.task(task_id).id)
        self.wake()
        return task

    def retry_failed(self) -> list[Task]:
        """Retries every failed, timed-out and interrupted task of this workspace."""
        tasks = self.store.retry_failed(workspace=self.workspace)
        if tasks:
            self.wake()
        return tasks

    def purge(self, older_than_seconds: float | None) -> list[Task]:
        """Removes this workspace's completed and cancelled tasks (and their logs).

        Raises:
            InvalidInput: A negative age.
        """
        older_ms = None
        if older_than_seconds is not None:
            if not 0 <= older_than_seconds < math.inf:
                raise InvalidInput("older_than must be a number of seconds, zero or more")
            older_ms = int(min(older_than_seconds, MAX_AGE_SECONDS) * 1000)
        return self.store.purge(
            older_than_ms=older_ms, states=PURGEABLE_STATES, workspace=self.workspace
        )
