"""What a queue several hosts share offers beyond the Store interface.

On SQLite one supervisor owns the data directory and its lock file proves it; on a shared
queue (PostgreSQL) supervisors on many hosts are members with leases. Front ends need two
things more from such a queue: the clock every host stamps leases by (to tell a live
member from one whose lease ran out) and the output the host running a task shipped (to
read it from any host). A supervisor needs a few more: a socket that becomes readable
when another host changes the queue, the tasks earlier members left behind, a bound on
how long a call may block on an unreachable server, and somewhere to ship task output.
`Store.as_shared()` returns this view, or None for a queue only one host uses, so callers
ask once instead of testing for a backend.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from offload.queue.models import State, Task

__all__ = ["OutputRange", "SharedQueue"]


class OutputRange(Protocol):
    """Bytes `start`..`start + len(data)` of a task's shipped output; `size` is all it wrote."""

    @property
    def start(self) -> int: ...
    @property
    def data(self) -> bytes: ...
    @property
    def size(self) -> int: ...


class SharedQueue(Protocol):
    """The shared-queue side of a Store (see the module docstring)."""

    max_output_bytes: int

    def now_ms(self) -> int:
        """The queue's clock (the server's, in UTC ms): leases compare across hosts by it."""
        ...

    def wake_fileno(self) -> int:
        """A socket that becomes readable when any host appends an event (LISTEN/NOTIFY).

        Listening starts on the first call, so nothing announced after it is missed.

        Raises:
            StoreError: The server cannot be reached.
        """
        ...

    def take_wakes(self) -> set[str]:
        """Consumes what woke `wake_fileno()` without blocking; returns the event kinds.

        Raises:
            StoreError: The listening connection broke; the next `wake_fileno()` reconnects.
        """
        ...

    def limit_waits(self, seconds: float) -> None:
        """Bounds how long one call may block on an unreachable server (connect, pool,
        unacknowledged sends), so a supervisor cut off from it still runs its loop."""
        ...

    def tasks_of_members(self, member_ids: Iterable[str], states: Iterable[State]) -> list[Task]:
        """Tasks in `states` that the members `member_ids` claimed, oldest first."""
        ...

    def append_output(
        self, task_id: str, offset: int, data: bytes, *, supervisor_id: str | None = None
    ) -> int:
        """Stores `data` found at byte `offset` of the task's log; returns the new size.

        Raises:
            LeaseLost: `supervisor_id` no longer runs the task (fencing).
        """
        ...

    def output_size(self, task_id: str) -> int:
        """Bytes the task's output has reached."""
        ...

    def read_output(self, task_id: str, start: int = 0, limit: int | None = None) -> OutputRange:
        """Up to `limit` bytes of shipped output from byte `start`."""
        ...

    def output_tail(self, task_id: str, nbytes: int) -> bytes:
        """The last `nbytes` bytes of the task's shipped output."""
        ...
