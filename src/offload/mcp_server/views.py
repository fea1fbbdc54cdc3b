"""What the MCP tools answer: small pydantic models built from the queue's records.

Answers are written for an agent's context window: ids, states and numbers, no empty
fields, long text cut. A status answer stays under 1 KB; output only comes back when
asked for (`task_output`) or, briefly, once a task has finished.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from mcp_types import CallToolResult, ContentBlock, TextContent
from pydantic import BaseModel, ConfigDict

from offload.queue.models import Task
from offload.queue.store import Stats

__all__ = [
    "ERROR_MAX_CHARS",
    "TITLE_MAX_CHARS",
    "Finished",
    "HostCounts",
    "Purged",
    "QueueStats",
    "TaskBrief",
    "TaskIds",
    "TaskInfo",
    "TaskList",
    "TaskOutput",
    "TaskRef",
    "WaitResult",
    "answer",
    "brief",
    "clip",
    "ids",
    "info",
    "iso",
    "named_command",
    "stats_view",
]

TITLE_MAX_CHARS = 120
ERROR_MAX_CHARS = 300
RESULT_MAX_CHARS = 300
FILES_MAX = 20


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class TaskRef(_View):
    """A task's id and state, answered by submit, cancel and retry."""

    task_id: str
    state: str
    note: str | None = None


class TaskIds(_View):
    """Ids of the tasks a call created or put back in the queue."""

    task_ids: list[str]


class TaskBrief(_View):
    """One line per task, as lists and waits show them."""

    id: str
    state: str
    title: str | None = None
    command: str | None = None
    exit_code: int | None = None
    error: str | None = None
    waiting: str | None = None
    tail: str | None = None


class TaskInfo(_View):
    """Everything worth knowing about one task, without its output unless it finished."""

    id: str
    type: str
    state: str
    title: str
    command: str | None = None
    run_on: list[str] | None = None
    waiting: str | None = None
    attempt: int
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    created: str
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    progress: float | None = None
    progress_message: str | None = None
    depends_on: list[str] | None = None
    cost_usd: float | None = None
    tokens: list[int] | None = None
    model: str | None = None
    files_written: list[str] | None = None
    result: str | None = None
    tail: str | None = None
    turns: list[dict[str, Any]] | None = None
    turns_omitted: int | None = None
    turns_truncated: bool | None = None


class Finished(_View):
    """A finished task as the Tasks extension hands back `submit_task`'s final result."""

    model_config = ConfigDict(frozen=True, extra="allow")

    task_id: str
    state: str


class TaskOutput(_View):
    """The end of a task's output log."""

    task_id: str
    state: str
    text: str
    lines: int
    truncated: bool
    size_bytes: int


class TaskList(_View):
    """A page of tasks, newest first."""

    tasks: list[TaskBrief]


class WaitResult(_View):
    """How a wait ended: whether the condition held, and each task's state.

    A wait on many tasks counts them by state and lists only those that did not
    complete (20 at most; `not_listed` says how many are left out): 200 completed
    builds are one number, not 15 KB of context.
    """

    met: bool
    counts: dict[str, int] | None = None
    tasks: list[TaskBrief]
    not_listed: int | None = None


class Purged(_View):
    """How many finished tasks were removed."""

    purged: int


class HostCounts(_View):
    """Tasks one host runs now and has finished (None: supervisors since stopped)."""

    host: str | None = None
    running: int
    finished: int


class QueueStats(_View):
    """Counts by state and spending of the whole queue; per host where several share it."""

    counts: dict[str, int]
    total: int
    cost_today_usd: float
    cost_total_usd: float
    hosts: list[HostCounts] | None = None


def iso(ms: int | None) -> str | None:
    """UTC ISO-8601 time to the second for a timestamp in milliseconds."""
    if ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def clip(text: str | None, limit: int) -> str | None:
    """`text` cut to `limit` characters (an ellipsis marks the cut); None stays None."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def _seconds(task: Task, now_ms: int) -> float | None:
    if task.started_at is None:
        return None
    end = task.finished_at if task.finished_at is not None else now_ms
    return round(max(0, end - task.started_at) / 1000, 3)


def _tokens(task: Task) -> list[int] | None:
    if task.tokens_in is None and task.tokens_out is None:
        return None
    return [task.tokens_in or 0, task.tokens_out or 0]


def _listed(values: Iterable[str], limit: int) -> list[str] | None:
    items = list(values)
    return items[:limit] or None


def info(task: Task, now_ms: int, tail: str | None = None, waiting: str | None = None) -> TaskInfo:
    """The full status of `task`, with `tail` (the end of its output) if given.

    `waiting` says why a pending task waits when no live supervisor can take it.
    """
    return TaskInfo(
        id=task.id,
        type=task.type,
        state=task.state.value,
        title=clip(task.title, TITLE_MAX_CHARS) or "",
        command=named_command(task),
        run_on=list(task.run_on) or None,
        waiting=waiting,
        attempt=task.attempt,
        exit_code=task.exit_code,
        signal=task.signal,
        error=clip(task.error, ERROR_MAX_CHARS),
        created=iso(task.created_at) or "",
        started=iso(task.started_at),
        finished=iso(task.finished_at),
        seconds=_seconds(task, now_ms),
        progress=task.progress,
        progress_message=clip(task.progress_message, TITLE_MAX_CHARS),
        depends_on=_listed(task.depends_on, FILES_MAX),
        cost_usd=task.cost_usd,
        tokens=_tokens(task),
        model=task.model_used or task.model,
        files_written=_listed(task.files_written, FILES_MAX),
        result=clip(task.result, RESULT_MAX_CHARS),
        tail=tail or None,
    )


def named_command(task: Task) -> str | None:
    """The command (capped) when the title shows a name instead; None when it is the title."""
    if not task.name or task.command is None:
        return None
    text = task.command if isinstance(task.command, str) else " ".join(task.command)
    return clip(text, TITLE_MAX_CHARS)


def brief(
    task: Task, *, title: bool = False, tail: str | None = None, waiting: str | None = None
) -> TaskBrief:
    """One line for `task`; its error only when it did not complete."""
    return TaskBrief(
        id=task.id,
        state=task.state.value,
        title=clip(task.title, TITLE_MAX_CHARS) if title else None,
        command=named_command(task) if title else None,
        exit_code=task.exit_code,
        error=clip(task.error, ERROR_MAX_CHARS),
        waiting=waiting,
        tail=tail or None,
    )


def stats_view(stats: Stats) -> QueueStats:
    """The queue-wide counts and spending."""
    return QueueStats(
        counts=dict(stats.counts),
        total=stats.total,
        cost_today_usd=round(stats.cost_today_usd, 6),
        cost_total_usd=round(stats.cost_total_usd, 6),
        hosts=[HostCounts(host=h.host, running=h.running, finished=h.finished) for h in stats.hosts]
        or None,
    )


def ids(tasks: Sequence[Task]) -> TaskIds:
    """The ids of `tasks`, in order."""
    return TaskIds(task_ids=[t.id for t in tasks])


def answer(
    view: BaseModel, raw_field: str | None = None, *, is_error: bool = False
) -> CallToolResult:
    """A tool result carrying `view` both as structured content and as compact JSON text.

    Output text (`raw_field`) is left out of the JSON text and sent as its own text block,
    so an agent reads it as it was printed rather than as an escaped string, and it is
    not sent twice.
    """
    data = view.model_dump(mode="json", exclude_none=True)
    shown = {k: v for k, v in data.items() if k != raw_field}
    content: list[ContentBlock] = [
        TextContent(type="text", text=json.dumps(shown, ensure_ascii=False, separators=(",", ":")))
    ]
    raw = data.get(raw_field) if raw_field else None
    if raw:
        content.append(TextContent(type="text", text=raw))
    return CallToolResult(content=content, structured_content=data, is_error=is_error)
