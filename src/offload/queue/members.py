"""Supervisors as members of one queue, each holding a lease it renews.

On PostgreSQL several hosts share the queue: each supervisor registers as a member (id,
host, pid, labels, capacity) and renews its lease; a live member reaps a member whose lease
ran out, marking its running tasks `interrupted`. A member that finds its own lease lost
must kill its trees: the Store refuses its later writes about those tasks (fencing). On
SQLite the one supervisor per data directory is proven by a lock file instead, and the
member verbs are the single-host trivial case.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from offload.records import record

TYPE_CHECKING = False  # typing costs ~3 ms of every CLI call; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

__all__ = ["LEASE_SECONDS", "Member", "lease_lost_error", "utc_text"]

LEASE_SECONDS = 30.0


@record
class Member:
    """One registered supervisor and its lease (times in UTC milliseconds)."""

    id: str
    host: str
    pid: int
    labels: tuple[str, ...]
    capacity: int
    registered_at: int
    renewed_at: int
    lease_expires_at: int
    lost_at: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Member:
        """Builds a Member from a database row (labels stored as a comma-free JSON list)."""
        import json

        return cls(
            id=row["id"],
            host=row["host"],
            pid=row["pid"],
            labels=tuple(json.loads(row["labels"] or "[]")),
            capacity=row["capacity"],
            registered_at=row["registered_at"],
            renewed_at=row["renewed_at"],
            lease_expires_at=row["lease_expires_at"],
            lost_at=row["lost_at"],
        )

    def alive_at(self, now_ms: int) -> bool:
        """True while the lease runs and nobody has reaped the member."""
        return self.lost_at is None and now_ms < self.lease_expires_at


def utc_text(ms: int) -> str:
    """A millisecond timestamp as a person reads it: `2026-11-28 10:00:00 UTC`."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def lease_lost_error(host: str, renewed_at: int) -> str:
    """The error an interrupted task of a reaped member carries."""
    return f"host {host} stopped renewing its lease at {utc_text(renewed_at)}"
