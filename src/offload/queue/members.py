"""Supervisors as members of one queue, each holding a lease it renews.

On PostgreSQL several hosts share the queue: each supervisor registers as a member (id,
host, pid, labels, capacity) and renews its lease; a live member reaps a member whose lease
ran out, marking its running tasks `interrupted`. A member that finds its own lease lost
must kill its trees: the Store refuses its later writes about those tasks (fencing). On
SQLite the one supervisor per data directory is proven by a lock file instead, and the
member verbs are the single-host trivial case.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping

from offload.errors import InvalidInput, LeaseLost, NotFound
from offload.records import record

TYPE_CHECKING = False  # typing costs ~3 ms of every CLI call; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "LABEL_RE",
    "LEASE_SECONDS",
    "MAX_LABELS",
    "Member",
    "check_labels",
    "lease_lost_error",
    "utc_text",
]

LEASE_SECONDS = 30.0
# A host label (`offload supervisor --labels gpu,linux`, `submit --on gpu`): short, and
# free of commas and spaces, so a list of them reads and parses the same everywhere.
LABEL_RE = r"[A-Za-z0-9_.-]{1,32}"
MAX_LABELS = 16


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


def check_labels(values: str | Iterable[object] | None, what: str) -> tuple[str, ...]:
    """The labels `values` names, each checked, duplicates dropped, in order.

    A string, or each string of a list, may hold several labels separated by commas
    (`gpu,linux`), as `--labels` and `OFFLOAD_LABELS` take them.

    Args:
        values: What the user gave.
        what: How a refusal names where the labels came from (`on`, `--labels`).

    Raises:
        InvalidInput: Not strings, a label that breaks LABEL_RE, or too many labels.
    """
    if values is None:
        return ()
    items = [values] if isinstance(values, str) else values
    found: dict[str, None] = {}
    for item in items:
        if not isinstance(item, str):
            raise InvalidInput(f'{what} must be a list of labels (strings), e.g. ["gpu"]')
        for word in item.split(","):
            label = word.strip()
            if not re.fullmatch(LABEL_RE, label):
                raise InvalidInput(
                    f"{what}: {label[:40]!r} is not a label; a label is 1-32 letters, "
                    "digits, '.', '_' or '-' (e.g. gpu), several separated by commas"
                )
            found[label] = None
    if len(found) > MAX_LABELS:
        raise InvalidInput(f"{what} names {len(found)} labels; the limit is {MAX_LABELS}")
    return tuple(found)


def utc_text(ms: int) -> str:
    """A millisecond timestamp as a person reads it: `2026-11-28 10:00:00 UTC`."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def lease_lost_error(host: str, renewed_at: int) -> str:
    """The error an interrupted task of a reaped member carries."""
    return f"host {host} stopped renewing its lease at {utc_text(renewed_at)}"


def check_still_runs(
    row: Mapping[str, Any] | None, task_id: str, supervisor_id: str
) -> Mapping[str, Any]:
    """The fence both backends apply to a supervisor's write about a task: the task's row
    (state, supervisor_id) must show it still running under that supervisor.

    Raises:
        NotFound: The task is gone.
        LeaseLost: It ended or another supervisor runs it; the write is refused.
    """
    if row is None:
        raise NotFound(f"task {task_id} no longer exists")
    if row["state"] != "running" or row["supervisor_id"] != supervisor_id:
        raise LeaseLost(
            f"task {task_id[:12]} is {row['state']} and no longer run by supervisor "
            f"{supervisor_id}; its write was refused"
        )
    return row
