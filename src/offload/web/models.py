"""The HTTP API's answers as pydantic models, so `/openapi.json` says exactly what is sent.

They wrap the Store's frozen dataclasses at this boundary. A task's environment values
are never sent (they may hold secrets a submitter passed with ``--env``): only the names.
"""

from __future__ import annotations

import dataclasses
import typing
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, create_model

from offload.logs import Tail
from offload.queue.models import Event, State, Task
from offload.queue.store import Stats

__all__ = [
    "DayOut",
    "ErrorOut",
    "EventOut",
    "HostOut",
    "OutputOut",
    "PurgeIn",
    "PurgeOut",
    "PurgeState",
    "StatsOut",
    "TaskOut",
    "TaskPage",
    "ToolCallOut",
    "TurnOut",
]

_MAX_PURGE_AGE_SECONDS = 100 * 365 * 86_400


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class ErrorOut(_Out):
    """Why a request was refused, as one line a person understands."""

    detail: str


# Fields whose values may hold secrets a submitter passed: only their names are sent.
_NAMES_ONLY = {"env": "env_names", "environ": "environ_names"}
_DESCRIPTIONS = {
    "id": "32 hex characters; any unique prefix of 6+ also works",
    "created_at": "UTC milliseconds since the epoch, like every *_at",
    "progress": "fraction done, 0 to 1, when known",
    "env_names": "names of the task's own variables (no values)",
    "environ_names": "names of the submitter's environment variables it ran with (no values)",
    "title": "the name, else the command, else the spec",
    "containment": "what contained the task's processes (namespaces, cgroup, sandbox)",
    "policy": "the command policy the task was submitted under, as it enforces it",
    "run_on": "host labels the supervisor that runs it must have (submit `on`)",
    "waiting": "why a pending task waits: no live supervisor has its labels (and the fix)",
}


class _TaskOutBase(_Out):
    @classmethod
    def of(cls, task: Task, waiting: str | None = None) -> Any:
        """Wraps a Store task; `waiting` is the desk's note on why it waits, if any."""
        data: dict[str, Any] = task.to_dict()
        for name, shown in _NAMES_ONLY.items():
            data[shown] = sorted(data.pop(name) or ())
        data["title"] = task.title
        data["waiting"] = waiting
        return cls(**data)


def _json_type(hint: Any) -> Any:
    """The type a dataclass field has in JSON: tuples are arrays."""
    if typing.get_origin(hint) is tuple:
        (item, _ellipsis) = typing.get_args(hint)
        return list.__class_getitem__(item)
    return hint


def _task_out_fields() -> dict[str, Any]:
    """Every field of `Task`, so a field added to the domain reaches the API by itself."""
    hints = typing.get_type_hints(Task)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(Task):
        name = _NAMES_ONLY.get(f.name, f.name)
        kind = list[str] if f.name in _NAMES_ONLY else _json_type(hints[f.name])
        fields[name] = (kind, Field(description=_DESCRIPTIONS.get(name)))
    fields["title"] = (str, Field(description=_DESCRIPTIONS["title"]))
    fields["waiting"] = (str | None, Field(default=None, description=_DESCRIPTIONS["waiting"]))
    return fields


if typing.TYPE_CHECKING:
    TaskOut = _TaskOutBase
else:
    TaskOut = create_model(
        "TaskOut",
        __base__=_TaskOutBase,
        __doc__="A task as the API shows it: every stored field, environment values left out.",
        **_task_out_fields(),
    )


class TaskPage(_Out):
    """One page of tasks, newest first."""

    tasks: list[TaskOut]
    total: int = Field(description="how many tasks match the state filter in all")
    limit: int
    offset: int


class DayOut(_Out):
    """Tasks finished and USD spent on one UTC day."""

    day: str = Field(description="YYYY-MM-DD (UTC)")
    finished: int
    cost_usd: float
    by_model: dict[str, float]
    by_type: dict[str, float]


class HostOut(_Out):
    """The tasks one host runs now and has finished (PostgreSQL: several hosts)."""

    host: str | None = Field(description="null: supervisors that have since stopped")
    running: int
    finished: int


class StatsOut(_Out):
    """Counts by state and spending, as `offload stats` shows them."""

    counts: dict[State, int] = Field(description="tasks in each state (every state listed)")
    total: int
    cost_today_usd: float
    cost_total_usd: float
    tokens_in: int
    tokens_out: int
    days: list[DayOut] = Field(description="the last 14 UTC days, oldest first")
    hosts: list[HostOut] = Field(
        description="per host, busiest first; empty unless several hosts share the queue"
    )
    now: int = Field(description="the server's clock, UTC milliseconds")

    @classmethod
    def of(cls, stats: Stats, now_ms: int) -> StatsOut:
        """Wraps the Store's stats, listing every state even when it counts 0."""
        counts = {state: int(stats.counts.get(state.value, 0)) for state in State}
        days = [
            DayOut(
                day=d.day,
                finished=d.finished,
                cost_usd=d.cost_usd,
                by_model=d.by_model,
                by_type=d.by_type,
            )
            for d in stats.days
        ]
        return cls(
            counts=counts,
            total=stats.total,
            cost_today_usd=stats.cost_today_usd,
            cost_total_usd=stats.cost_total_usd,
            tokens_in=stats.tokens_in,
            tokens_out=stats.tokens_out,
            days=days,
            hosts=[
                HostOut(host=h.host, running=h.running, finished=h.finished) for h in stats.hosts
            ],
            now=now_ms,
        )


class OutputOut(_Out):
    """The end of a task's output log."""

    task_id: str
    text: str = Field(description="UTF-8, undecodable bytes replaced")
    lines: int
    truncated: bool = Field(description="older output exists that was not returned")
    size: int = Field(description="the log's size in bytes: the offset to follow from")

    @classmethod
    def of(cls, task_id: str, tail: Tail) -> OutputOut:
        """Wraps a tail read."""
        return cls(
            task_id=task_id,
            text=tail.text,
            lines=tail.lines,
            truncated=tail.truncated,
            size=tail.size,
        )


class PurgeState(StrEnum):
    """The states `POST /api/purge` may remove."""

    COMPLETED = "completed"  # succeeded
    FAILED = "failed"  # failed, kept for a retry until purged
    TIMED_OUT = "timed_out"  # ran past its timeout
    CANCELLED = "cancelled"  # cancelled by someone
    INTERRUPTED = "interrupted"  # its supervisor died while it ran


class PurgeIn(BaseModel):
    """What to purge; an empty body purges every completed and cancelled task."""

    model_config = ConfigDict(extra="forbid")

    older_than_seconds: StrictFloat | None = Field(
        default=None,
        ge=0,
        le=_MAX_PURGE_AGE_SECONDS,
        allow_inf_nan=False,
        description="only tasks finished longer ago than this",
    )
    states: list[PurgeState] | None = Field(
        default=None, min_length=1, description="default: completed and cancelled"
    )


class PurgeOut(_Out):
    """What a purge removed."""

    purged: int
    ids: list[str]


class EventOut(_Out):
    """One entry of the change feed, as the data of a server-sent event."""

    seq: int
    task_id: str | None
    at: int
    kind: str = Field(description="submitted, started, progress, usage, cancel_requested, ...")
    detail: dict[str, Any]

    @classmethod
    def of(cls, event: Event) -> EventOut:
        """Wraps a Store event."""
        return cls(
            seq=event.seq, task_id=event.task_id, at=event.at, kind=event.kind, detail=event.detail
        )


def _text_or_none(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


class ToolCallOut(_Out):
    """One tool call the model made in a turn, with what the tool answered."""

    id: str
    name: str
    arguments: dict[str, Any]
    result: str = Field(description="the tool's answer, cut to 2,000 characters (labelled)")
    is_error: bool = Field(description="the tool refused or failed")
    finished: bool = Field(description="false when the task ended while the call ran")


class TurnOut(_Out):
    """One turn of an agent task: what the model said, the tools it called, what it cost."""

    index: int = Field(description="1-based, counted per attempt")
    attempt: int
    at: int = Field(description="when the turn was written, UTC milliseconds")
    provider: str | None
    model: str | None
    text: str = Field(description="what the model said")
    stop: str | None = Field(description="why the model stopped, as the provider said it")
    tool_calls: list[ToolCallOut]
    tokens_in: int
    tokens_out: int
    tokens_cached: int
    cost_usd: float | None = Field(description="None when the model's price is unknown")
    error: str | None = Field(description="why the turn failed, if it did")

    @classmethod
    def of(cls, turn: dict[str, Any]) -> TurnOut:
        """Wraps one turn as `offload.workers.agent.load_turns` reads it."""
        calls = [ToolCallOut(**call) for call in turn["tool_calls"]]
        return cls(
            index=turn["index"],
            attempt=turn["attempt"],
            at=turn["at"],
            provider=_text_or_none(turn["provider"]),
            model=_text_or_none(turn["model"]),
            text=turn["text"],
            stop=_text_or_none(turn["stop"]),
            tool_calls=calls,
            tokens_in=turn["tokens_in"],
            tokens_out=turn["tokens_out"],
            tokens_cached=turn["tokens_cached"],
            cost_usd=turn["cost_usd"],
            error=_text_or_none(turn["error"]),
        )
