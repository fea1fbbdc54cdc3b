"""Immutable records of the queue: states, task submissions, tasks and events.

Frozen records (`offload.records`), not pydantic models or dataclasses, because every CLI
call imports them and must start in tens of milliseconds; the MCP and HTTP front ends wrap
them in pydantic models at their own boundary.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping, Sequence
from enum import StrEnum

from offload.records import field, fields, record

TYPE_CHECKING = False  # typing costs ~3 ms of every CLI call; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "LLM_TYPES",
    "PURGEABLE_STATES",
    "RETRYABLE_STATES",
    "TASK_TYPES",
    "Event",
    "State",
    "Task",
    "TaskSpec",
    "new_task_id",
]


class State(StrEnum):
    """Where a task is in its life; docs/architecture.md draws the legal moves."""

    PENDING = "pending"  # queued, waiting for a slot, its group or its dependencies
    RUNNING = "running"  # claimed by the supervisor; its process tree exists
    COMPLETED = "completed"  # exited 0 (or the LLM/agent work succeeded)
    FAILED = "failed"  # non-zero exit, death by signal, or a reason in `error`
    TIMED_OUT = "timed_out"  # killed because it ran past timeout_seconds
    CANCELLED = "cancelled"  # cancelled by a person or an agent
    INTERRUPTED = "interrupted"  # its supervisor died or stopped while it ran


FINAL_STATES = frozenset(
    {State.COMPLETED, State.FAILED, State.TIMED_OUT, State.CANCELLED, State.INTERRUPTED}
)
ACTIVE_STATES = frozenset({State.PENDING, State.RUNNING})
RETRYABLE_STATES = frozenset({State.FAILED, State.TIMED_OUT, State.INTERRUPTED, State.CANCELLED})
PURGEABLE_STATES = frozenset({State.COMPLETED, State.CANCELLED})

LLM_TYPES = ("write_file", "code_task", "test_gen", "refactor", "docs", "review")
TASK_TYPES = ("shell", *LLM_TYPES, "agent")


def new_task_id() -> str:
    """Returns a fresh unguessable id: 128 random bits as 32 hex characters."""
    return os.urandom(16).hex()  # os.urandom is what `secrets` uses, without its imports


@record
class TaskSpec:
    """What a submitter asks for; validated by `offload.submission` before it is stored."""

    type: str = "shell"
    command: str | list[str] | None = None
    spec: str | None = None
    cwd: str = ""
    workspace: str = ""
    timeout_seconds: float | None = None
    priority: int = 5
    group: str | None = None
    depends_on: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None
    labels: tuple[str, ...] = ()
    output_path: str | None = None
    context_files: tuple[str, ...] = ()
    model: str | None = None
    large_context: bool = False
    max_turns: int | None = None
    parent_id: str | None = None
    policy: Mapping[str, Any] | None = None  # the submitter's TaskPolicy, as JSON
    environ: Mapping[str, str] = field(default_factory=dict)  # the submitter's environment
    run_on: tuple[str, ...] = ()  # host labels the executing supervisor must have


_EMPTY_JSON = {"[]": list, "{}": dict}  # what most list and map columns hold


def _loads(value: Any, default: Any) -> Any:
    """The JSON column `value` decoded, `default` when it is NULL or empty."""
    if not value:
        return default
    empty = _EMPTY_JSON.get(value)
    return empty() if empty is not None else json.loads(value)


@record
class Task:
    """A task as the Store holds it: the submitted fields plus what the system set."""

    id: str
    seq: int
    type: str
    state: State
    command: str | list[str] | None
    spec: str | None
    cwd: str
    workspace: str
    timeout_seconds: float | None
    priority: int
    group: str | None
    depends_on: tuple[str, ...]
    env: dict[str, str]
    name: str | None
    labels: tuple[str, ...]
    output_path: str | None
    context_files: tuple[str, ...]
    model: str | None
    large_context: bool
    max_turns: int | None
    parent_id: str | None
    created_at: int
    updated_at: int
    started_at: int | None
    finished_at: int | None
    attempt: int
    exit_code: int | None
    signal: int | None
    error: str | None
    pid: int | None
    pgid: int | None
    proc_start: float | None
    cgroup: str | None
    supervisor_id: str | None
    log_path: str | None
    cancel_requested: bool
    progress: float | None
    progress_message: str | None
    tokens_in: int | None
    tokens_out: int | None
    tokens_cached: int | None
    cost_usd: float | None
    model_used: str | None
    files_written: tuple[str, ...]
    result: str | None
    policy: dict[str, Any] | None = None
    environ: dict[str, str] = field(default_factory=dict)
    containment: str | None = None
    run_on: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row: Mapping[str, Any], depends_on: Sequence[str] = ()) -> Task:
        """Builds a Task from a database row (a mapping of column name to value)."""
        if isinstance(row, sqlite3.Row):  # it finds a name by comparing it with each
            # column's, 52 times a row; a dict hashes. Rows here are `tasks` rows alone
            # (no join), so no two columns share a name for the dict to collapse.
            row = dict(zip(row.keys(), row, strict=True))
        command = row["command"]
        if command is not None:
            command = json.loads(command)
        return cls(
            id=row["id"],
            seq=row["seq"],
            type=row["type"],
            state=State(row["state"]),
            command=command,
            spec=row["spec"],
            cwd=row["cwd"],
            workspace=row["workspace"],
            timeout_seconds=row["timeout_seconds"],
            priority=row["priority"],
            group=row["grp"],
            depends_on=tuple(depends_on),
            env=_loads(row["env"], {}),
            name=row["name"],
            labels=tuple(_loads(row["labels"], [])),
            output_path=row["output_path"],
            context_files=tuple(_loads(row["context_files"], [])),
            model=row["model"],
            large_context=bool(row["large_context"]),
            max_turns=row["max_turns"],
            parent_id=row["parent_id"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            attempt=row["attempt"],
            exit_code=row["exit_code"],
            signal=row["signal"],
            error=row["error"],
            pid=row["pid"],
            pgid=row["pgid"],
            proc_start=row["proc_start"],
            cgroup=row["cgroup"],
            supervisor_id=row["supervisor_id"],
            log_path=row["log_path"],
            cancel_requested=bool(row["cancel_requested"]),
            progress=row["progress"],
            progress_message=row["progress_message"],
            tokens_in=row["tokens_in"],
            tokens_out=row["tokens_out"],
            tokens_cached=row["tokens_cached"],
            cost_usd=row["cost_usd"],
            model_used=row["model_used"],
            files_written=tuple(_loads(row["files_written"], [])),
            result=row["result"],
            policy=_loads(row["policy"], None),
            environ=_loads(row["environ"], {}),
            containment=row["containment"],
            run_on=tuple(_loads(row["run_on"], [])),
        )

    @property
    def is_final(self) -> bool:
        """True once the task has reached a state it cannot leave without a retry."""
        return self.state in FINAL_STATES

    @property
    def title(self) -> str:
        """A one-line human label: the name, else the command, else the spec."""
        if self.name:
            return self.name
        if isinstance(self.command, list):
            return " ".join(self.command)
        return self.command or self.spec or ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (states as strings)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["state"] = self.state.value
        for key in ("depends_on", "labels", "context_files", "files_written", "run_on"):
            out[key] = list(out[key])
        return out


@record
class Event:
    """One entry of the append-only change feed."""

    seq: int
    task_id: str | None
    at: int
    kind: str
    detail: dict[str, Any]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Event:
        """Builds an Event from a database row."""
        return cls(
            seq=row["seq"],
            task_id=row["task_id"],
            at=row["at"],
            kind=row["kind"],
            detail=_loads(row["detail"], {}),
        )
