"""Task output behind one interface: front ends ask for a tail, a range or a follow.

No front end opens a log file by path. `LocalOutput` reads the files the executing
supervisor's tasks write in this data dir; a backend that ships output elsewhere (the
PostgreSQL store does, so any host can read it) plugs in behind the same three verbs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from offload.config import Settings
from offload.errors import StoreError
from offload.logs import Tail, read_from, read_tail
from offload.queue.models import Task

__all__ = ["LocalOutput", "TaskOutput", "log_path"]


def log_path(settings: Settings, task: Task) -> Path:
    """Where a task's output log is (or will be): the rule, written once."""
    return Path(task.log_path) if task.log_path else settings.logs_dir / f"{task.id}.log"


class TaskOutput(ABC):
    """Reads a task's combined stdout and stderr.

    Raises:
        StoreError: The output exists but cannot be read.
    """

    @abstractmethod
    def tail(self, task: Task, lines: int, max_bytes: int) -> Tail:
        """The last `lines` lines of the output, at most `max_bytes` of them."""

    @abstractmethod
    def read(self, task: Task, offset: int, max_bytes: int = 65_536) -> tuple[bytes, int]:
        """Up to `max_bytes` from byte `offset` on, and the offset after them."""

    @abstractmethod
    def size(self, task: Task) -> int:
        """How many bytes of output there are so far."""


class LocalOutput(TaskOutput):
    """Output read from the log files in this data dir."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def path(self, task: Task) -> Path:
        """The task's log file (for the supervisor's side and clean-up only)."""
        return log_path(self.settings, task)

    def tail(self, task: Task, lines: int, max_bytes: int) -> Tail:
        try:
            return read_tail(self.path(task), lines=lines, max_bytes=max_bytes)
        except OSError as exc:
            raise StoreError(f"cannot read the output of task {task.id[:12]}: {exc}") from exc

    def read(self, task: Task, offset: int, max_bytes: int = 65_536) -> tuple[bytes, int]:
        try:
            return read_from(self.path(task), offset, max_bytes)
        except OSError as exc:
            raise StoreError(f"cannot read the output of task {task.id[:12]}: {exc}") from exc

    def size(self, task: Task) -> int:
        try:
            return self.path(task).stat().st_size
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StoreError(f"cannot read the output of task {task.id[:12]}: {exc}") from exc
