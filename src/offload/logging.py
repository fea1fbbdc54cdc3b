"""structlog set-up: JSON lines for the supervisor's log, readable text on a terminal."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TextIO

import structlog

__all__ = ["configure_logging", "get_logger"]


def configure_logging(path: Path | None = None, *, json: bool = True) -> None:
    """Sends offload's log to `path` (appended, 0600) or stderr, as JSON lines by default."""
    stream: TextIO
    if path is not None:
        path.touch(mode=0o600, exist_ok=True)
        stream = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    else:
        stream = sys.stderr
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
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger bound with the component name."""
    return structlog.get_logger(component=name)
