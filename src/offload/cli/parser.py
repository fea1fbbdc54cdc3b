"""The argument parser of the `offload` command: every command, option and its help."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TypeAlias

from offload.queue.models import TASK_TYPES, State

__all__ = ["build_parser"]

_EPILOG = """examples:
  offload submit -- make test            run in the background, print the id
  offload submit --wait -- pytest -x     follow the output, exit with its exit code
  offload list                           what is queued, running and done
  offload logs 3f9a2c -f                 follow a task's output (id prefix >= 6 chars)
  offload cancel 3f9a2c                  kill the task's whole process tree
"""


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


_Sub: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _http_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument(
        "--allow-remote", action="store_true", help="allow binding beyond loopback (needs token)"
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name clients may use (repeat; needed with --host 0.0.0.0)",
    )


def _cmd_submit(sub: _Sub) -> None:
    p = sub.add_parser(
        "submit",
        help="queue a task and print its id",
        description="Queue a task. `submit -- CMD...` runs its words, joined with spaces, as "
        "one /bin/sh -c command line, so `offload submit -- 'make && make test'` works; "
        "quote a word that holds spaces or parentheses, or use --argv to skip the shell. "
        "Prints the id; with --wait, prints the task's output instead (the id goes to "
        "stderr) and exits with the task's exit code (128+N if a signal N killed it).",
    )
    p.add_argument("--cwd", help="working directory (inside the workspace)")
    p.add_argument("--timeout", help="kill the task after this long (90, 45s, 30m, 2h)")
    p.add_argument("--priority", type=int, default=5, help="1 (runs first) to 10; default 5")
    p.add_argument("--group", help="named lane: tasks of one group run one at a time by default")
    p.add_argument("--after", action="append", metavar="ID", help="run after this task completes")
    p.add_argument("--env", action="append", metavar="K=V", help="extra environment variable")
    p.add_argument("--name", help="a short name to show instead of the command")
    p.add_argument("--type", default="shell", choices=TASK_TYPES, help="task type (default shell)")
    p.add_argument("--spec", help="what an LLM or agent task should do")
    p.add_argument("--output", help="file an LLM task writes (inside the workspace)")
    p.add_argument("--context", action="append", metavar="FILE", help="file to give an LLM task")
    p.add_argument("--model", help="'auto' or a model alias")
    p.add_argument("--large-context", action="store_true", help="use the 1M-context model")
    p.add_argument("--max-turns", type=int, help="turn limit of an agent task")
    p.add_argument(
        "--sandbox",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run in the bubblewrap sandbox: read-only system, workspace writable, "
        "credentials hidden (default: the `sandbox` setting; auto is off for your own tasks)",
    )
    p.add_argument(
        "--no-network", action="store_true", help="sandboxed, with loopback only (no network)"
    )
    p.add_argument(
        "--on",
        action="append",
        metavar="LABEL",
        help="run only on a supervisor that has this label (repeat: it needs them all)",
    )
    p.add_argument("--batch", metavar="FILE", help="one task per line (command or JSON); - = stdin")
    p.add_argument("--wait", action="store_true", help="print its output; exit with its exit code")
    p.add_argument(
        "--cancel-on-interrupt",
        action="store_true",
        help="with --wait: Ctrl-C cancels the task (by default it keeps running)",
    )
    p.add_argument(
        "--argv",
        action="store_true",
        help="run the words as an argument list, without /bin/sh (no quoting to get right)",
    )
    _add_json(p)
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    p.set_defaults(handler="cmd_submit")


def _cmd_list(sub: _Sub) -> None:
    p = sub.add_parser("list", help="list tasks, newest first")
    p.add_argument("--state", action="append", choices=[s.value for s in State])
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--here", action="store_true", help="only tasks of this directory's workspace")
    _add_json(p)
    p.set_defaults(handler="cmd_list")


def _cmd_show(sub: _Sub) -> None:
    p = sub.add_parser("show", help="everything about one task")
    p.add_argument("id")
    p.add_argument("--turns", action="store_true", help="an agent task's turns, one by one")
    _add_json(p)
    p.set_defaults(handler="cmd_show")


def _cmd_logs(sub: _Sub) -> None:
    p = sub.add_parser("logs", help="a task's output")
    p.add_argument("id")
    p.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    p.add_argument("-f", "--follow", action="store_true", help="keep following while it runs")
    p.set_defaults(handler="cmd_logs")


def _cmd_wait(sub: _Sub) -> None:
    p = sub.add_parser("wait", help="block until tasks finish")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--timeout", help="give up after this long (exit 124)")
    p.add_argument("--any", action="store_true", help="return when the first one finishes")
    _add_json(p)
    p.set_defaults(handler="cmd_wait")


def _cmd_stats(sub: _Sub) -> None:
    p = sub.add_parser("stats", help="counts by state and LLM spending")
    _add_json(p)
    p.set_defaults(handler="cmd_stats")


def _cmd_cancel(sub: _Sub) -> None:
    p = sub.add_parser("cancel", help="cancel a task (kills its whole process tree)")
    p.add_argument("id")
    p.set_defaults(handler="cmd_cancel")


def _cmd_retry(sub: _Sub) -> None:
    p = sub.add_parser("retry", help="queue a failed task again")
    p.add_argument("id", nargs="?")
    p.add_argument("--failed", action="store_true", help="retry every failed task")
    p.set_defaults(handler="cmd_retry")


def _cmd_purge(sub: _Sub) -> None:
    p = sub.add_parser("purge", help="remove finished tasks and their logs")
    p.add_argument("--older-than", metavar="D", help="only tasks finished longer ago (7d, 12h)")
    p.add_argument(
        "--state",
        action="append",
        choices=[s.value for s in State if s not in {State.PENDING, State.RUNNING}],
        help="states to purge (default: completed and cancelled)",
    )
    p.set_defaults(handler="cmd_purge")


def _cmd_supervisor(sub: _Sub) -> None:
    p = sub.add_parser("supervisor", help="run, inspect or stop the supervisor")
    p.add_argument("action", nargs="?", choices=["run", "status", "stop"], default="run")
    p.add_argument("--foreground", action="store_true", help="run in this terminal (default)")
    p.add_argument("--detached", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--labels",
        metavar="LIST",
        help="this supervisor's labels, comma-separated (gpu,linux): it runs tasks "
        "submitted --on them (default: the labels setting)",
    )
    p.add_argument("--drain", action="store_true", help="with stop: let running tasks finish")
    p.add_argument("--timeout", type=float, default=30.0, help="with stop: seconds to wait")
    _add_json(p)
    p.set_defaults(handler="cmd_supervisor")


def _cmd_mcp(sub: _Sub) -> None:
    p = sub.add_parser("mcp", help="run the MCP server over stdio, or HTTP with --http")
    p.add_argument("--workspace", help="workspace root (default: the current directory)")
    p.add_argument("--http", action="store_true", help="serve Streamable HTTP at /mcp")
    _http_options(p)
    p.set_defaults(handler="cmd_mcp")


def _cmd_serve(sub: _Sub) -> None:
    p = sub.add_parser("serve", help="run the HTTP API, the live dashboard and MCP at /mcp")
    p.add_argument("--workspace", help="MCP workspace root (default: the current directory)")
    _http_options(p)
    p.set_defaults(handler="cmd_serve")


def _cmd_service(sub: _Sub) -> None:
    p = sub.add_parser("service", help="install systemd/launchd files for offload")
    p.add_argument("action", choices=["install", "uninstall"])
    p.add_argument("--print", dest="print_only", action="store_true", help="print, write nothing")
    p.set_defaults(handler="cmd_service")


_COMMANDS: dict[str, Callable[[_Sub], None]] = {
    "submit": _cmd_submit,
    "list": _cmd_list,
    "show": _cmd_show,
    "logs": _cmd_logs,
    "wait": _cmd_wait,
    "stats": _cmd_stats,
    "cancel": _cmd_cancel,
    "retry": _cmd_retry,
    "purge": _cmd_purge,
    "supervisor": _cmd_supervisor,
    "mcp": _cmd_mcp,
    "serve": _cmd_serve,
    "service": _cmd_service,
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command-line interface; only the named command's parser when argv names one.

    Building all thirteen sub-parsers costs more than `offload list` itself, so a command
    line that starts with a known command gets just that one (help and errors read the
    same); anything else — no command, `--help`, a typo — gets them all.
    """
    parser = argparse.ArgumentParser(
        prog="offload",
        description="A durable background task queue for AI coding agents and people.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from offload import __version__

    parser.add_argument("--version", action="version", version=f"offload {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")
    first = next((a for a in argv if not a.startswith("-")), None) if argv else None
    if argv and argv[0] == first and first in _COMMANDS:
        _COMMANDS[first](sub)
    else:
        for add in _COMMANDS.values():
            add(sub)
    return parser
