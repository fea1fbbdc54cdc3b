"""structlog set-up: JSON lines for the supervisor's log, readable text on a terminal.

Logging never kills its process: on a full disk (or any write error) a log line is
dropped, counted, and the count is written once writing works again. The supervisor logs
inside its own error handlers, so a raising log write would take it down with its tasks.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TextIO

import structlog

__all__ = ["SafeStream", "configure_logging", "get_logger"]


class SafeStream:
    """A text stream for log lines whose writes never raise.

    Each line goes out in one `os.write` (to a file descriptor) or one write + flush (to a
    stream without one). A line that cannot be written is dropped and counted; the count
    goes out before the next line that can be.
    """

    def __init__(self, target: int | TextIO) -> None:
        self._target = target
        self._pending: list[str] = []
        self.dropped = 0

    def write(self, text: str) -> int:
        self._pending.append(text)
        if text.endswith("\n"):
            self.flush()
        return len(text)

    def flush(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        note = f'{{"event": "log_lines_dropped", "count": {self.dropped}}}\n'
        if self.dropped and self._emit(note):
            self.dropped = 0
        if not self._emit(text):
            self.dropped += 1

    def _emit(self, text: str) -> bool:
        try:
            if isinstance(self._target, int):
                data = text.encode("utf-8", "replace")
                while data:
                    data = data[os.write(self._target, data) :]
            else:
                self._target.write(text)
                self._target.flush()
            return True
        except (OSError, ValueError):  # ENOSPC, EIO, a closed stream
            return False


def _target(path: Path | None) -> int | TextIO:
    if path is not None:
        try:
            return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            pass  # a full disk or a read-only dir: the log goes to stderr instead
    try:
        return sys.stderr.fileno()
    except (OSError, ValueError, AttributeError):  # a test's captured stderr
        return sys.stderr


def configure_logging(path: Path | None = None, *, json: bool = True) -> None:
    """Sends offload's log to `path` (appended, 0600) or stderr, as JSON lines by default."""
    stream = SafeStream(_target(path))  # lives as long as the process
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(stream),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger bound with the component name."""
    return structlog.get_logger(component=name)
