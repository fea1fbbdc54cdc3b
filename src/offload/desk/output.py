"""Task output behind one interface: front ends ask for a tail, a range or a follow.

No front end opens a log file by path. `LocalOutput` reads the files the executing
supervisor's tasks write in this data dir. `StoreOutput` is for a store that ships output
(PostgreSQL: the host running a task copies its log into the database in chunks at their
byte offsets): it reads the log file where this host has it, and the shipped copy where
it does not (the task ran on another host), with the same bytes and offsets either way.
`output_for` picks one.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

from offload.config import Settings
from offload.errors import StoreError
from offload.logs import Tail, check_read_args, check_tail_args, read_from, read_tail, tail_of_bytes
from offload.queue.models import Task

if TYPE_CHECKING:
    from offload.queue.shared import SharedQueue
    from offload.queue.store import Store

__all__ = [
    "LocalOutput",
    "StoreOutput",
    "TaskOutput",
    "log_path",
    "output_for",
    "remove_task_files",
]


def log_path(settings: Settings, task: Task) -> Path:
    """Where a task's output log is (or will be): the rule, written once."""
    return Path(task.log_path) if task.log_path else settings.logs_dir / f"{task.id}.log"


def remove_task_files(settings: Settings, task: Task) -> None:
    """Deletes a purged task's log, agent transcript and staging copy; missing ones are fine."""
    for path in (log_path(settings, task), settings.logs_dir / f"{task.id}.turns.jsonl"):
        try:
            os.unlink(path)
        except OSError:
            pass
    staging = settings.logs_dir / f"{task.id}.staging"
    if staging.is_dir() and not staging.is_symlink():
        import shutil  # lazily: only purge needs it

        shutil.rmtree(staging, ignore_errors=True)


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


class StoreOutput(TaskOutput):
    """This host's log file when it has one, else the output the running host shipped.

    The choice is made at every read, so a follower switches to the file the moment a
    task starts here; offsets are the log's byte offsets on both sides.
    """

    def __init__(self, settings: Settings, shared: SharedQueue) -> None:
        self.local = LocalOutput(settings)
        self.store = shared

    def _here(self, task: Task) -> bool:
        return os.path.isfile(self.local.path(task))

    def tail(self, task: Task, lines: int, max_bytes: int) -> Tail:
        if self._here(task):
            return self.local.tail(task, lines, max_bytes)
        lines, max_bytes = check_tail_args(lines, max_bytes)
        size = self.store.output_size(task.id)
        # One byte more than the cap, so the cut sees whether a newline precedes it.
        got = self.store.read_output(task.id, max(0, size - max_bytes - 1))
        return tail_of_bytes(got.data, got.start, got.size, lines, max_bytes)

    def read(self, task: Task, offset: int, max_bytes: int = 65_536) -> tuple[bytes, int]:
        if self._here(task):
            return self.local.read(task, offset, max_bytes)
        check_read_args(offset, max_bytes)
        got = self.store.read_output(task.id, offset, max_bytes)
        if got.size < offset:  # started again (a retry), as a recreated log file is
            got = self.store.read_output(task.id, 0, max_bytes)
        return got.data, got.start + len(got.data)

    def size(self, task: Task) -> int:
        if self._here(task):
            return self.local.size(task)
        return self.store.output_size(task.id)


def output_for(settings: Settings, store: Store) -> TaskOutput:
    """How a desk on `store` reads output: shipped output where several hosts share it."""
    shared = store.as_shared()
    return LocalOutput(settings) if shared is None else StoreOutput(settings, shared)
