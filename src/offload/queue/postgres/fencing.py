"""Fencing on PostgreSQL: refusing writes and claims by a supervisor that lost its lease.

A supervisor names itself in every write about a task it runs and in every claim. The
write is refused (`LeaseLost`) unless the task is still running under that supervisor and
its lease holds; a claim is refused when the claimer is a member whose lease ran out. Both
checks lock what they read, so a reaper on another host cannot slip in between.
"""

from __future__ import annotations

from offload.errors import LeaseLost
from offload.queue.members import check_still_runs
from offload.queue.postgres.db import PgDb, Tx

__all__ = ["PgFencing"]


class PgFencing(PgDb):
    """The two fences the supervisor's verbs put first in their transactions."""

    def _fence_claim(self, tx: Tx, supervisor_id: str, now: int) -> None:
        """Refuses a claim by a member whose lease ran out.

        Its row stays share-locked until the claim commits, so a reaper (which skips
        locked members) cannot mark it lost in between: the tasks claimed are then its
        running tasks when it is reaped, never tasks of a member nobody reaps again. A
        claimer that never registered (a single host, a benchmark) is not a member.
        """
        member = tx.execute(
            "SELECT lost_at, lease_expires_at FROM members WHERE id = %s FOR SHARE",
            (supervisor_id,),
        )
        if member is not None and (
            member["lost_at"] is not None or member["lease_expires_at"] <= now
        ):
            raise LeaseLost(
                f"supervisor {supervisor_id} lost its lease and may not claim; "
                "it registers again under a new id"
            )

    def _fence(self, tx: Tx, task_id: str, supervisor_id: str | None, now: int) -> None:
        """Refuses a write by `supervisor_id` about a task it no longer runs.

        The task row is locked first, so a reaper cannot interrupt it between this check
        and the write; a member whose lease ran out is refused even before it is reaped.
        """
        if supervisor_id is None:
            return
        row = tx.execute(
            "SELECT t.state, t.supervisor_id, m.lost_at, m.lease_expires_at "
            "FROM tasks t LEFT JOIN members m ON m.id = %(sup)s "
            "WHERE t.id = %(id)s FOR UPDATE OF t",
            {"sup": supervisor_id, "id": task_id},
        )
        checked = check_still_runs(row, task_id, supervisor_id)
        expires = checked["lease_expires_at"]
        if checked["lost_at"] is not None or (expires is not None and expires <= now):
            raise LeaseLost(
                f"supervisor {supervisor_id} lost its lease; its write about task "
                f"{task_id[:12]} was refused"
            )
