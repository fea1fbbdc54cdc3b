"""An agent task's turns as `get_task(turns=true)` answers them: the latest, hard-capped.

A transcript can run to hundreds of turns with 20 KB tool results; the agent reading it
through MCP pays for every byte in context. So the answer keeps the last `MAX_TURNS`
turns, cuts each tool result, text and string argument, drops empty fields, and then drops the
oldest turns until the whole part fits in `MAX_BYTES`, saying how many it left out.
The transcript is read lazily: only agent tasks have one, and `get_task` without turns
never imports the reader.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from offload.config import Settings
from offload.queue.models import Task

__all__ = [
    "ARGUMENT_MAX_CHARS",
    "MAX_BYTES",
    "MAX_TURNS",
    "RESULT_MAX_CHARS",
    "TEXT_MAX_CHARS",
    "CappedTurns",
    "cap_turns",
    "read_turns",
]

MAX_TURNS = 20
MAX_BYTES = 12_000
RESULT_MAX_CHARS = 300
TEXT_MAX_CHARS = 1_000
ARGUMENT_MAX_CHARS = 300
AGENT_TYPE = "agent"


@dataclass(frozen=True)
class CappedTurns:
    """The turns kept, oldest first, and how many older ones were left out."""

    turns: list[dict[str, Any]] = field(default_factory=list)
    omitted: int = 0

    @property
    def truncated(self) -> bool:
        """Whether anything was left out (older turns, or tool calls of the one kept)."""
        return self.omitted > 0 or any("calls_omitted" in t for t in self.turns)


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"… [{len(text) - limit} more chars]"


def _short(value: Any) -> Any:
    """`value` with every string in it cut to `ARGUMENT_MAX_CHARS`."""
    if isinstance(value, str):
        return _clip(value, ARGUMENT_MAX_CHARS)
    if isinstance(value, Mapping):
        return {str(k): _short(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_short(v) for v in value]
    return value


def _slim(turn: Mapping[str, Any]) -> dict[str, Any]:
    """One turn with text and arguments cut and empty fields (None, "", [], {}) dropped."""
    out: dict[str, Any] = {}
    for key, value in turn.items():
        if key == "text" and isinstance(value, str):
            value = _clip(value, TEXT_MAX_CHARS)
        elif key == "tool_calls" and isinstance(value, list):
            value = [_slim_call(c) for c in value if isinstance(c, Mapping)]
        if value is None or value == "" or value == [] or value == {}:
            continue
        out[key] = value
    return out


def _slim_call(call: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in call.items():
        if key == "arguments":
            value = _short(value)
        if value is None or value == "" or value == {}:
            continue
        out[key] = value
    return out


def _size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def _fit_calls(turn: dict[str, Any], budget: int) -> dict[str, Any]:
    """`turn` with its earliest tool calls dropped until it fits in `budget` bytes."""
    calls = list(turn.get("tool_calls", []))
    while calls:
        calls.pop(0)
        kept = {**turn, "tool_calls": calls, "calls_omitted": len(turn["tool_calls"]) - len(calls)}
        if _size(kept) <= budget:
            return kept
    return {**turn, "tool_calls": [], "calls_omitted": len(turn.get("tool_calls", []))}


def cap_turns(
    turns: Sequence[Mapping[str, Any]], *, max_turns: int = MAX_TURNS, max_bytes: int = MAX_BYTES
) -> CappedTurns:
    """The last `max_turns` of `turns`, slimmed, and only as many as fit in `max_bytes`.

    Pure: `turns` is what `load_turns` read, tool results already cut to
    `RESULT_MAX_CHARS` (and labelled) by it. The newest turn is always kept; if it alone
    is over the budget, its earliest tool calls are dropped (`calls_omitted` counts them).
    """
    kept: list[dict[str, Any]] = []
    used = 2  # the enclosing []
    for turn in reversed(turns[-max_turns:] if max_turns > 0 else []):
        slim = _slim(turn)
        size = _size(slim) + 1
        if used + size > max_bytes:
            if not kept:
                kept.append(_fit_calls(slim, max_bytes - used))
            break
        kept.append(slim)
        used += size
    kept.reverse()
    return CappedTurns(turns=kept, omitted=len(turns) - len(kept))


def read_turns(task: Task, settings: Settings) -> CappedTurns:
    """The capped turns of `task`; nothing for a task that is not an agent task."""
    if task.type != AGENT_TYPE:
        return CappedTurns()
    from offload.workers.agent.transcript import load_turns

    return cap_turns(load_turns(task, settings, result_chars=RESULT_MAX_CHARS))
