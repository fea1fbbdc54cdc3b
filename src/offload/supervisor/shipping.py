"""Shipping running tasks' output into a shared queue, so any host can read it.

The local log file stays the source on the executing host (the child writes it itself).
Every `SHIP_INTERVAL_SECONDS` the supervisor sends each running task's new bytes, at their
byte offsets, and the remainder just before it writes the task's end; readers on any host
are then at most about a second behind. The queue keeps at most its `max_output_bytes` per
task, so a task that wrote more since the last round has only its last that many bytes
sent. Every chunk names the member that claimed the task: a fenced member's are refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from offload.errors import LeaseLost, OffloadError
from offload.logs import open_if_exists
from offload.queue.shared import SharedQueue
from offload.supervisor.tracker import Running, Tracker

__all__ = ["CHUNK_BYTES", "SHIP_INTERVAL_SECONDS", "Shipper"]

SHIP_INTERVAL_SECONDS = 0.5
CHUNK_BYTES = 1 << 20  # one row of output_chunks at most


class Shipper:
    """Sends new log bytes of the Tracker's running tasks to the shared queue."""

    def __init__(self, shared: SharedQueue, tracker: Tracker, log: Any) -> None:
        self.shared = shared
        self.tracker = tracker
        self.log = log
        self.next_at = 0.0  # monotonic time of the next round
        self._sent: dict[str, int] = {}  # task id -> bytes of its log already shipped
        self._failing = ""

    def ship_running(self, now: float) -> None:
        """One round: the new bytes of every running task whose end is still ours."""
        self.next_at = now + SHIP_INTERVAL_SECONDS
        runs = [r for r in self.tracker.running.values() if r.task.id not in self.tracker.abandoned]
        self._forget_others(r.task.id for r in runs)
        for run in runs:
            if not self._ship(run):
                return  # the queue is unreachable: the next round catches up

    def ship_rest(self, run: Running) -> None:
        """Sends what is left of a finishing task's log (its end is written next)."""
        self._ship(run)
        self._sent.pop(run.task.id, None)

    def _ship(self, run: Running) -> bool:
        """Sends `run`'s unsent bytes; False when the queue could not be reached."""
        task_id = run.task.id
        sent = self._sent.get(task_id, 0)
        try:
            fd = open_if_exists(run.log_path)
            if fd is None:
                return True  # not created yet (its init creates it), or never: nothing to ship
            with os.fdopen(fd, "rb") as log:
                size = os.fstat(log.fileno()).st_size
                start = max(sent, size - self.shared.max_output_bytes)
                log.seek(start)
                while start < size:
                    data = log.read(min(CHUNK_BYTES, size - start))
                    if not data:
                        break
                    self.shared.append_output(
                        task_id, start, data, supervisor_id=run.task.supervisor_id
                    )
                    start += len(data)
                    self._sent[task_id] = start
        except OSError as exc:  # the log is unreadable: nothing to ship
            self.log.error("ship_unreadable", task_id=task_id, error=str(exc))
        except LeaseLost as exc:
            self.tracker.lease_lost = True
            self.log.error("ship_refused", task_id=task_id, error=str(exc))
        except OffloadError as exc:
            if str(exc) != self._failing:
                self._failing = str(exc)
                self.log.error("ship_failed", task_id=task_id, error=str(exc))
            return False
        self._failing = ""
        return True

    def _forget_others(self, running: Iterable[str]) -> None:
        keep = set(running)
        for task_id in [t for t in self._sent if t not in keep]:
            del self._sent[task_id]
