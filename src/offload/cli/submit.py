"""`offload submit`: turning words and options into task fields, and `--wait` following.

Also the follower `logs -f` shares. Every verb goes through the desk (`offload.desk`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offload.errors import InvalidInput
from offload.queue.models import State

if TYPE_CHECKING:
    pass

from offload.cli.app import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_TIMEOUT,
    App,
    UsageError,
    parse_duration,
    require_cwd,
)

__all__ = ["cmd_submit", "follow"]

_SHELL_SPECIAL = set(" \t\n'\"()<>;&|$`*?[]{}#~\\")


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
        "sandbox": args.sandbox,
        "network": False if args.no_network else None,
        "on": args.on,
    }
    if args.type == "shell":
        if not command:
            raise UsageError("submit needs a command: offload submit -- CMD... (or --batch FILE)")
        fields["command"] = command if args.argv else _shell_line(command)
    else:
        fields["spec"] = args.spec if args.spec is not None else (" ".join(command) or None)
    return fields


def _shell_line(words: list[str]) -> str:
    """The words joined for /bin/sh -c; UsageError when the join broke their quoting.

    `submit -- python -c "print(1)"` reaches us as three words; joined, the quotes the
    shell removed are gone and /bin/sh sees `python -c print(1)`. When a word holds
    characters the shell treats specially, `sh -n` checks the joined line's syntax (a
    parse, nothing runs) and a failure names the two ways out.
    """
    line = " ".join(words)
    if len(words) < 2 or not any(_SHELL_SPECIAL.intersection(w) for w in words[1:]):
        return line
    import shlex
    import subprocess

    check = subprocess.run(
        ["/bin/sh", "-n", "-c", line], capture_output=True, text=True, check=False
    )
    if check.returncode == 0:
        return line
    said = check.stderr.strip().splitlines()[-1:] or ["syntax error"]
    raise UsageError(
        f"the command's words are joined with spaces and run by /bin/sh, which lost their "
        f"quoting: /bin/sh says {said[0]!r}. Quote the whole command as one word:\n"
        f"  offload submit -- {_one_word(shlex.join(words))}\n"
        f"or run the words as they are, without a shell:\n"
        f"  offload submit --argv -- {shlex.join(words)}"
    )


def _one_word(line: str) -> str:
    """`line` quoted as one shell word, in double quotes when that reads plainly."""
    if not set('"$`\\!').intersection(line):
        return f'"{line}"'
    import shlex

    return shlex.quote(line)


def _env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise InvalidInput(f"--env '{text}' must be NAME=VALUE")
    return name, value


def _batch_entries(source: str) -> list[dict[str, Any]]:
    import json

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
    require_cwd()  # a deleted current directory is refused before anything is stored
    raws = _batch_entries(args.batch) if args.batch else [_submit_fields(args)]
    tasks = app.desk.submit(raws, entry_word="batch entry {n}", batch=bool(args.batch))
    if args.wait and not args.batch:
        # The task's output is what stdout carries; offload's own words go to stderr.
        return _wait_for(app, tasks[0].id, cancel_on_interrupt=args.cancel_on_interrupt)
    if args.json:
        from offload.cli.render import print_json

        print_json([{"id": t.id, "state": t.state.value} for t in tasks])
    else:
        sys.stdout.write("".join(t.id + "\n" for t in tasks))
    sys.stdout.flush()
    return 0


def _wait_for(app: App, task_id: str, *, cancel_on_interrupt: bool) -> int:
    """Follows a submitted task; on Ctrl-C says what became of it (or cancels it)."""
    try:
        sys.stderr.write(f"offload: task {task_id} submitted\n")
        sys.stderr.flush()
        return follow(app, task_id, exit_with_task=True)
    except KeyboardInterrupt:
        short = task_id[:8]
        if cancel_on_interrupt:
            task = app.desk.cancel(task_id)
            word = task.state.value if task.is_final else "being cancelled"
            sys.stderr.write(f"\noffload: interrupted; task {short} {word}\n")
        else:
            sys.stderr.write(
                f"\noffload: stopped waiting; task {short} is still running.\n"
                f"  follow it:  offload logs -f {short}\n"
                f"  cancel it:  offload cancel {short}\n"
            )
        return EXIT_INTERRUPTED


# -- following ------------------------------------------------------------------------------
def follow(app: App, task_id: str, *, exit_with_task: bool = False, offset: int = 0) -> int:
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
    if task.signal:
        return 128 + task.signal  # as a shell reports a death by signal
    return {State.COMPLETED: 0, State.TIMED_OUT: EXIT_TIMEOUT}.get(task.state, EXIT_ERROR)
