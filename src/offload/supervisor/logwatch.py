"""What the supervisor reads from running tasks' logs: progress markers and the output cap.

The child writes its log itself; the supervisor only looks at it, once a second, for the
latest progress marker (stored so every front end sees it) and for a log that passed
`max_output_bytes` (the task is stopped and its log cut there, with a note). Just before a
task's end is written, its last marker of the whole log is stored too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from offload.errors import LeaseLost, OffloadError
from offload.progress import final_progress, progress_of
from offload.queue.models import State
from offload.queue.store import Store
from offload.supervisor.tracker import Running, Tracker

__all__ = ["LogWatch"]

_PROC_FDS = os.path.isdir("/proc/self/fd")


def _outputs(run: Running) -> list[tuple[str, bool]]:
    """Where a task's output goes, and whether to follow a link there: its log path (never
    followed: a task may have put a link there) and, where /proc shows it, its main
    process's stdout (an init or bwrap holds that open for the task's whole life)."""
    if not _PROC_FDS:
        return [(str(run.log_path), False)]
    return [(str(run.log_path), False), (f"/proc/{run.popen.pid}/fd/1", True)]


def _size(path: str, follow: bool) -> int:
    """The size of the regular file at `path`; 0 for anything else or nothing (an init's
    stdout is /dev/null until it opens the log; a process that just exited has no fds).

    Raises:
        OSError: the file is there but cannot be looked at.
    """
    try:
        found = os.stat(path, follow_symlinks=follow)
    except FileNotFoundError:
        return 0
    return found.st_size if stat.S_ISREG(found.st_mode) else 0


def _cut(path: str, cap: int, follow: bool, note: bytes = b"") -> None:
    """Cuts the regular file at `path` down to `cap` bytes (never longer), then adds `note`.

    One open, checked: a link, FIFO or device a task put at the path is left alone.

    Raises:
        OSError: the file cannot be opened or cut.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            return
        if found.st_size > cap:
            os.ftruncate(fd, cap)
        if note:
            os.write(fd, note)
    finally:
        os.close(fd)


class LogWatch:
    """Progress and the output cap of the tasks a Tracker runs."""

    def __init__(self, store: Store, tracker: Tracker, max_output_bytes: int | None, log: Any):
        self.store = store
        self.tracker = tracker
        self.cap = max_output_bytes
        self.log = log
        self._cut: set[str] = set()  # tasks stopped for passing the cap

    def enforce_cap(self, now: float) -> None:
        """Stops a task whose output passed the cap; its log is cut there (again at the end).

        Both the log path and the file the task's main process writes to (its stdout) are
        looked at: a task that removes its log, or swaps an empty file in at the path, is
        still seen, and so is one whose main process sends its own stdout elsewhere.
        """
        if not self.cap:
            return
        for run in self.tracker.running.values():
            if run.kill_state is not None or run.status is not None:
                continue
            try:
                over = [(p, follow) for p, follow in _outputs(run) if _size(p, follow) > self.cap]
                if not over:
                    continue
                for path, follow in over:
                    _cut(path, self.cap, follow)  # frees the disk now
            except OSError as exc:  # a full disk must not keep the task alive
                self.log.error("output_cap_error", task_id=run.task.id, error=str(exc))
            self._cut.add(run.task.id)
            error = f"its output passed max_output_bytes ({self.cap} bytes); the log was cut there"
            self.tracker.start_kill(run, State.FAILED, error, now)

    def update_progress(self) -> None:
        """Stores each running task's latest progress marker when it changed."""
        for run in self.tracker.running.values():
            found = progress_of(run.log_path)
            value = (found.fraction, found.message) if found else (None, None)
            if value != run.progress:
                run.progress = value
                self._store_progress(run, value)

    def before_finish(self, run: Running, state: State) -> None:
        """Cuts an over-long log and records the final progress, before the end is written."""
        if run.task.id in self._cut:
            self._cut.discard(run.task.id)
            self._cut_log(run.log_path)
        try:
            found = final_progress(run.log_path)
        except OSError:
            return
        if found is None:
            return
        fraction = 1.0 if state is State.COMPLETED else found.fraction  # done means 100%
        if (fraction, found.message) != run.progress:
            self._store_progress(run, (fraction, found.message))

    def forget(self, task_id: str) -> None:
        """Drops what is kept about a task whose end will not be written."""
        self._cut.discard(task_id)

    def _store_progress(self, run: Running, value: tuple[float | None, str | None]) -> None:
        try:
            self.store.set_progress(run.task.id, *value, supervisor_id=run.task.supervisor_id)
        except LeaseLost as exc:
            self.tracker.lease_lost = True
            self.log.error("progress_refused", task_id=run.task.id, error=str(exc))
        except OffloadError as exc:
            self.log.error("progress_failed", task_id=run.task.id, error=str(exc))

    def _cut_log(self, path: Path) -> None:
        """Cuts a stopped task's log at the cap and says so at the cut (the tree is dead)."""
        cap = self.cap or 0
        note = f"\n[offload: output cut at {cap} bytes (max_output_bytes); the task was stopped]\n"
        try:
            _cut(str(path), cap, False, note.encode())
        except OSError as exc:
            self.log.error("output_cap_error", path=str(path), error=str(exc))
