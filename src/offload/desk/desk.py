"""The service layer: every verb a front end offers, written once.

The CLI, the MCP server, the HTTP API and an agent task's `submit_task` tool each hold a
`Desk` and only parse arguments and render answers. A desk is scoped to one workspace (the
MCP server's and an agent's: a task of another workspace is reported as not found, as if
it did not exist) or to all (the person's CLI and the dashboard). It reads and changes the
Store, reads output through `TaskOutput`, and wakes — or starts — the supervisor after
every change; it never runs or kills a process. Errors are offload's own (`OffloadError`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cached_property

from offload.config import Settings
from offload.desk.output import TaskOutput, remove_task_files
from offload.errors import InvalidInput, NotFound, OffloadError, PolicyRefused
from offload.logs import Tail
from offload.queue.models import ACTIVE_STATES, FINAL_STATES, PURGEABLE_STATES, State, Task
from offload.queue.store import Stats, Store
from offload.records import mutable_record, replace

TYPE_CHECKING = False  # typing costs ~3 ms of every CLI call; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from offload.submission import Submitter

__all__ = ["MAX_LIST", "MIN_PREFIX", "STATE_FILTERS", "Desk", "check_task_id"]

MAX_LIST = 1000
MAX_IDS = 1000  # task ids one wait names: as many as one batch submits
MIN_PREFIX = 6  # ids are accepted by any unique prefix of 6 or more hex characters
_HEX = "0123456789abcdef"
MAX_RETRY_CHECKED = 100_000  # retry_failed judges every task it would put back
MAX_AGE_SECONDS = 100 * 365 * 86400  # "older than a century" already means every task
FOLLOW_POLL_SECONDS = 0.05  # a person following a live log sees output within 50 ms
STATE_FILTERS: dict[str, frozenset[State]] = {
    **{s.value: frozenset({s}) for s in State},
    "active": ACTIVE_STATES,
    "finished": FINAL_STATES,
}


def check_task_id(task_id: object) -> str:
    """The id or prefix, lower-cased, if it can name a task; the rule every door shares.

    Raises:
        InvalidInput: Not a string.
        NotFound: Not 6 to 32 hex characters.
    """
    if not isinstance(task_id, str):
        raise InvalidInput("a task id must be a string: the id submit returned")
    key = task_id.strip().lower()
    if not MIN_PREFIX <= len(key) <= 32 or key.strip(_HEX):
        raise NotFound(
            f"{task_id[:40]!r} is not a task id: give the id submit returned, or a "
            f"unique prefix of at least {MIN_PREFIX} of its hex characters"
        )
    return key


@mutable_record
class Desk:
    """The queue as one front end sees it.

    Attributes:
        settings: Where the data dir is and what the policy says.
        store: The queue.
        output: Where task output is read from.
        make_submitter: Builds the validator of submissions (policy, paths, limits) for the
            submit workspace; called on the first submit, so reads never compile a policy.
        scope: The workspace this desk is confined to; None for every workspace.
        wake: Wakes the supervisor, starting one when none runs.
        clock_ms: The current time in milliseconds (an input, so tests can pin it).
        sleep: Pauses a blocking wait or follow (an input, so tests need not sleep).
        environ: The front end's environment; tasks submitted here run with its captured
            part (`offload.policies.submitter_env`). None: with the supervisor's.
        note: Told, in one line, when active tasks have nobody to run them and none can
            be started (see `live`).
    """

    settings: Settings
    store: Store
    output: TaskOutput
    make_submitter: Callable[[], Submitter]
    scope: str | None
    wake: Callable[[], object]
    clock_ms: Callable[[], int]
    sleep: Callable[[float], None] = lambda seconds: None
    environ: Mapping[str, str] | None = None
    note: Callable[[str], None] = lambda text: None

    @cached_property
    def submitter(self) -> Submitter:
        """Validates submissions for this desk's workspace (built on first use)."""
        return self.make_submitter()

    @property
    def workspace(self) -> str:
        """The resolved workspace directory tasks submitted here record."""
        return str(self.submitter.workspace)

    def confined_to(self, workspace: str) -> Desk:
        """This desk, seeing only the tasks of `workspace`."""
        return replace(self, scope=workspace)

    # -- reading -----------------------------------------------------------------------
    def live(self, *, thorough: bool = False) -> str | None:
        """Makes sure a live supervisor runs the active tasks, starting one if none does.

        Returns None when they are in hand, else one line saying why they will not move
        (also given to `note`). See `offload.supervisor.liveness.ensure_live`.
        """
        from offload.supervisor.liveness import ensure_live

        text = ensure_live(self.settings, self.store, start=self.wake, thorough=thorough)
        if text:
            self.note(text)
        return text

    def task(self, task_id: str) -> Task:
        """The task with this id or unique prefix, if it is in this desk's scope.

        Raises:
            NotFound: No task in scope matches.
            AmbiguousId: The prefix matches several tasks.
            InvalidInput: `task_id` is not a string.
        """
        key = check_task_id(task_id)
        self.live()
        if self.scope is None:
            return self.store.get(key)
        try:
            task = self.store.get(key)
        except NotFound:
            task = None
        if task is None or task.workspace != self.scope:
            raise NotFound(
                f"no task {task_id[:40]!r} in this workspace; list the tasks to find its id"
            )
        return task

    def tasks(self, task_ids: Sequence[str]) -> list[Task]:
        """The tasks with these ids (each checked as `task`), duplicates dropped, in order."""
        if not task_ids:
            raise InvalidInput("task_ids is empty; give the ids to wait for")
        if len(task_ids) > MAX_IDS:
            raise InvalidInput(f"{len(task_ids)} task ids; the limit is {MAX_IDS} per call")
        found: dict[str, Task] = {}
        for task_id in task_ids:
            task = self.task(task_id)
            found.setdefault(task.id, task)
        return list(found.values())

    def listing(
        self,
        states: str | Iterable[State] | None = None,
        limit: int = 50,
        offset: int = 0,
        *,
        all_workspaces: bool = False,
    ) -> list[Task]:
        """Tasks newest first: in scope unless `all_workspaces`, optionally by state.

        Raises:
            InvalidInput: Unknown state filter, or `all_workspaces` on a confined desk
                while the person has not allowed agents to see other workspaces.
        """
        if (
            all_workspaces
            and self.scope is not None
            and not self.settings.agents_see_all_workspaces
        ):
            raise InvalidInput(
                "all_workspaces is refused: an agent sees only its own workspace's tasks, "
                "since other projects' command lines may hold secrets. Drop all_workspaces, "
                "or have the person set agents_see_all_workspaces = true in config.toml"
            )
        self.live()
        return self.store.list(
            self._states(states),
            limit=max(1, min(limit, MAX_LIST)),
            offset=max(0, offset),
            workspace=None if all_workspaces else self.scope,
        )

    def count(self, states: str | Iterable[State] | None = None) -> int:
        """How many tasks of the whole queue are in these states (all states: every task)."""
        chosen = self._states(states)
        counts = self.store.stats(self.clock_ms(), days=1).counts
        return sum(n for s, n in counts.items() if chosen is None or s in chosen)

    @staticmethod
    def _states(states: str | Iterable[State] | None) -> frozenset[State] | None:
        if states is None:
            return None
        if isinstance(states, str):
            if states not in STATE_FILTERS:
                raise InvalidInput(
                    f"unknown state {states!r}; use one of {', '.join(STATE_FILTERS)}"
                )
            return STATE_FILTERS[states]
        return frozenset(State(s) for s in states)

    def waiting(self, tasks: Sequence[Task]) -> dict[str, str]:
        """By id, why each pending task that no live supervisor can take waits (its labels).

        The rule is `offload.desk.routing`'s; a page without pending labelled tasks costs
        no query.
        """
        if not any(t.run_on and t.state is State.PENDING for t in tasks):
            return {}
        from offload.desk.routing import waiting_notes

        return waiting_notes(tasks, self.settings, self.store)

    def _tell_waiting(self, tasks: Sequence[Task], told: set[str]) -> None:
        """Gives `note` each task's waiting line once, so a follow or wait is not silent."""
        for task_id, text in self.waiting(tasks).items():
            if task_id not in told:
                told.add(task_id)
                self.note(f"task {task_id[:12]} {text}")

    def stats(self) -> Stats:
        """Counts and spending of the whole queue."""
        self.live()
        return self.store.stats(self.clock_ms())

    def tail(self, task: Task, lines: int, max_bytes: int) -> Tail:
        """The last `lines` lines (at most `max_bytes`) of the task's output."""
        return self.output.tail(task, lines, max_bytes)

    def read_output(self, task: Task, offset: int, max_bytes: int = 65_536) -> tuple[bytes, int]:
        """Output from byte `offset` on, and the offset to read from next."""
        return self.output.read(task, offset, max_bytes)

    def follow(self, task: Task, offset: int = 0) -> Iterator[bytes]:
        """Yields the task's output from `offset` on as it is written, until it is final.

        Raises:
            Stalled: The task cannot move (its supervisor is stopped, none can start).
        """
        from offload.collector import resume
        from offload.desk.waits import LIVENESS_EVERY_SECONDS, Stalled

        resume()
        polls = max(1, int(LIVENESS_EVERY_SECONDS / FOLLOW_POLL_SECONDS))
        told: set[str] = set()
        for poll in itertools.count():
            if poll % polls == 0 and (text := self.live(thorough=True)):
                raise Stalled(text)
            current = self.store.get(task.id)
            if poll % polls == 0:
                self._tell_waiting([current], told)
            data, offset = self.output.read(current, offset)
            while data:
                yield data
                data, offset = self.output.read(current, offset)
            if current.is_final:
                return
            self.sleep(FOLLOW_POLL_SECONDS)

    def turns(self, task: Task, result_chars: int | None = None) -> list[dict[str, Any]]:
        """An agent task's turns, oldest first; an empty list for other task types."""
        if task.type != "agent":
            return []
        from offload.workers.agent.transcript import load_turns

        if result_chars is None:
            return load_turns(task, self.settings)
        return load_turns(task, self.settings, result_chars=result_chars)

    def wait(
        self, task_ids: Sequence[str], *, mode: str = "all", timeout_seconds: float | None = None
    ) -> tuple[list[Task], bool]:
        """Blocks until all (or any) of the tasks are final or the timeout passes.

        Returns:
            The tasks as last read, and whether the condition held.
        """
        from offload.desk.waits import wait_for

        ids = [t.id for t in self.tasks(task_ids)]
        told: set[str] = set()

        def liveness() -> str | None:
            self._tell_waiting(self.store.get_many(ids), told)
            return self.live(thorough=True)

        return wait_for(
            self.store, ids, mode=mode, timeout_seconds=timeout_seconds, liveness=liveness
        )

    # -- changing ----------------------------------------------------------------------
    def submit(
        self,
        raws: Sequence[Mapping[str, Any]],
        *,
        entry_word: str = "task {n} of the batch",
        batch: bool = False,
    ) -> list[Task]:
        """Validates and stores submissions all or nothing, then wakes the supervisor.

        Args:
            raws: The fields of each task, as the front end received them.
            entry_word: How a refusal names a batch entry (`{n}` is its number).
            batch: Name the entry in a refusal even when the batch holds one task.

        Raises:
            InvalidInput: A field is wrong; for a batch the message names the entry.
            PolicyRefused: Policy refuses a command, path or variable.
        """
        if not raws:
            raise InvalidInput("the batch is empty; give at least one task")
        from offload.submission import MAX_BATCH

        if len(raws) > MAX_BATCH:
            raise InvalidInput(
                f"the batch has {len(raws)} tasks; the limit is {MAX_BATCH} per call"
            )
        environ = self.environ
        if environ is not None:  # the same for every entry: captured once, shared by all
            from offload.policies.submitter_env import capture_environ

            environ = capture_environ(environ, self.settings.env_allow)
        specs = []
        build, resolve = self.submitter.build, self._resolve_dependency
        for number, raw in enumerate(raws, 1):
            try:
                specs.append(build(raw, resolve, environ, captured=True))
            except OffloadError as exc:
                if batch or len(raws) > 1:
                    raise type(exc)(f"{entry_word.format(n=number)}: {exc}") from None
                raise
        tasks = self.store.submit(specs)
        self.wake()
        return tasks

    def _resolve_dependency(self, task_id: str) -> str:
        return self.task(task_id).id

    def cancel(self, task_id: str) -> Task:
        """Cancels a pending task at once, or asks the supervisor to stop a running one.

        Raises:
            NotFound: No such task in scope.
            IllegalTransition: The task has already finished.
        """
        task = self.store.request_cancel(self.task(task_id).id)
        self.wake()
        return task

    def retry(self, task_id: str) -> Task:
        """Puts a failed, timed-out, interrupted or cancelled task back in the queue.

        The command must still pass both the policy stored with the task and the policy
        of this door now: a policy tightened since the first run holds.

        Raises:
            PolicyRefused: Either policy refuses the task now.
        """
        task = self.task(task_id)
        self._recheck([task])
        task = self.store.retry(task.id)
        self.wake()
        return task

    def retry_failed(self) -> list[Task]:
        """Retries every failed, timed-out and interrupted task in scope.

        Raises:
            PolicyRefused: Some of them are refused by a policy now (named; none retried).
        """
        states = (State.FAILED, State.TIMED_OUT, State.INTERRUPTED)
        self._recheck(self.store.list(states, limit=MAX_RETRY_CHECKED, workspace=self.scope))
        tasks = self.store.retry_failed(workspace=self.scope)
        if tasks:
            self.wake()
        return tasks

    def _recheck(self, tasks: Iterable[Task]) -> None:
        from offload.policies.enforce import recheck

        refused = []
        for task in tasks:
            decision = recheck(task, self.submitter.task_policy, data_dir=self.settings.home)
            if not decision.allowed:
                refused.append(f"task {task.id[:12]} is {decision.reason}")
        if refused:
            more = f" (and {len(refused) - 3} more)" if len(refused) > 3 else ""
            raise PolicyRefused(
                "; ".join(refused[:3]) + more + ". Nothing was retried: purge the refused "
                "tasks or change the policy, then retry again"
            )

    def purge(
        self,
        older_than_seconds: float | None = None,
        states: Iterable[State] = PURGEABLE_STATES,
    ) -> list[Task]:
        """Removes finished tasks in scope (by default completed and cancelled) and their files.

        Raises:
            InvalidInput: A negative or non-numeric age.
            IllegalTransition: A state that cannot be purged (pending, running).
        """
        older_ms = None
        if older_than_seconds is not None:
            if not 0 <= older_than_seconds < math.inf:
                raise InvalidInput("older_than must be a number of seconds, zero or more")
            older_ms = int(min(older_than_seconds, MAX_AGE_SECONDS) * 1000)
        purged = self.store.purge(older_than_ms=older_ms, states=states, workspace=self.scope)
        for task in purged:
            remove_task_files(self.settings, task)
        return purged
