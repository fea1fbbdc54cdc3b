"""What each `offload` command does: parse its options, call the desk, render the answer.

Front-end rules hold here: every verb goes through the service layer (`offload.desk`);
nothing here runs a task, kills a process or opens a log file by path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offload.config import Settings
from offload.errors import InvalidInput
from offload.queue.models import PURGEABLE_STATES, State, Task

if TYPE_CHECKING:
    from offload.desk import Desk

__all__ = ["COMMANDS", "EXIT_ERROR", "EXIT_TIMEOUT", "EXIT_USAGE", "App", "parse_duration"]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 124
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION_SECONDS = 1e12  # ~31,700 years: beyond it a duration is a typo


def parse_duration(text: str) -> float:
    """Seconds in `90`, `45s`, `30m`, `12h`, `7d` or `2w`; InvalidInput otherwise."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:], None)
    number = value[:-1] if unit else value
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise InvalidInput(
            f"'{text}' is not a duration; use e.g. 90, 45s, 30m, 12h or 7d"
        ) from None
    if not 0 <= seconds < MAX_DURATION_SECONDS:  # also refuses NaN and infinity
        raise InvalidInput(
            f"'{text}' is not a duration in range: it must be at least 0 and under "
            f"{MAX_DURATION_SECONDS:,.0f} seconds (~31,700 years)"
        )
    return seconds


def _cwd() -> Path:
    """The current directory, or InvalidInput when it was deleted under the shell."""
    try:
        return Path.cwd()
    except FileNotFoundError:
        raise InvalidInput("the current directory no longer exists; cd somewhere else") from None


class App:
    """What every command needs: the settings and a desk that sees every workspace.

    The desk (and with it the store) opens on first use, so `--help`-like paths and
    commands that fail on their arguments never touch the database.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._desk: Desk | None = None

    @property
    def desk(self) -> Desk:
        """The service layer, submitting from the current directory."""
        if self._desk is None:
            from offload.desk import open_desk

            try:
                here: Path = Path.cwd()
            except FileNotFoundError:
                here = self.settings.home  # reads still work; submit refuses (see _cwd)
            self._desk = open_desk(
                self.settings, workspace=here, confined=False, environ=os.environ
            )
            self._desk.note = _note
        return self._desk


def _note(text: str) -> None:
    sys.stderr.write(f"offload: {text}\n")


# -- submit ---------------------------------------------------------------------------------
def _submit_fields(args: argparse.Namespace) -> dict[str, Any]:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    fields: dict[str, Any] = {
        "type": args.type,
        "cwd": args.cwd,
        "timeout_seconds": parse_duration(args.timeout) if args.timeout else None,
        "priority": args.priority,
        "group": args.group,
        "depends_on": args.after or None,
        "env": dict(_env_pair(e) for e in args.env) if args.env else None,
        "name": args.name,
        "output_path": args.output,
        "context_files": args.context or None,
        "model": args.model,
        "large_context": True if args.large_context else None,
        "max_turns": args.max_turns,
    }
    if args.type == "shell":
        fields["command"] = " ".join(command) if command else None
    else:
        fields["spec"] = args.spec if args.spec is not None else (" ".join(command) or None)
    return fields


def _env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise InvalidInput(f"--env '{text}' must be NAME=VALUE")
    return name, value


def _batch_entries(source: str) -> list[dict[str, Any]]:
    from offload.submission import MAX_BATCH

    text = _read_batch(source)
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("{"):
            try:
                entry = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"batch line {number}: invalid JSON ({exc.msg})") from None
            entries.append(entry)
        else:
            entries.append({"command": stripped})
    if len(entries) > MAX_BATCH:
        raise InvalidInput(f"the batch has {len(entries)} tasks; the limit is {MAX_BATCH} per call")
    if not entries:
        raise InvalidInput("the batch is empty: give one command or JSON object per line")
    return entries


def _read_batch(source: str) -> str:
    """The text of a batch file (`-`: standard input), or InvalidInput naming the problem."""
    name = "standard input" if source == "-" else f"batch file {source}"
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{name} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from None
    except IsADirectoryError:
        raise InvalidInput(f"{name} is a directory; give a file of one task per line") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {name}: {exc.strerror or exc}") from None


def cmd_submit(app: App, args: argparse.Namespace) -> int:
    _cwd()  # a deleted current directory is refused before anything is stored
    raws = _batch_entries(args.batch) if args.batch else [_submit_fields(args)]
    tasks = app.desk.submit(raws, entry_word="batch entry {n}", batch=bool(args.batch))
    if args.json:
        from offload.cli.render import print_json

        print_json([{"id": t.id, "state": t.state.value} for t in tasks])
    else:
        sys.stdout.write("".join(t.id + "\n" for t in tasks))
    sys.stdout.flush()
    if args.wait and not args.batch:
        return _follow(app, tasks[0].id, exit_with_task=True)
    return 0


# -- following ------------------------------------------------------------------------------
def _follow(app: App, task_id: str, *, exit_with_task: bool = False, offset: int = 0) -> int:
    desk = app.desk
    out = sys.stdout.buffer
    for data in desk.follow(desk.task(task_id), offset):
        out.write(data)
        out.flush()
    if not exit_with_task:
        return 0
    task = desk.task(task_id)
    if task.state is not State.COMPLETED:
        sys.stderr.write(f"offload: task {task.id[:12]} {task.state.value}: {task.error}\n")
    if task.exit_code is not None:
        return task.exit_code
    return {State.COMPLETED: 0, State.TIMED_OUT: EXIT_TIMEOUT}.get(task.state, EXIT_ERROR)


def cmd_logs(app: App, args: argparse.Namespace) -> int:
    from offload.logs import MAX_TAIL_BYTES, check_tail_args

    task = app.desk.task(args.id)
    offset = 0
    if args.tail is not None:
        lines, max_bytes = check_tail_args(args.tail, MAX_TAIL_BYTES)
        tail = app.desk.tail(task, lines, max_bytes)
        sys.stdout.write(tail.text)
        sys.stdout.flush()
        offset = tail.size
    if args.follow:
        return _follow(app, task.id, offset=offset)
    if args.tail is None:
        _copy_output(app, task)
    return 0


def _copy_output(app: App, task: Task) -> None:
    from offload.logs import MAX_TAIL_BYTES

    offset = 0
    while True:
        data, offset = app.desk.read_output(task, offset, MAX_TAIL_BYTES)
        if not data:
            break
        sys.stdout.buffer.write(data)
    sys.stdout.flush()


def cmd_wait(app: App, args: argparse.Namespace) -> int:
    timeout = parse_duration(args.timeout) if args.timeout else None
    mode = "any" if args.any else "all"
    tasks, met = app.desk.wait(args.ids, mode=mode, timeout_seconds=timeout)
    _print_tasks(tasks, args.json)
    if not met:
        from offload.desk.waits import unmet_message

        sys.stderr.write(f"offload: {unmet_message(tasks, timeout)}\n")
        return EXIT_TIMEOUT
    return 0 if all(t.state is State.COMPLETED for t in tasks if t.is_final) else EXIT_ERROR


# -- reading --------------------------------------------------------------------------------
def _print_tasks(tasks: Sequence[Task], as_json: bool) -> None:
    from offload.cli import render

    if as_json:
        render.print_json([t.to_dict() for t in tasks])
    else:
        render.show_tasks(tasks)


def cmd_list(app: App, args: argparse.Namespace) -> int:
    states = [State(s) for s in args.state] if args.state else None
    desk = app.desk.confined_to(str(_cwd().resolve())) if args.here else app.desk
    tasks = desk.listing(states, limit=args.limit, offset=args.offset)
    _print_tasks(tasks, args.json)
    return 0


def cmd_show(app: App, args: argparse.Namespace) -> int:
    from offload.cli import render

    task = app.desk.task(args.id)
    if args.turns:
        from offload.workers.agent.transcript import format_turns

        turns = app.desk.turns(task)
        if args.json:
            render.print_json(turns)
        else:
            sys.stdout.write(format_turns(turns))
        return 0
    if args.json:
        render.print_json(task.to_dict())
    else:
        render.show_task(task)
    return 0


def cmd_stats(app: App, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from offload.cli import render

    stats = app.desk.stats()
    if args.json:
        render.print_json(asdict(stats))
    else:
        render.show_stats(stats)
    return 0


# -- acting ---------------------------------------------------------------------------------
def cmd_cancel(app: App, args: argparse.Namespace) -> int:
    task = app.desk.cancel(args.id)
    if task.state is State.RUNNING:
        tasks, _ = app.desk.wait([task.id], timeout_seconds=app.settings.grace_seconds + 5)
        task = tasks[0] if tasks else task
    word = task.state.value if task.is_final else "cancelling (the supervisor is stopping it)"
    sys.stdout.write(f"{task.id[:12]} {word}\n")
    return 0


def cmd_retry(app: App, args: argparse.Namespace) -> int:
    if args.failed:
        tasks = app.desk.retry_failed()
    elif args.id:
        tasks = [app.desk.retry(args.id)]
    else:
        raise InvalidInput("give a task id, or --failed to retry every failed task")
    sys.stdout.write("".join(f"{t.id[:12]} pending (attempt {t.attempt})\n" for t in tasks))
    if not tasks:
        sys.stdout.write("nothing to retry\n")
    return 0


def cmd_purge(app: App, args: argparse.Namespace) -> int:
    older = parse_duration(args.older_than) if args.older_than else None
    states = [State(s) for s in args.state] if args.state else PURGEABLE_STATES
    purged = app.desk.purge(older, states)
    sys.stdout.write(f"purged {len(purged)} task(s)\n")
    return 0


def cmd_supervisor(app: App, args: argparse.Namespace) -> int:
    from offload.supervisor import control

    return control.run(app.settings, app.desk.store, args)


def cmd_mcp(app: App, args: argparse.Namespace) -> int:
    from offload.mcp_server import main as serve_mcp

    workspace = _workspace(args)
    if args.http:
        from offload.web.serve import run

        return run(
            app.settings,
            args.host,
            args.port,
            args.allow_remote,
            workspace=workspace,
            allowed_hosts=tuple(args.allowed_host),
            mcp_only=True,
        )
    return serve_mcp(app.settings, workspace)


def _workspace(args: argparse.Namespace) -> Path:
    workspace = Path(args.workspace).expanduser() if args.workspace else _cwd()
    if not workspace.is_dir():
        raise InvalidInput(f"--workspace {args.workspace} is not a directory")
    return workspace.resolve()


def cmd_serve(app: App, args: argparse.Namespace) -> int:
    from offload.web.serve import run

    return run(
        app.settings,
        args.host,
        args.port,
        args.allow_remote,
        workspace=_workspace(args),
        allowed_hosts=tuple(args.allowed_host),
    )


def cmd_service(app: App, args: argparse.Namespace) -> int:
    from offload import units

    return units.main(args.action, args.print_only, app.settings)


COMMANDS: dict[str, Callable[[App, argparse.Namespace], int]] = {
    "cmd_submit": cmd_submit,
    "cmd_list": cmd_list,
    "cmd_show": cmd_show,
    "cmd_logs": cmd_logs,
    "cmd_wait": cmd_wait,
    "cmd_stats": cmd_stats,
    "cmd_cancel": cmd_cancel,
    "cmd_retry": cmd_retry,
    "cmd_purge": cmd_purge,
    "cmd_supervisor": cmd_supervisor,
    "cmd_mcp": cmd_mcp,
    "cmd_serve": cmd_serve,
    "cmd_service": cmd_service,
}
