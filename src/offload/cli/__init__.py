"""The `offload` command: the person's door to the queue.

`main` parses the arguments and dispatches to `offload.cli.commands`, where each command
calls the service layer and renders its answer. Exit codes scripts can rely on:
0 success, 1 an offload error (message on stderr), 2 bad usage, 124 a wait timed out,
130 interrupted (Ctrl-C); `submit --wait` exits with the task's own exit code, or 128+N
when signal N killed it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from offload.cli.app import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    UsageError,
    parse_duration,
)
from offload.errors import OffloadError

__all__ = ["main", "parse_duration", "run"]

# Commands that end as soon as their answer is written; see `run`.
_QUICK = frozenset({"submit", "list", "show", "logs", "wait", "cancel", "retry", "purge", "stats"})


def run() -> None:
    """The `offload` script: `main`, then, after a quick command, an exit without teardown.

    An interpreter's orderly exit frees every module and object one by one: ~6 ms, a
    tenth of an `offload list`. A quick command has written its answer and committed
    its transaction by then, and holds no thread, log handler or child to wind down, so
    it flushes its streams and leaves at once. The long-running commands (`supervisor`,
    `mcp`, `serve`) exit the ordinary way.
    """
    code = main()
    if sys.argv[1:2] and sys.argv[1] in _QUICK:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:  # a closed pipe: nothing more can be said
            code = code or EXIT_ERROR
        os._exit(code)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the `offload` command; returns its exit code."""
    from offload.cli.commands import COMMANDS, App
    from offload.cli.parser import build_parser
    from offload.config import load_settings

    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words)
    args = parser.parse_args(words)
    handler = COMMANDS.get(getattr(args, "handler", None) or "")
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(handler(App(load_settings()), args))
    except UsageError as exc:
        sys.stderr.write(f"offload: {exc}\n")
        return EXIT_USAGE
    except OffloadError as exc:
        sys.stderr.write(f"offload: {exc}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except OSError as exc:  # a full disk, a vanished data dir: one line, no traceback
        from offload.errors import io_error_text

        sys.stderr.write(f"offload: {io_error_text(exc)}\n")
        return EXIT_ERROR
