"""How the CLI shows tasks to a person: Rich tables, detail views, ages and durations.

Rich is imported only here, and only when a table is printed, so `offload submit`
stays fast.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from offload.queue.models import State, Task
from offload.queue.store import Stats

__all__ = ["age", "duration", "print_json", "show_stats", "show_task", "show_tasks"]

_STYLE = {
    State.PENDING: "yellow",
    State.RUNNING: "cyan",
    State.COMPLETED: "green",
    State.FAILED: "red",
    State.TIMED_OUT: "red",
    State.CANCELLED: "magenta",
    State.INTERRUPTED: "red",
}


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


def print_json(value: Any) -> None:
    """Writes `value` as indented JSON to stdout."""
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def show_tasks(tasks: Sequence[Task]) -> None:
    """Prints a table: id, state, age, run time, priority, command, progress."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "STATE", "AGE", "TIME", "P", "COMMAND", "PROGRESS"):
        table.add_column(
            column, no_wrap=True, overflow="ellipsis", ratio=1 if column == "COMMAND" else None
        )
    for task in tasks:
        title = task.title.replace("\n", " ")
        label = title if task.type == "shell" else f"[{task.type}] {title}"
        table.add_row(
            task.id[:12],
            Text(task.state.value, style=_STYLE[task.state]),
            age(task.created_at),
            _run_time(task),
            str(task.priority),
            Text(label[:200]),
            _progress(task),
        )
    _console().print(table)


def show_task(task: Task) -> None:
    """Prints every field of one task a person cares about, one per line."""
    from rich.table import Table
    from rich.text import Text

    rows: list[tuple[str, Any]] = [
        ("id", task.id),
        ("state", Text(task.state.value, style=_STYLE[task.state])),
        ("type", task.type),
        (
            "command" if task.type == "shell" else "spec",
            task.title if task.type == "shell" else task.spec,
        ),
        ("name", task.name),
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
        ("log", task.log_path),
        ("model", task.model_used or task.model),
        ("tokens", f"{task.tokens_in} in / {task.tokens_out} out" if task.tokens_in else None),
        ("cost", f"${task.cost_usd:.4f}" if task.cost_usd is not None else None),
        ("output path", task.output_path),
        ("files written", ", ".join(task.files_written) or None),
    ]
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for key, value in rows:
        if value is not None and value != "":
            table.add_row(key, value if isinstance(value, Text) else Text(str(value)))
    _console().print(table)
    _show_environ(task)


def _show_environ(task: Task) -> None:
    """The variables the task was given: the submitter's environment, then its own `env`.

    Values of names that look sensitive are masked (secrets were never stored).
    """
    from offload.policies.submitter_env import masked

    blocks = [("environment (the submitter's)", task.environ), ("env (its own)", task.env)]
    for title, variables in blocks:
        if variables:
            lines = "".join(f"  {k}={v}\n" for k, v in sorted(masked(variables).items()))
            sys.stdout.write(f"{title}:\n{lines}")


def show_stats(stats: Stats) -> None:
    """Prints counts by state and today's and total spending."""
    order = [s.value for s in State]
    counts = "  ".join(f"{s} {stats.counts.get(s, 0)}" for s in order)
    sys.stdout.write(f"{counts}  total {stats.total}\n")
    sys.stdout.write(
        f"cost today ${stats.cost_today_usd:.4f}  all time ${stats.cost_total_usd:.4f}  "
        f"tokens {stats.tokens_in} in / {stats.tokens_out} out\n"
    )
    for day in stats.days:
        if day.finished or day.cost_usd:
            models = ", ".join(f"{m} ${c:.4f}" for m, c in sorted(day.by_model.items()))
            sys.stdout.write(
                f"  {day.day}  {day.finished:5d} finished  ${day.cost_usd:.4f}"
                + (f"  ({models})" if models else "")
                + "\n"
            )
