"""The PostgreSQL Store's verbs for submitting and reading tasks, acting on them, and the feed.

The same rules and messages as the SQLite Store (queue/sqlite.py); the contract suite in
tests/test_store.py runs against both.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterable, Sequence
from typing import Any

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
from offload.queue.postgres.db import Tx
from offload.queue.postgres.running import PgRunning
from offload.queue.postgres.stats import read_stats
from offload.queue.store import Stats

__all__ = ["PgTasks"]

MAX_ROWS = 2**62


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _rows(count: int) -> int:
    return max(0, min(count, MAX_ROWS))


class PgTasks(PgRunning):
    """Submitting, reading, cancelling, retrying and purging tasks; the change feed."""

    def submit(self, specs: Sequence[TaskSpec]) -> builtins.list[Task]:
        now = self._clock()
        with self._tx() as tx:
            return [self._insert(tx, spec, now) for spec in specs]

    def _insert(self, tx: Tx, spec: TaskSpec, now: int) -> Task:
        self._check_deps(tx, spec.depends_on)
        task_id = new_task_id()
        row = tx.execute(
            """INSERT INTO tasks (id, type, state, command, spec, cwd, workspace,
                   timeout_seconds, priority, grp, env, name, labels, output_path,
                   context_files, model, large_context, max_turns, parent_id, created_at,
                   updated_at, policy, environ, run_on)
               VALUES (%s, %s, 'pending', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                   %s, %s, %s, %s, %s, %s, %s, %s)
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
                bool(spec.large_context),
                spec.max_turns,
                spec.parent_id,
                now,
                now,
                _dump(dict(spec.policy) if spec.policy is not None else None),
                _dump(dict(spec.environ)) if spec.environ else None,
                _dump(list(spec.run_on)) if spec.run_on else None,
            ),
        )
        assert row is not None
        if spec.depends_on:
            tx.execute(
                "INSERT INTO deps (task_id, depends_on) SELECT %s, d FROM unnest(%s::text[]) d "
                "ON CONFLICT DO NOTHING",
                (task_id, list(spec.depends_on)),
            )
        if spec.group is not None:
            tx.execute("INSERT INTO groups (grp) VALUES (%s) ON CONFLICT DO NOTHING", (spec.group,))
        tx.event(task_id, "submitted", now, state="pending", type=spec.type)
        return Task.from_row(row, spec.depends_on)

    def _check_deps(self, tx: Tx, deps: Sequence[str]) -> None:
        for dep in deps:
            row = tx.execute("SELECT id, state FROM tasks WHERE id = %s", (dep,))
            if row is None:
                raise InvalidInput(f"dependency {dep} does not exist; give the full id of a task")
            if row["state"] in RETRYABLE_STATES:
                raise InvalidInput(
                    f"dependency {dep[:12]} is {row['state']}; "
                    "retry it first or drop the dependency"
                )

    def get(self, task_id: str) -> Task:
        return self._read(lambda tx: self._task(tx, self._resolve(tx, task_id)))

    def get_many(self, task_ids: Iterable[str]) -> builtins.list[Task]:
        ids = builtins.list(task_ids)

        def fetch(tx: Tx) -> builtins.list[Task]:
            found = {r["id"]: r for r in tx.rows("SELECT * FROM tasks WHERE id = ANY(%s)", (ids,))}
            return self._tasks(tx, [found[i] for i in ids if i in found])

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
        params: dict[str, Any] = {"limit": _rows(limit), "offset": _rows(offset)}
        if states is not None:
            where.append("state = ANY(%(states)s)")
            params["states"] = [State(s).value for s in states]
        if workspace is not None:
            where.append("workspace = %(workspace)s")
            params["workspace"] = workspace
        if parent_id is not None:
            where.append("parent_id = %(parent)s")
            params["parent"] = parent_id
        sql = "SELECT * FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT %(limit)s OFFSET %(offset)s"
        return self._read(lambda tx: self._tasks(tx, tx.rows(sql, params)))

    def stats(self, now_ms: int, days: int = 14) -> Stats:
        return self._read(lambda tx: read_stats(tx, now_ms, days))

    def running(self) -> builtins.list[Task]:
        return self.list([State.RUNNING], limit=MAX_ROWS)

    # -- people and agents acting on tasks ---------------------------------------------
    def request_cancel(self, task_id: str) -> Task:
        now = self._clock()
        with self._tx() as tx:
            task_id = self._resolve(tx, task_id)["id"]
            row = self._transition(
                tx,
                task_id,
                {State.PENDING, State.RUNNING},
                "cancel",
                "state = CASE state WHEN 'pending' THEN 'cancelled' ELSE state END, "
                "finished_at = CASE state WHEN 'pending' THEN %(now)s ELSE finished_at END, "
                "error = CASE state WHEN 'pending' THEN 'cancelled before it started' "
                "ELSE error END, cancel_requested = (state = 'running'), updated_at = %(now)s",
                {"now": now},
            )
            if row["state"] == State.CANCELLED:
                tx.event(task_id, "finished", now, state="cancelled")
                self._fail_dependents(tx, task_id, State.CANCELLED, now)
            else:
                tx.event(task_id, "cancel_requested", now, state="running")
            return self._task(tx, row)

    def retry(self, task_id: str) -> Task:
        now = self._clock()
        with self._tx() as tx:
            task_id = self._resolve(tx, task_id)["id"]
            blocker = self._retry_blocker(tx, task_id)
            if blocker is not None:
                raise IllegalTransition(blocker)
            return self._retry_one(tx, task_id, now)

    def _retry_blocker(self, tx: Tx, task_id: str) -> str | None:
        for dep in self._deps(tx, task_id):
            row = tx.execute("SELECT state FROM tasks WHERE id = %s", (dep,))
            if row is not None and row["state"] in RETRYABLE_STATES:
                return (
                    f"cannot retry task {task_id[:12]}: its dependency {dep[:12]} is "
                    f"{row['state']}; retry that one first"
                )
        return None

    def _retry_one(self, tx: Tx, task_id: str, now: int) -> Task:
        row = self._transition(
            tx,
            task_id,
            RETRYABLE_STATES,
            "retry",
            "state = 'pending', attempt = attempt + 1, updated_at = %(now)s, started_at = NULL, "
            "finished_at = NULL, exit_code = NULL, signal = NULL, error = NULL, pid = NULL, "
            "pgid = NULL, proc_start = NULL, cgroup = NULL, supervisor_id = NULL, "
            "cancel_requested = false, progress = NULL, progress_message = NULL",
            {"now": now},
        )
        # A new attempt may run on another host: its output starts afresh.
        tx.execute("DELETE FROM output_chunks WHERE task_id = %s", (task_id,))
        tx.event(task_id, "retried", now, state="pending", attempt=row["attempt"])
        return self._task(tx, row)

    def retry_failed(self, workspace: str | None = None) -> builtins.list[Task]:
        now = self._clock()
        states = sorted(s.value for s in RETRYABLE_STATES - {State.CANCELLED})
        sql = "SELECT id FROM tasks WHERE state = ANY(%(states)s)"
        params: dict[str, Any] = {"states": states}
        if workspace is not None:
            sql += " AND workspace = %(workspace)s"
            params["workspace"] = workspace
        with self._tx() as tx:
            ids = [r["id"] for r in tx.rows(sql + " ORDER BY seq", params)]
            return [
                self._retry_one(tx, task_id, now)
                for task_id in ids
                if self._retry_blocker(tx, task_id) is None
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
        sql = "DELETE FROM tasks WHERE state = ANY(%(states)s)"
        params: dict[str, Any] = {"states": names}
        if older_than_ms is not None:
            if older_than_ms < 0:
                raise InvalidInput("older-than must be zero or more")
            sql += " AND coalesce(finished_at, updated_at) < %(before)s"
            params["before"] = now - min(older_than_ms, now)
        if workspace is not None:
            sql += " AND workspace = %(workspace)s"
            params["workspace"] = workspace
        with self._tx() as tx:
            purged = [Task.from_row(r) for r in tx.rows(sql + " RETURNING *", params)]
            ids = [t.id for t in purged]
            tx.execute("DELETE FROM deps WHERE task_id = ANY(%s)", (ids,))
            for task in purged:
                tx.event(task.id, "purged", now, state=task.state.value)
        return purged

    # -- the change feed ---------------------------------------------------------------
    def events_since(
        self, cursor: int, *, limit: int = 500, task_ids: Iterable[str] | None = None
    ) -> builtins.list[Event]:
        sql = "SELECT * FROM events WHERE seq > %(cursor)s"
        params: dict[str, Any] = {"cursor": min(cursor, MAX_ROWS), "limit": _rows(limit)}
        if task_ids is not None:
            sql += " AND task_id = ANY(%(ids)s)"
            params["ids"] = builtins.list(task_ids)
        sql += " ORDER BY seq LIMIT %(limit)s"
        return self._read(lambda tx: [Event.from_row(r) for r in tx.rows(sql, params)])

    def last_event_seq(self) -> int:
        row = self._read(lambda tx: tx.execute("SELECT coalesce(max(seq), 0) AS seq FROM events"))
        return int(row["seq"]) if row else 0
