"""An agent task's transcript: one JSON line per turn in `<logs_dir>/<task-id>.turns.jsonl`.

Each turn is written (and flushed) once when the model has answered and again when its
tool calls have run (the later line completes the earlier), so a task that fails, is
cancelled or times out keeps every turn, including the one it was in. A line holds the
turn's index, the attempt it belongs to, the provider and model, the model's text, each
tool call with its arguments and (capped) result, tokens in/out, cost and any error.
Secrets known to the worker are masked before anything is written.

`load_turns` and `format_turns` are pure readers for the front ends (`offload show ID
--turns`, MCP, the dashboard); they never need the provider SDKs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from offload.config import Settings
from offload.queue.models import Task
from offload.workers.redact import scrub

__all__ = [
    "RESULT_CHARS",
    "STORED_RESULT_CHARS",
    "Transcript",
    "format_turns",
    "load_turns",
    "transcript_path",
]

STORED_RESULT_CHARS = 20_000
"""A tool result longer than this is cut (and labelled) in the transcript file."""
RESULT_CHARS = 2_000
"""What `load_turns` keeps of each tool result by default."""
_TEXT_LINE_CHARS = 200


def transcript_path(settings: Settings, task_id: str) -> Path:
    """Where the transcript of task `task_id` lives."""
    return settings.logs_dir / f"{task_id}.turns.jsonl"


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters not shown]"


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {str(k): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    return value


class Transcript:
    """Appends turns to a task's transcript file (created 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, turn: Mapping[str, Any]) -> None:
        """Writes one turn as a JSON line and flushes it to the file."""
        record = dict(_scrubbed(turn))
        for call in record.get("tool_calls", []):
            if call.get("result") is not None:
                call["result"] = _cut(str(call["result"]), STORED_RESULT_CHARS)
        line = json.dumps(record, ensure_ascii=False) + "\n"
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()


def _number(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _cost(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _call(raw: Any, result_chars: int) -> dict[str, Any]:
    call = raw if isinstance(raw, Mapping) else {}
    arguments = call.get("arguments")
    result = call.get("result")
    return {
        "id": str(call.get("id") or ""),
        "name": str(call.get("name") or ""),
        "arguments": arguments if isinstance(arguments, Mapping) else {},
        "result": _cut(str(result or ""), result_chars),
        "is_error": bool(call.get("is_error")),
        "finished": result is not None,
    }


def _turn(raw: Mapping[str, Any], result_chars: int) -> dict[str, Any]:
    calls = raw.get("tool_calls")
    return {
        "index": _number(raw.get("index")),
        "attempt": _number(raw.get("attempt")) or 1,
        "at": _number(raw.get("at")),
        "provider": raw.get("provider"),
        "model": raw.get("model"),
        "text": str(raw.get("text") or ""),
        "stop": raw.get("stop"),
        "tool_calls": [_call(c, result_chars) for c in (calls if isinstance(calls, list) else [])],
        "tokens_in": _number(raw.get("tokens_in")),
        "tokens_out": _number(raw.get("tokens_out")),
        "tokens_cached": _number(raw.get("tokens_cached")),
        "cost_usd": _cost(raw.get("cost_usd")),
        "error": raw.get("error") or None,
    }


def load_turns(
    task: Task, settings: Settings, *, result_chars: int = RESULT_CHARS
) -> list[dict[str, Any]]:
    """Reads the turns of an agent task, oldest first (an empty list when there are none).

    Each turn is a dict: `index` (1-based, per attempt), `attempt`, `at` (ms), `provider`,
    `model`, `text` (what the model said), `stop`, `tool_calls` (each: `id`, `name`,
    `arguments`, `result` cut to `result_chars`, `is_error`, and `finished`: False when
    the task ended while the call ran), `tokens_in`, `tokens_out`, `tokens_cached`,
    `cost_usd` (None when unknown) and `error` (None, or why the turn failed). A line cut
    short by a killed task is skipped.

    Args:
        task: The task (any type; only agent tasks have turns).
        settings: Where the logs live.
        result_chars: How much of each tool result to keep.
    """
    path = transcript_path(settings, task.id)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    turns: dict[tuple[int, int], dict[str, Any]] = {}
    for line in text.splitlines():
        try:
            raw = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(raw, Mapping):
            turn = _turn(raw, result_chars)
            turns[(turn["attempt"], turn["index"])] = turn  # a later line completes a turn
    return list(turns.values())


def _one_line(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    text = text.replace("\n", " ")
    return text if len(text) <= _TEXT_LINE_CHARS else text[:_TEXT_LINE_CHARS] + "..."


def _block(label: str, text: str) -> list[str]:
    """`label` before the first line of `text`, the other lines aligned under it."""
    first, *rest = text.splitlines() or [""]
    pad = " " * len(label)
    return [label + first, *(pad + line for line in rest)]


def _money(cost: float | None) -> str:
    return "cost unknown" if cost is None else f"${cost:.6f}"


def _header(turn: Mapping[str, Any]) -> str:
    where = " ".join(str(p) for p in (turn.get("provider"), turn.get("model")) if p)
    parts = [f"turn {turn['index']}"]
    if where:
        parts.append(where)
    parts.append(f"{turn['tokens_in']} in / {turn['tokens_out']} out")
    parts.append(_money(turn["cost_usd"]))
    return " · ".join(parts)


def _format_turn(turn: Mapping[str, Any]) -> list[str]:
    lines = [_header(turn)]
    if turn["text"].strip():
        lines.extend(_block("  model: ", turn["text"].strip()))
    for call in turn["tool_calls"]:
        lines.append(f"  → {call['name']} {_one_line(call['arguments'])}")
        if not call["finished"]:
            lines.append("    … no result: the task ended while this call ran")
            continue
        mark = "    ✗ " if call["is_error"] else "    ← "
        lines.extend(_block(mark, call["result"].rstrip() or "(empty)"))
    if turn["error"]:
        lines.append(f"  error: {turn['error']}")
    return lines


def format_turns(turns: Sequence[Mapping[str, Any]]) -> str:
    """A readable text rendering of `load_turns`' result (for `offload show ID --turns`).

    One block per turn (header with tokens and cost, the model's text, each tool call
    with its arguments and result), attempts labelled when there were several, and a
    closing line with the totals.
    """
    if not turns:
        return "no turns recorded\n"
    lines: list[str] = []
    attempts = {t["attempt"] for t in turns}
    current = None
    for turn in turns:
        if len(attempts) > 1 and turn["attempt"] != current:
            current = turn["attempt"]
            lines.append(f"== attempt {current} ==")
        lines.extend(_format_turn(turn))
        lines.append("")
    costs = [t["cost_usd"] for t in turns]
    known = [c for c in costs if c is not None]
    total = sum(known) if known else None
    tokens_in = sum(t["tokens_in"] for t in turns)
    tokens_out = sum(t["tokens_out"] for t in turns)
    suffix = " (some turns unpriced)" if known and len(known) < len(costs) else ""
    lines.append(
        f"{len(turns)} turn(s) · {tokens_in} in / {tokens_out} out · {_money(total)}{suffix}"
    )
    return "\n".join(lines) + "\n"
