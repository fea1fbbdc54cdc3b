"""The SQLite implementation of the Store.

`SqliteStore` puts together the connection plumbing (`sqlite_db.SqliteDb`: one connection
per process, WAL, busy timeout, `BEGIN IMMEDIATE` writes, sqlite3 errors become
`StoreError`), the supervisor's side (`sqlite_supervisor`) and, here, the verbs that
submit and read tasks, the actions of people and agents on them, and the event feed.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Iterable, Sequence

from offload.errors import IllegalTransition, InvalidInput
from offload.queue.models import (
    PURGEABLE_STATES,
    RETRYABLE_STATES,
    Event,
    State,
    Task,
    TaskSpec,
    new_task_id,
)
from offload.queue.sqlite_members import SqliteMembers
from offload.queue.stats import read_stats
from offload.queue.store import Stats, Store

TYPE_CHECKING = False  # typing costs ~3 ms of every CLI call; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

__all__ = ["SqliteStore"]

MAX_ROWS = 2**62  # LIMIT and OFFSET are clamped to this: more rows than any queue holds


def _dump(value: Any) -> str | None:
    if value is None:
        return None
    if not value and isinstance(value, (list, tuple, dict)):  # most list and map columns
        return "{}" if isinstance(value, dict) else "[]"
    return json.dumps(value)


class SqliteStore(SqliteMembers, Store):
    """Store backed by one SQLite file (created 0600, its directory 0700)."""

    # -- submitting and reading --------------------------------------------------------
    def submit(self, specs: Sequence[TaskSpec]) -> builtins.list[Task]:
        now = self._clock()
        environs: dict[int, str | None] = {}  # a batch's tasks often share one environment
        with self._write() as db:
            return [self._insert(db, spec, now, environs) for spec in specs]

    def _insert(
        self, db: sqlite3.Connection, spec: TaskSpec, now: int, environs: dict[int, str | None]
    ) -> Task:
        key = id(spec.environ)  # the specs keep each one alive while this runs: ids hold
        if key not in environs:
            environs[key] = _dump(dict(spec.environ)) if spec.environ else None
        environ = environs[key]
        self._check_deps(db, spec.depends_on)
        task_id = new_task_id()
        row = db.execute(
            """INSERT INTO tasks (id, type, state, command, spec, cwd, workspace, timeout_seconds,
                   priority, grp, env, name, labels, output_path, context_files, model,
                   large_context, max_turns, parent_id, created_at, updated_at, policy,
                   environ, run_on)
               VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
                       ?, ?, ?)
               RETURNING *""",
            (
                task_id,
                spec.type,
                _dump(spec.command),
                spec.spec,
                spec.cwd,
                spec.workspace,
                spec.timeout_seconds,
                spec.priority,
                spec.group,
                _dump(dict(spec.env)),
                spec.name,
                _dump(list(spec.labels)),
                spec.output_path,
                _dump(list(spec.context_files)),
                spec.model,
                int(spec.large_context),
                spec.max_turns,
                spec.parent_id,
                now,
                now,
                _dump(dict(spec.policy) if spec.policy is not None else None),
                environ,
                _dump(list(spec.run_on)) if spec.run_on else None,
            ),
        ).fetchone()
        db.executemany(
            "INSERT OR IGNORE INTO deps (task_id, depends_on) VALUES (?, ?)",
            [(task_id, dep) for dep in spec.depends_on],
        )
        self._event(db, task_id, "submitted", now, state="pending", type=spec.type)
        return Task.from_row(row, spec.depends_on)

    def _check_deps(self, db: sqlite3.Connection, deps: Sequence[str]) -> None:
        for dep in deps:
            row = db.execute("SELECT id, state FROM tasks WHERE id = ?", (dep,)).fetchone()
            if row is None:
                raise InvalidInput(f"dependency {dep} does not exist; give the full id of a task")
            if row["state"] in RETRYABLE_STATES:
                raise InvalidInput(
                    f"dependency {dep[:12]} is {row['state']}; "
                    "retry it first or drop the dependency"
                )

    def get(self, task_id: str) -> Task:
        return self._read(lambda db: self._task(db, self._resolve(db, task_id)))

    def get_many(self, task_ids: Iterable[str]) -> builtins.list[Task]:
        def fetch(db: sqlite3.Connection) -> builtins.list[Task]:
            out = []
            for task_id in task_ids:
                row = db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
                if row is not None:
                    out.append(self._task(db, row))
            return out

        return self._read(fetch)

    def list(
        self,
        states: Iterable[State] | None = None,
        *,
        limit: int = 50,
        offset: int = 0,
        workspace: str | None = None,
        parent_id: str | None = None,
    ) -> builtins.list[Task]:
        where: builtins.list[str] = []
        params: builtins.list[Any] = []
        if states is not None:
            values = [State(s).value for s in states]
            where.append(f"state IN ({', '.join('?' * len(values))})")
            params += values
        if workspace is not None:
            where.append("workspace = ?")
            params.append(workspace)
        if parent_id is not None:
            where.append("parent_id = ?")
            params.append(parent_id)
        sql = "SELECT * FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ? OFFSET ?"
        params += [_clamp_rows(limit), _clamp_rows(offset)]
        return self._read(lambda db: [self._task(db, r) for r in db.execute(sql, params)])

    def stats(self, now_ms: int, days: int = 14) -> Stats:
        return self._read(lambda db: read_stats(db, now_ms, days))

    def running(self) -> builtins.list[Task]:
        return self.list([State.RUNNING], limit=1_000_000)

    # -- people and agents acting on tasks ---------------------------------------------
    def request_cancel(self, task_id: str) -> Task:
        now = self._clock()
        with self._write() as db:
            task_id = self._resolve(db, task_id)["id"]
            row = self._transition(
                db,
                task_id,
                {State.PENDING, State.RUNNING},
                "cancel",
                "state = CASE state WHEN 'pending' THEN 'cancelled' ELSE state END, "
                "finished_at = CASE state WHEN 'pending' THEN :now ELSE finished_at END, "
                "error = CASE state WHEN 'pending' THEN 'cancelled before it started' "
                "ELSE error END, "
                "cancel_requested = CASE state WHEN 'running' THEN 1 ELSE 0 END, updated_at = :now",
                {"now": now},
            )
            if row["state"] == State.CANCELLED:
                self._event(db, task_id, "finished", now, state="cancelled")
                self._fail_dependents(db, task_id, State.CANCELLED, now)
            else:
                self._event(db, task_id, "cancel_requested", now, state="running")
            return self._task(db, row)

    def retry(self, task_id: str) -> Task:
        now = self._clock()
        with self._write() as db:
            task_id = self._resolve(db, task_id)["id"]
            blocker = self._retry_blocker(db, task_id)
            if blocker is not None:
                raise IllegalTransition(blocker)
            return self._retry_one(db, task_id, now)

    def _retry_blocker(self, db: sqlite3.Connection, task_id: str) -> str | None:
        """Why the task cannot be retried yet (a dependency that did not finish), or None."""
        for dep in self._deps(db, task_id):
            row = db.execute("SELECT state FROM tasks WHERE id = ?", (dep,)).fetchone()
            if row is not None and row[0] in RETRYABLE_STATES:
                return (
                    f"cannot retry task {task_id[:12]}: its dependency {dep[:12]} is {row[0]}; "
                    "retry that one first"
                )
        return None

    def _retry_one(self, db: sqlite3.Connection, task_id: str, now: int) -> Task:
        row = self._transition(
            db,
            task_id,
            RETRYABLE_STATES,
            "retry",
            "state = 'pending', attempt = attempt + 1, updated_at = :now, started_at = NULL, "
            "finished_at = NULL, exit_code = NULL, signal = NULL, error = NULL, pid = NULL, "
            "pgid = NULL, proc_start = NULL, cgroup = NULL, supervisor_id = NULL, "
            "cancel_requested = 0, progress = NULL, progress_message = NULL",
            {"now": now},
        )
        self._event(db, task_id, "retried", now, state="pending", attempt=row["attempt"])
        return self._task(db, row)

    def retry_failed(self, workspace: str | None = None) -> builtins.list[Task]:
        now = self._clock()
        states = sorted(s.value for s in RETRYABLE_STATES - {State.CANCELLED})
        sql = f"SELECT id FROM tasks WHERE state IN ({', '.join('?' * len(states))})"
        params: builtins.list[Any] = list(states)
        if workspace is not None:
            sql += " AND workspace = ?"
            params.append(workspace)
        with self._write() as db:
            ids = [r[0] for r in db.execute(sql + " ORDER BY seq", params).fetchall()]
            # In submission order a dependency is retried before its dependents (it was
            # submitted first); a task whose dependency stays cancelled is left as it is.
            return [
                self._retry_one(db, task_id, now)
                for task_id in ids
                if self._retry_blocker(db, task_id) is None
            ]

    def purge(
        self,
        *,
        older_than_ms: int | None = None,
        states: Iterable[State] = PURGEABLE_STATES,
        workspace: str | None = None,
    ) -> builtins.list[Task]:
        now = self._clock()
        names = sorted(State(s).value for s in states)
        bad = set(names) - {s.value for s in RETRYABLE_STATES | PURGEABLE_STATES}
        if bad:
            raise IllegalTransition(
                f"cannot purge {', '.join(sorted(bad))} tasks: cancel them first"
            )
        sql = f"DELETE FROM tasks WHERE state IN ({', '.join('?' * len(names))})"
        params: builtins.list[Any] = list(names)
        if older_than_ms is not None:
            if older_than_ms < 0:
                raise InvalidInput("older-than must be zero or more")
            sql += " AND coalesce(finished_at, updated_at) < ?"
            params.append(now - min(older_than_ms, now))  # beyond the epoch: nothing is older
        if workspace is not None:
            sql += " AND workspace = ?"
            params.append(workspace)
        with self._write() as db:
            rows = db.execute(sql + " RETURNING *", params).fetchall()
            purged = [Task.from_row(r) for r in rows]
            for task in purged:
                db.execute("DELETE FROM deps WHERE task_id = ?", (task.id,))
                self._event(db, task.id, "purged", now, state=task.state.value)
        return purged

    # -- the change feed ---------------------------------------------------------------
    def events_since(
        self, cursor: int, *, limit: int = 500, task_ids: Iterable[str] | None = None
    ) -> builtins.list[Event]:
        sql = "SELECT * FROM events WHERE seq > ?"
        params: builtins.list[Any] = [cursor]
        if task_ids is not None:
            ids = builtins.list(task_ids)
            sql += f" AND task_id IN ({', '.join('?' * len(ids))})"
            params += ids
        sql += " ORDER BY seq LIMIT ?"
        params.append(_clamp_rows(limit))
        return self._read(lambda db: [Event.from_row(r) for r in db.execute(sql, params)])

    def last_event_seq(self) -> int:
        return self._read(
            lambda db: db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        )


def _clamp_rows(count: int) -> int:
    """A LIMIT or OFFSET within 0..MAX_ROWS, so no count overflows SQLite's 64-bit integer."""
    return max(0, min(count, MAX_ROWS))
