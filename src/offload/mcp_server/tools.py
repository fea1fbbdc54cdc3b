"""The eleven MCP tools: thin, typed wrappers around a `Desk`.

Each tool validates its arguments with pydantic (so clients get a JSON schema), calls one
`Desk` method, and answers with a small structured result. Every refusal becomes a
`ToolError` whose text names the cause and the fix: SDK 2.x would hide the text of any
other exception. Descriptions are short on purpose: the whole `tools/list` is read into
the agent's context at every session start.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

import anyio.to_thread
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import Field

from offload.desk import Desk
from offload.desk.waits import MAX_WAIT_SECONDS, wait_tasks
from offload.errors import (
    AmbiguousId,
    ConfigError,
    IllegalTransition,
    InvalidInput,
    NotFound,
    OffloadError,
    PolicyRefused,
    StoreError,
    io_error_text,
)
from offload.logs import MAX_TAIL_BYTES
from offload.mcp_server import views
from offload.mcp_server.published import derived, registrations
from offload.mcp_server.turns import read_turns
from offload.queue.models import TASK_TYPES, State, Task

__all__ = [
    "FINISHED_TAIL_BYTES",
    "FINISHED_TAIL_LINES",
    "OUTPUT_MAX_BYTES",
    "OUTPUT_MAX_LINES",
    "ToolSet",
    "refusal",
]

FINISHED_TAIL_LINES = 20
FINISHED_TAIL_BYTES = 2048
WAIT_TAIL_LINES = 10
WAIT_TAIL_BYTES = 1024
WAIT_TAILS_UP_TO = 5
WAIT_LISTS_UP_TO = 20
OUTPUT_MAX_LINES = 2000
OUTPUT_MAX_BYTES = 65_536
CANCEL_WAIT_MAX_SECONDS = 15.0
MAX_LISTED = 200  # one list_tasks answer; more would flood the agent's context

TaskType = Literal[TASK_TYPES]  # type: ignore[valid-type]
StateFilter = Literal[
    "pending",
    "running",
    "completed",
    "failed",
    "timed_out",
    "cancelled",
    "interrupted",
    "active",
    "finished",
]

_KIND = {
    PolicyRefused: "refused by policy: {}",
    NotFound: "not found: {}",
    AmbiguousId: "ambiguous id: {}",
    IllegalTransition: "not allowed: {}",
    InvalidInput: "invalid argument: {}",
    ConfigError: "offload is misconfigured: {}. Fix: the user must correct it",
    StoreError: "queue database error: {}. Fix: retry; if it persists, tell the user",
}
_CLI_WORDS = (
    ("`offload list`", "list_tasks"),
    ("`offload submit --help`", "the submit_task schema"),
)


def refusal(exc: OffloadError) -> ToolError:
    """The tool error an agent sees for an offload error: cause first, then the fix."""
    text = str(exc)
    for cli, tool in _CLI_WORDS:
        text = text.replace(cli, tool)
    template = next((t for kind, t in _KIND.items() if isinstance(exc, kind)), "{}")
    if isinstance(exc, PolicyRefused) and ("rule" in text or "OFFLOAD_ALLOW" in text):
        text += (
            ". Fix: run a different command; the user sets this policy (OFFLOAD_ALLOW/OFFLOAD_DENY)"
        )
    return ToolError(template.format(text))


@contextmanager
def _refusals() -> Iterator[None]:
    try:
        yield
    except OffloadError as exc:
        raise refusal(exc) from exc
    except OSError as exc:  # a full disk: the cause and the fix, not "Error executing tool"
        raise ToolError(f"{io_error_text(exc)}. Fix: tell the user; retry later") from exc


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


class ToolSet:
    """The tools bound to one `Desk`; `tools()` builds their SDK registrations."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk

    # -- submitting ------------------------------------------------------------------
    def submit_task(
        self,
        command: Annotated[
            str | list[str] | None, Field(description="shell line, or argv list")
        ] = None,
        task_type: TaskType = "shell",
        spec: Annotated[str | None, Field(description="LLM task: what to produce")] = None,
        cwd: str | None = None,
        timeout_seconds: float | None = None,
        priority: Annotated[int, Field(description="1-10, 1 first")] = 5,
        group: Annotated[str | None, Field(description="concurrency pool")] = None,
        depends_on: Annotated[list[str] | None, Field(description="ids to finish first")] = None,
        env: dict[str, str] | None = None,
        name: str | None = None,
        output_path: str | None = None,
        context_files: list[str] | None = None,
        model: str | None = None,
        large_context: bool = False,
        max_turns: int | None = None,
        network: bool | None = None,
        on: Annotated[list[str] | None, Field(description="host labels")] = None,
    ) -> Annotated[CallToolResult, views.TaskRef]:
        """Run a shell command or LLM task in the background; returns its id at once."""
        raw = {
            "type": task_type,
            "command": command,
            "spec": spec,
            "cwd": cwd,
            "timeout_seconds": timeout_seconds,
            "priority": priority,
            "group": group,
            "depends_on": depends_on,
            "env": env,
            "name": name,
            "output_path": output_path,
            "context_files": context_files,
            "model": model,
            "large_context": large_context or None,
            "max_turns": max_turns,
            "network": network,
            "on": on,
        }
        with _refusals():
            task = self.desk.submit([raw])[0]
        return views.answer(views.TaskRef(task_id=task.id, state=task.state.value))

    def submit_batch(
        self,
        tasks: list[dict[str, Any]],
    ) -> Annotated[CallToolResult, views.TaskIds]:
        """Submit a list of submit_task arguments, all or nothing; returns their ids."""
        with _refusals():
            if not isinstance(tasks, list):
                raise InvalidInput("tasks must be a list of objects")
            created = self.desk.submit(tasks)
        return views.answer(views.ids(created))

    # -- reading ---------------------------------------------------------------------
    def get_task(
        self,
        task_id: str,
        turns: Annotated[bool, Field(description="agent: its last turns")] = False,
    ) -> Annotated[CallToolResult, views.TaskInfo]:
        """A task's state, exit code, timings, progress, error; last output lines once done."""
        with _refusals():
            task = self.desk.task(task_id)
            tail = self._finished_tail(task, FINISHED_TAIL_LINES, FINISHED_TAIL_BYTES)
            waiting = self.desk.waiting([task]).get(task.id)
            view = views.info(task, self.desk.clock_ms(), tail, waiting)
            if turns:
                view = self._with_turns(view, task)
            return views.answer(view, "tail")

    def task_output(
        self, task_id: str, tail_lines: int = 100, max_bytes: int = 16384
    ) -> Annotated[CallToolResult, views.TaskOutput]:
        """The end of a task's output so far (capped; says if cut)."""
        with _refusals():
            if tail_lines < 0 or max_bytes < 1:
                raise InvalidInput("tail_lines must be ≥ 0 and max_bytes ≥ 1")
            lines = _clamp(tail_lines, 0, OUTPUT_MAX_LINES)
            limit = _clamp(max_bytes, 1, min(OUTPUT_MAX_BYTES, MAX_TAIL_BYTES))
            task = self.desk.task(task_id)
            tail = self.desk.tail(task, lines, limit)
        view = views.TaskOutput(
            task_id=task.id,
            state=task.state.value,
            text=tail.text,
            lines=tail.lines,
            truncated=tail.truncated,
            size_bytes=tail.size,
        )
        return views.answer(view, "text")

    def list_tasks(
        self, state: StateFilter | None = None, limit: int = 20, all_workspaces: bool = False
    ) -> Annotated[CallToolResult, views.TaskList]:
        """Tasks newest first; this workspace's unless all_workspaces."""
        with _refusals():
            tasks = self.desk.listing(state, min(limit, MAX_LISTED), all_workspaces=all_workspaces)
            waiting = self.desk.waiting(tasks)
        briefs = [views.brief(t, title=True, waiting=waiting.get(t.id)) for t in tasks]
        return views.answer(views.TaskList(tasks=briefs))

    async def wait_for_tasks(
        self,
        task_ids: list[str],
        ctx: Context,
        mode: Literal["all", "any"] = "all",
        timeout_seconds: float = 30,
    ) -> Annotated[CallToolResult, views.WaitResult]:
        """Wait until all/any tasks finish (max 55 s); returns states, exit codes, output tails."""
        with _refusals():
            if not timeout_seconds >= 0:
                raise InvalidInput("timeout_seconds must be 0 or more")
            found = await anyio.to_thread.run_sync(self.desk.tasks, task_ids)
        timeout = min(float(timeout_seconds), MAX_WAIT_SECONDS)
        with _refusals():
            tasks, met = await wait_tasks(
                self.desk.store,
                [t.id for t in found],
                mode=mode,
                timeout_seconds=timeout,
                report=lambda done, total, message: ctx.report_progress(done, total, message),
                liveness=lambda: self.desk.live(thorough=True),
            )
            result = await anyio.to_thread.run_sync(self._waited, met, tasks)
        return views.answer(result)

    def queue_stats(self) -> Annotated[CallToolResult, views.QueueStats]:
        """Task counts by state and LLM spend."""
        with _refusals():
            return views.answer(views.stats_view(self.desk.stats()))

    # -- acting ----------------------------------------------------------------------
    async def cancel_task(self, task_id: str) -> Annotated[CallToolResult, views.TaskRef]:
        """Cancel a task; kills its whole process tree."""
        with _refusals():
            task = await anyio.to_thread.run_sync(self.desk.cancel, task_id)
            if not task.is_final:
                grace = self.desk.settings.grace_seconds + 2
                tasks, _ = await wait_tasks(
                    self.desk.store,
                    [task.id],
                    mode="all",
                    timeout_seconds=min(grace, CANCEL_WAIT_MAX_SECONDS),
                )
                task = tasks[0] if tasks else task
        note = None if task.is_final else "cancel requested; the supervisor is stopping it"
        return views.answer(views.TaskRef(task_id=task.id, state=task.state.value, note=note))

    def retry_task(self, task_id: str) -> Annotated[CallToolResult, views.TaskRef]:
        """Run a failed, timed-out, interrupted or cancelled task again."""
        with _refusals():
            task = self.desk.retry(task_id)
        return views.answer(views.TaskRef(task_id=task.id, state=task.state.value))

    def retry_failed(self) -> Annotated[CallToolResult, views.TaskIds]:
        """Retry this workspace's failed, timed-out and interrupted tasks."""
        with _refusals():
            return views.answer(views.ids(self.desk.retry_failed()))

    def purge_tasks(
        self, older_than: float | None = None
    ) -> Annotated[CallToolResult, views.Purged]:
        """Delete this workspace's completed/cancelled tasks+logs, older_than seconds if set."""
        with _refusals():
            return views.answer(views.Purged(purged=len(self.desk.purge(older_than))))

    # -- helpers ---------------------------------------------------------------------
    def _finished_tail(self, task: Task, lines: int, max_bytes: int) -> str | None:
        if not task.is_final:
            return None
        return self.desk.tail(task, lines, max_bytes).text or None

    def _with_turns(self, view: views.TaskInfo, task: Task) -> views.TaskInfo:
        """`view` with the agent task's latest turns (an empty list for other tasks)."""
        capped = read_turns(task, self.desk.settings)
        return view.model_copy(
            update={
                "turns": capped.turns,
                "turns_omitted": capped.omitted or None,
                "turns_truncated": capped.truncated or None,
            }
        )

    def _waited(self, met: bool, tasks: list[Task]) -> views.WaitResult:
        waiting = self.desk.waiting(tasks)
        if len(tasks) > WAIT_LISTS_UP_TO:
            counts = Counter(t.state.value for t in tasks)
            shown = [
                views.brief(t, waiting=waiting.get(t.id))
                for t in tasks
                if t.state is not State.COMPLETED
            ]
            omitted = len(tasks) - min(len(shown), WAIT_LISTS_UP_TO)
            return views.WaitResult(
                met=met,
                counts=dict(counts),
                tasks=shown[:WAIT_LISTS_UP_TO],
                not_listed=omitted,
            )
        with_tails = len(tasks) <= WAIT_TAILS_UP_TO
        briefs = [
            views.brief(
                t,
                tail=self._finished_tail(t, WAIT_TAIL_LINES, WAIT_TAIL_BYTES)
                if with_tails
                else None,
                waiting=waiting.get(t.id),
            )
            for t in tasks
        ]
        return views.WaitResult(met=met, tasks=briefs)

    def _specs(self) -> list[tuple[Any, ToolAnnotations | None]]:
        read_only = ToolAnnotations(read_only_hint=True)
        return [
            (self.submit_task, None),
            (self.submit_batch, None),
            (self.get_task, read_only),
            (self.task_output, read_only),
            (self.list_tasks, read_only),
            (self.wait_for_tasks, read_only),
            (self.cancel_task, None),
            (self.retry_task, None),
            (self.retry_failed, None),
            (self.purge_tasks, None),
            (self.queue_stats, read_only),
        ]

    def tools(self) -> list[Tool]:
        """The SDK registrations of every tool, from their published schemas."""
        return registrations(self._specs())

    def built_tools(self) -> list[Tool]:
        """The registrations derived from the signatures (what the published file holds)."""
        return derived(self._specs())
