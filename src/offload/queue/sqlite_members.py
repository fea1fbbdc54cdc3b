"""Member verbs on SQLite: the single-host case of queue/members.py.

One supervisor per data directory is proven by its lock file, so nobody else can reap it:
a lease here is a record (`offload supervisor status` can show it) that stays valid while
registered, and `reap_expired_members` finds nothing. Fencing still holds: a write that
names a supervisor is refused unless the task is running under it.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Sequence

from offload.queue.members import LEASE_SECONDS, Member
from offload.queue.models import Task
from offload.queue.sqlite_supervisor import SqliteSupervisorSide

__all__ = ["SqliteMembers"]

_KEY = "member:"


class SqliteMembers(SqliteSupervisorSide):
    """Registers the one supervisor of a data directory as a member."""

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
        member = Member(
            id=member_id,
            host=host,
            pid=pid,
            labels=tuple(labels),
            capacity=capacity,
            registered_at=now,
            renewed_at=now,
            lease_expires_at=now + int(lease_seconds * 1000),
        )
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                (_KEY + member_id, json.dumps({**member.__dict__, "labels": list(labels)})),
            )
        return member

    def renew_lease(self, member_id: str, lease_seconds: float = LEASE_SECONDS) -> bool:
        now = self._clock()
        with self._write() as db:
            member = _load(db, member_id)
            if member is None:
                return False
            value = {
                **member,
                "renewed_at": now,
                "lease_expires_at": now + int(lease_seconds * 1000),
            }
            db.execute(
                "UPDATE meta SET value = ? WHERE key = ?", (json.dumps(value), _KEY + member_id)
            )
            return True

    def reap_expired_members(self, now_ms: int) -> builtins.list[Task]:
        return []

    def members(self) -> builtins.list[Member]:
        rows = self._read(
            lambda db: db.execute(
                "SELECT value FROM meta WHERE key >= ? AND key < ?", (_KEY, _KEY[:-1] + ";")
            ).fetchall()
        )
        found = [
            Member.from_row({**v, "labels": json.dumps(v["labels"])}) for v in map(_value, rows)
        ]
        return sorted(found, key=lambda m: (m.registered_at, m.id))

    def retire_member(self, member_id: str) -> builtins.list[Task]:
        now = self._clock()
        with self._write() as db:
            member = _load(db, member_id)
            db.execute("DELETE FROM meta WHERE key = ?", (_KEY + member_id,))
            host = member["host"] if member else "this host"
            rows = db.execute(
                "UPDATE tasks SET state = 'interrupted', error = ?, finished_at = ?, "
                "updated_at = ?, cancel_requested = 0 "
                "WHERE supervisor_id = ? AND state = 'running' RETURNING *",
                (f"the supervisor on {host} stopped while it ran", now, now, member_id),
            ).fetchall()
            tasks = [self._task(db, r) for r in rows]
            for task in tasks:
                self._event(db, task.id, "finished", now, state="interrupted", error=task.error)
                self._fail_dependents(db, task.id, task.state, now)
            return tasks


def _load(db: sqlite3.Connection, member_id: str) -> dict | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (_KEY + member_id,)).fetchone()
    return None if row is None else _value(row)


def _value(row: sqlite3.Row) -> dict:
    return dict(json.loads(row[0]))
