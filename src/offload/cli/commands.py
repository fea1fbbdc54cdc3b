"""What each `offload` command does: parse its options, call the desk, render the answer.

Front-end rules hold here: every verb goes through the service layer (`offload.desk`);
nothing here runs a task, kills a process or opens a log file by path.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from offload.errors import InvalidInput
from offload.queue.models import PURGEABLE_STATES, State, Task

if TYPE_CHECKING:
    pass

from offload.cli.app import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    App,
    UsageError,
    parse_duration,
    require_cwd,
)
from offload.cli.submit import cmd_submit, follow

__all__ = [
    "COMMANDS",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "App",
    "UsageError",
    "parse_duration",
]


def cmd_logs(app: App, args: argparse.Namespace) -> int:
    from offload.logs import MAX_TAIL_BYTES, check_tail_args

    if args.tail is not None:  # a bad --tail is refused before the id is looked up
        lines, max_bytes = check_tail_args(args.tail, MAX_TAIL_BYTES)
    task = app.desk.task(args.id)
    offset = 0
    if args.tail is not None:
        data, offset = _tail_bytes(app, task, lines, max_bytes)
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    if args.follow:
        return follow(app, task.id, offset=offset)
    if args.tail is None:
        _copy_output(app, task)
    return 0


_TAIL_BLOCK_BYTES = 65_536


def _tail_bytes(app: App, task: Task, lines: int, max_bytes: int) -> tuple[bytes, int]:
    """The last `lines` lines of the output as raw bytes (as `logs` prints them), and the size.

    Read backwards a block at a time through the desk, so a 1 GB log costs one block.
    A last line without a newline counts as a line, as in `tail`.
    """
    size = app.desk.output.size(task)
    data = b""
    start = size
    while start > 0 and size - start < max_bytes:
        start = max(0, start - _TAIL_BLOCK_BYTES, size - max_bytes)
        data, _ = app.desk.read_output(task, start, size - start)
        if data.count(b"\n") > lines:
            break
    cut = len(data) - (1 if data.endswith(b"\n") else 0)
    for _ in range(lines):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            break
    data = data[cut + 1 :] if lines else b""
    return data[-max_bytes:], size


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
    _print_tasks(app, tasks, args.json)
    if not met:
        from offload.desk.waits import unmet_message

        sys.stderr.write(f"offload: {unmet_message(tasks, timeout)}\n")
        return EXIT_TIMEOUT
    return 0 if all(t.state is State.COMPLETED for t in tasks if t.is_final) else EXIT_ERROR


# -- reading --------------------------------------------------------------------------------
def _print_tasks(app: App, tasks: Sequence[Task], as_json: bool) -> None:
    """The tasks as JSON or a table; a task no live supervisor can take says why."""
    from offload.cli import render

    waiting = app.desk.waiting(tasks)
    if as_json:
        render.print_json([_with_waiting(t.to_dict(), waiting.get(t.id)) for t in tasks])
        return
    render.show_tasks(tasks)
    for text in dict.fromkeys(waiting.values()):  # one line per distinct reason
        count = sum(1 for v in waiting.values() if v == text)
        sys.stderr.write(f"offload: {count} pending task(s) {text}\n")


def _with_waiting(data: dict[str, object], waiting: str | None) -> dict[str, object]:
    return {**data, "waiting": waiting} if waiting else data


def cmd_list(app: App, args: argparse.Namespace) -> int:
    states = [State(s) for s in args.state] if args.state else None
    desk = app.desk.confined_to(str(require_cwd().resolve())) if args.here else app.desk
    tasks = desk.listing(states, limit=args.limit, offset=args.offset)
    _print_tasks(app, tasks, args.json)
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
    waiting = app.desk.waiting([task]).get(task.id)
    if args.json:
        render.print_json(_with_waiting(task.to_dict(), waiting))
    else:
        render.show_task(task, waiting=waiting)
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

    settings = app.settings
    if args.labels is not None:
        if args.action != "run":
            raise UsageError(
                "--labels is for running a supervisor: offload supervisor --labels gpu"
            )
        from dataclasses import replace

        from offload.queue.members import check_labels

        settings = replace(settings, labels=check_labels(args.labels, "--labels"))
    store = app.desk.store
    if args.action == "status":
        from offload.cli.status import show_status

        return show_status(settings, store, args.json)
    if args.action == "stop":
        return control.run(settings, store, args)
    from offload.desk.routing import announce_labels, withdraw_labels

    record = announce_labels(settings, store)
    try:
        return control.run(settings, store, args)
    finally:
        withdraw_labels(store, record)


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
    workspace = Path(args.workspace).expanduser() if args.workspace else require_cwd()
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
