"""What a queue several hosts share offers beyond the Store interface.

On SQLite one supervisor owns the data directory and its lock file proves it; on a shared
queue (PostgreSQL) supervisors on many hosts are members with leases. Front ends need two
things more from such a queue: the clock every host stamps leases by (to tell a live
member from one whose lease ran out) and the output the host running a task shipped (to
read it from any host). `Store.as_shared()` returns this view, or None for a queue only
one host uses, so callers ask once instead of testing for a backend.
"""

from __future__ import annotations

from typing import Protocol

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

    def now_ms(self) -> int:
        """The queue's clock (the server's, in UTC ms): leases compare across hosts by it."""
        ...

    def output_size(self, task_id: str) -> int:
        """Bytes the task's output has reached."""
        ...

    def read_output(self, task_id: str, start: int = 0, limit: int | None = None) -> OutputRange:
        """Up to `limit` bytes of shipped output from byte `start`."""
        ...
