"""How the CLI shows tasks to a person: plain tables, detail views, ages and durations.

Written by hand on purpose: a table library costs more to import than `offload list`
costs to run. On a terminal the list fits the window (id and state are never cut, the
command is ellipsised, AGE/TIME/P/PROGRESS drop out when there is no room) and the state
is coloured unless NO_COLOR is set; piped, it is one tab-separated line per task with
no header and no colour: full id, state, age, run time, priority, command.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from offload.queue.models import State, Task

if TYPE_CHECKING:
    from offload.queue.store import Stats

__all__ = [
    "age",
    "command_text",
    "duration",
    "print_json",
    "show_stats",
    "show_task",
    "show_tasks",
    "table_lines",
]

ID_CHARS = 8
DEFAULT_WIDTH = 80  # a terminal that does not say how wide it is
MIN_WIDTH = 60  # narrower terminals get the 60-column layout (and wrap)
MIN_COMMAND_CHARS = 16  # below this an optional column gives its room to the command
_GAP = "  "
_COLOUR = {
    State.PENDING: "33",
    State.RUNNING: "36",
    State.COMPLETED: "32",
    State.FAILED: "31",
    State.TIMED_OUT: "31",
    State.CANCELLED: "35",
    State.INTERRUPTED: "31",
}
_STATE_CHARS = max(len(s.value) for s in State)


def duration(seconds: float) -> str:
    """A compact human duration: 850ms, 12s, 4m05s, 3h02m, 2d04h."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def age(ms: int, now_ms: int | None = None) -> str:
    """How long ago a millisecond timestamp was."""
    now = time.time() * 1000 if now_ms is None else now_ms
    return duration(max(0.0, (now - ms) / 1000))


def command_text(task: Task) -> str:
    """The command as a person would type it (an argv list is shell-quoted)."""
    if isinstance(task.command, list):
        import shlex

        return shlex.join(task.command)
    return task.command or ""


# C0 and C1 controls but tab and newline, and the marks that reorder or hide text
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with control characters written out (``\\x1b``, ``\\u202e``).

    A task's name, command, error and environment come from whoever submitted it (an
    agent, perhaps prompt-injected): printed raw, an escape sequence would drive the
    person's terminal (set the clipboard, clear or retitle the screen) and a bidi mark
    would make one command look like another.
    """
    return _CONTROLS.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def _label(task: Task) -> str:
    """What the list shows for a task: its name, else its command, else its spec."""
    title = task.name or command_text(task) or task.spec or ""
    title = printable(" ".join(title.split()))  # newlines and tabs would break a row
    return title if task.type == "shell" else f"[{task.type}] {title}"


def _run_time(task: Task) -> str:
    if task.started_at is None:
        return ""
    end = task.finished_at or int(time.time() * 1000)
    return duration(max(0, end - task.started_at) / 1000)


def _progress(task: Task) -> str:
    if task.progress is None:
        return ""
    filled = int(task.progress * 10)
    return "█" * filled + "░" * (10 - filled) + f" {task.progress * 100:.0f}%"


def _ellipsis(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def print_json(value: Any) -> None:
    """Writes `value` as indented JSON to stdout."""
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _terminal_width(stream: TextIO) -> int | None:
    """The window's width if `stream` is a terminal (COLUMNS wins, as in `ls`), else None."""
    try:
        if not stream.isatty():
            return None
    except (ValueError, AttributeError):
        return None
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size(stream.fileno()).columns or DEFAULT_WIDTH
    except (OSError, ValueError):
        return DEFAULT_WIDTH


def _colour(stream: TextIO) -> bool:
    return "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb" and stream.isatty()


def _paint(text: str, state: State, colour: bool) -> str:
    return f"\x1b[{_COLOUR[state]}m{text}\x1b[0m" if colour else text


def table_lines(tasks: Sequence[Task], width: int, *, colour: bool = False) -> list[str]:
    """The list as a table `width` columns wide (at least MIN_WIDTH), header first."""
    width = max(width, MIN_WIDTH)
    rows = [
        {
            "AGE": age(t.created_at),
            "TIME": _run_time(t),
            "P": str(t.priority),
            "PROGRESS": _progress(t),
        }
        for t in tasks
    ]
    optional = [c for c in ("AGE", "TIME", "P", "PROGRESS") if any(r[c] for r in rows)]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in optional}
    fixed = ID_CHARS + len(_GAP) + _STATE_CHARS + len(_GAP)
    # The command's room: drop the least useful optional columns until it has enough.
    for drop in ("PROGRESS", "P", "TIME", "AGE"):
        room = width - fixed - sum(widths[c] + len(_GAP) for c in optional)
        if room >= MIN_COMMAND_CHARS:
            break
        if drop in optional:
            optional.remove(drop)
    room = width - fixed - sum(widths[c] + len(_GAP) for c in optional)
    if "PROGRESS" in optional:  # the command sits before the progress bar
        optional.remove("PROGRESS")
        tail_columns = ["PROGRESS"]
    else:
        tail_columns = []
    header = _GAP.join(
        ["ID".ljust(ID_CHARS), "STATE".ljust(_STATE_CHARS)]
        + [c.ljust(widths[c]) for c in optional]
        + ["COMMAND".ljust(room) if tail_columns else "COMMAND"]
        + tail_columns
    )
    lines = [header.rstrip()]
    for task, row in zip(tasks, rows, strict=True):
        cells = [
            task.id[:ID_CHARS],
            _paint(task.state.value, task.state, colour)
            + " " * (_STATE_CHARS - len(task.state.value)),
            *(row[c].rjust(widths[c]) for c in optional),
        ]
        label = _ellipsis(_label(task), room)
        cells.append(label.ljust(room) if tail_columns else label)
        cells.extend(row[c] for c in tail_columns)
        lines.append(_GAP.join(cells).rstrip())
    return lines


def tsv_lines(tasks: Sequence[Task]) -> list[str]:
    """The list for a pipe: id, state, age, run time, priority, command; tab-separated."""
    return [
        "\t".join(
            (t.id, t.state.value, age(t.created_at), _run_time(t), str(t.priority), _label(t))
        )
        for t in tasks
    ]


def show_tasks(tasks: Sequence[Task], stream: TextIO | None = None) -> None:
    """Prints the task list: a table on a terminal, tab-separated lines otherwise."""
    out = stream or sys.stdout
    width = _terminal_width(out)
    if width is None:
        lines = tsv_lines(tasks)
    elif not tasks:
        lines = ["no tasks"]
    else:
        lines = table_lines(tasks, width, colour=_colour(out))
    out.write("".join(line + "\n" for line in lines))


def _detail_rows(task: Task, waiting: str | None) -> list[tuple[str, Any]]:
    return [
        ("id", task.id),
        ("state", task.state.value),
        ("runs on", ", ".join(task.run_on) or None),
        ("waiting", waiting.removeprefix("waiting: ") if waiting else None),
        ("type", task.type),
        ("name", task.name),
        ("command", command_text(task) or None),
        ("spec", task.spec),
        ("cwd", task.cwd),
        ("priority", task.priority),
        ("group", task.group),
        ("depends on", ", ".join(task.depends_on) or None),
        ("attempt", task.attempt),
        ("created", f"{age(task.created_at)} ago"),
        ("ran for", _run_time(task) or None),
        ("timeout", f"{task.timeout_seconds:g} s" if task.timeout_seconds else None),
        ("exit code", task.exit_code),
        ("signal", task.signal),
        ("error", task.error),
        ("progress", f"{_progress(task)} {task.progress_message or ''}".strip() or None),
        ("pid", task.pid),
        ("containment", task.containment),
        ("log", task.log_path),
        ("model", task.model_used or task.model),
        ("tokens", f"{task.tokens_in} in / {task.tokens_out} out" if task.tokens_in else None),
        ("cost", f"${task.cost_usd:.4f}" if task.cost_usd is not None else None),
        ("output path", task.output_path),
        ("files written", ", ".join(task.files_written) or None),
    ]


def show_task(task: Task, stream: TextIO | None = None, *, waiting: str | None = None) -> None:
    """Prints every field of one task a person cares about, one per line.

    `waiting` is why the task waits when no live supervisor can take it (the desk's).
    """
    out = stream or sys.stdout
    colour = _colour(out)
    rows = [(k, v) for k, v in _detail_rows(task, waiting) if v is not None and v != ""]
    key_width = max(len(k) for k, _ in rows)
    for key, value in rows:
        text = printable(str(value)).replace("\n", "\n" + " " * (key_width + len(_GAP)))
        if key == "state":
            text = _paint(text, task.state, colour)
        out.write(f"{key.ljust(key_width)}{_GAP}{text}\n")
    _show_environ(task, out)


def _show_environ(task: Task, out: TextIO) -> None:
    """The variables the task was given: the submitter's environment, then its own `env`.

    Values of names that look sensitive are masked (secrets were never stored).
    """
    from offload.policies.submitter_env import masked

    blocks = [("environment (the submitter's)", task.environ), ("env (its own)", task.env)]
    for title, variables in blocks:
        if variables:
            shown = sorted(masked(variables).items())
            lines = "".join(f"  {k}={printable(v)}\n" for k, v in shown)
            out.write(f"{title}:\n{lines}")


def show_stats(stats: Stats) -> None:
    """Prints counts by state, per host where several share the queue, and spending only
    once an LLM task has run."""
    order = [s.value for s in State]
    counts = "  ".join(f"{s} {stats.counts.get(s, 0)}" for s in order)
    sys.stdout.write(f"{counts}  total {stats.total}\n")
    spent = stats.cost_total_usd or stats.tokens_in or stats.tokens_out
    if spent:
        sys.stdout.write(
            f"cost today ${stats.cost_today_usd:.4f}  all time ${stats.cost_total_usd:.4f}  "
            f"tokens {stats.tokens_in} in / {stats.tokens_out} out\n"
        )
    for host in stats.hosts:
        name = host.host if host.host is not None else "(supervisors since stopped)"
        sys.stdout.write(f"  {name}  {host.running} running  {host.finished} finished\n")
    for day in stats.days:
        if day.finished or day.cost_usd:
            models = ", ".join(f"{m} ${c:.4f}" for m, c in sorted(day.by_model.items()))
            cost = f"  ${day.cost_usd:.4f}" if spent else ""
            sys.stdout.write(
                f"  {day.day}  {day.finished:5d} finished{cost}"
                + (f"  ({models})" if models else "")
                + "\n"
            )
