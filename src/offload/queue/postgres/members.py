"""Members and leases on PostgreSQL: the verbs behind several hosts sharing one queue.

A lease is a time on the server's clock (every host stamps times by it, see db.py). A
member whose lease ran out is reaped by whichever live member looks first: in one
transaction its row is marked lost and its running tasks become `interrupted`. Rows are
locked SKIP LOCKED, so two reapers never reap the same member twice.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence

from offload.errors import LeaseLost
from offload.queue.members import LEASE_SECONDS, Member, lease_lost_error
from offload.queue.models import State, Task
from offload.queue.postgres.db import Row, Tx
from offload.queue.postgres.tasks import PgTasks

__all__ = ["PgMembers"]


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class PgMembers(PgTasks):
    """Registering members, renewing and reaping leases."""

    def register_member(
        self,
        member_id: str,
        *,
        host: str,
        pid: int,
        labels: Sequence[str] = (),
        capacity: int,
        lease_seconds: float = LEASE_SECONDS,
    ) -> Member:
        now = self._clock()
        with self._tx() as tx:
            row = tx.execute(
                "INSERT INTO members (id, host, pid, labels, capacity, registered_at, "
                "renewed_at, lease_expires_at) "
                "VALUES (%(id)s, %(host)s, %(pid)s, %(labels)s, %(cap)s, %(now)s, %(now)s, "
                "%(until)s) "
                "ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
                "labels = excluded.labels, capacity = excluded.capacity, "
                "renewed_at = excluded.renewed_at, lease_expires_at = excluded.lease_expires_at "
                "WHERE members.lost_at IS NULL RETURNING *",
                {
                    "id": member_id,
                    "host": host,
                    "pid": pid,
                    "labels": json.dumps(list(labels)),
                    "cap": capacity,
                    "now": now,
                    "until": now + _ms(lease_seconds),
                },
            )
            if row is None:
                raise LeaseLost(
                    f"supervisor {member_id} lost its lease and was reaped; "
                    "register again under a new id"
                )
            tx.event(None, "member_joined", now, member=member_id, host=host)
            return Member.from_row(row)

    def renew_lease(self, member_id: str, lease_seconds: float = LEASE_SECONDS) -> bool:
        now = self._clock()
        with self._tx() as tx:
            row = tx.execute(
                "UPDATE members SET renewed_at = %(now)s, lease_expires_at = %(until)s "
                "WHERE id = %(id)s AND lost_at IS NULL AND lease_expires_at > %(now)s "
                "RETURNING id",
                {"now": now, "until": now + _ms(lease_seconds), "id": member_id},
            )
            return row is not None

    def reap_expired_members(self, now_ms: int) -> builtins.list[Task]:
        with self._tx() as tx:
            expired = tx.rows(
                "SELECT * FROM members WHERE lost_at IS NULL AND lease_expires_at <= %s "
                "ORDER BY id FOR UPDATE SKIP LOCKED",
                (now_ms,),
            )
            tasks: builtins.list[Task] = []
            for member in expired:
                tx.execute("UPDATE members SET lost_at = %s WHERE id = %s", (now_ms, member["id"]))
                error = lease_lost_error(member["host"], member["renewed_at"])
                tasks += self._interrupt_all(tx, member, error, now_ms)
                tx.event(None, "member_lost", now_ms, member=member["id"], host=member["host"])
            return tasks

    def _interrupt_all(self, tx: Tx, member: Row, error: str, now: int) -> builtins.list[Task]:
        rows = tx.rows(
            "UPDATE tasks SET state = 'interrupted', error = %(error)s, finished_at = %(now)s, "
            "updated_at = %(now)s, cancel_requested = false "
            "WHERE supervisor_id = %(sup)s AND state = 'running' RETURNING *",
            {"error": error, "now": now, "sup": member["id"]},
        )
        rows.sort(key=lambda r: r["seq"])
        for row in rows:
            tx.event(row["id"], "finished", now, state="interrupted", error=error)
            self._fail_dependents(tx, row["id"], State.INTERRUPTED, now)
        return self._tasks(tx, rows)

    def members(self) -> builtins.list[Member]:
        rows = self._read(lambda tx: tx.rows("SELECT * FROM members ORDER BY registered_at, id"))
        return [Member.from_row(r) for r in rows]

    def retire_member(self, member_id: str) -> builtins.list[Task]:
        now = self._clock()
        with self._tx() as tx:
            member = tx.execute("DELETE FROM members WHERE id = %s RETURNING *", (member_id,)) or {
                "id": member_id,
                "host": "its host",
            }
            error = f"the supervisor on {member['host']} stopped while it ran"
            tasks = self._interrupt_all(tx, member, error, now)
            tx.event(None, "member_left", now, member=member_id)
            return tasks
