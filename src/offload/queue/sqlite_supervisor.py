"""The supervisor's side of the SQLite Store: claiming tasks and recording their runs.

`SqliteSupervisorSide` adds to the connection plumbing of `SqliteDb` the verbs the
supervisor and its workers call while tasks run: claim, mark_started, finish (which fails
the pending dependents of a task that did not complete), progress, usage, results, events
and the supervisor's heartbeat. `SqliteStore` inherits them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence

from offload.queue.members import check_still_runs
from offload.queue.models import State, Task
from offload.queue.sqlite_db import SqliteDb

TYPE_CHECKING = False  # typing costs ~3 ms of every CLI call; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

__all__ = ["SqliteSupervisorSide"]

# Full groups are found once per statement (the running tasks are few), so skipping a
# task of a busy group is one lookup, however many tasks wait behind it.
_CLAIM_ONE = """
WITH full_groups (grp) AS (
    SELECT r.grp FROM tasks r
     WHERE r.state = 'running' AND r.grp IS NOT NULL
     GROUP BY r.grp
    HAVING count(*) >= coalesce((SELECT value FROM json_each(:limits) WHERE key = r.grp),
                                :default_limit)
)
UPDATE tasks
   SET state = 'running', started_at = :now, updated_at = :now, supervisor_id = :sup,
       finished_at = NULL, progress = NULL, progress_message = NULL, cancel_requested = 0
 WHERE id = (
    SELECT t.id FROM tasks t
     WHERE t.state = 'pending'
       AND (t.grp IS NULL OR t.grp NOT IN full_groups)
       AND NOT EXISTS (SELECT 1 FROM deps d JOIN tasks p ON p.id = d.depends_on
                        WHERE d.task_id = t.id AND p.state != 'completed')
       AND (t.run_on IS NULL OR NOT EXISTS (
            SELECT 1 FROM json_each(t.run_on) need
             WHERE need.value NOT IN (SELECT value FROM json_each(:labels))))
     ORDER BY t.priority, t.seq
     LIMIT 1)
RETURNING *
"""


def _fenced(supervisor_id: str | None) -> str:
    """The condition that makes a supervisor's write about a task its own (see `_fence`).

    In the write itself, so a write that goes through costs no statement of its own; one
    that is refused is looked at again by `_fence`, which says why.
    """
    if supervisor_id is None:
        return ""
    return " AND state = 'running' AND supervisor_id = :sup"


class SqliteSupervisorSide(SqliteDb):
    """The Store verbs of the supervisor's side, on one SQLite file."""

    def claim(
        self,
        n: int,
        supervisor_id: str,
        group_limits: Mapping[str, int],
        default_group_limit: int = 1,
        labels: Sequence[str] = (),
    ) -> list[Task]:
        now = self._clock()
        params = {
            "labels": json.dumps(list(labels)),
            "now": now,
            "sup": supervisor_id,
            "limits": json.dumps(dict(group_limits)),
            "default_limit": default_group_limit,
        }
        claimed: list[Task] = []
        with self._write() as db:
            for _ in range(n):
                row = db.execute(_CLAIM_ONE, params).fetchone()
                if row is None:
                    break
                self._event(db, row["id"], "started", now, state="running", attempt=row["attempt"])
                claimed.append(self._task(db, row))
        return claimed

    def mark_started(
        self,
        task_id: str,
        *,
        pid: int,
        pgid: int,
        proc_start: float | None,
        cgroup: str | None,
        log_path: str,
        containment: str | None = None,
        supervisor_id: str | None = None,
    ) -> None:
        with self._write() as db:
            written = db.execute(
                "UPDATE tasks SET pid = :pid, pgid = :pgid, proc_start = :start, cgroup = :cg, "
                "log_path = :log, containment = :cont, updated_at = :now "
                f"WHERE id = :id{_fenced(supervisor_id)}",
                {"pid": pid, "pgid": pgid, "start": proc_start, "cg": cgroup, "log": log_path}
                | {"cont": containment, "now": self._clock(), "id": task_id, "sup": supervisor_id},
            )
            if written.rowcount == 0:
                self._fence(db, task_id, supervisor_id)  # says why the write was refused

    def finish(
        self,
        task_id: str,
        state: State,
        *,
        exit_code: int | None = None,
        signal: int | None = None,
        error: str | None = None,
        supervisor_id: str | None = None,
    ) -> None:
        now = self._clock()
        sets = (
            "state = :state, finished_at = :now, updated_at = :now, exit_code = :code, "
            "signal = :sig, error = :error, cancel_requested = 0"
        )
        params = {"state": state.value, "now": now, "code": exit_code, "sig": signal}
        params.update(error=error, id=task_id, sup=supervisor_id)
        with self._write() as db:
            written = db.execute(
                f"UPDATE tasks SET {sets} WHERE id = :id AND state = 'running'"
                f"{_fenced(supervisor_id)}",
                params,
            )
            if written.rowcount == 0:  # refused: say why, fenced first, as a transition would
                self._fence(db, task_id, supervisor_id)
                self._transition(db, task_id, {State.RUNNING}, "finish", sets, params)
            self._event(
                db, task_id, "finished", now, state=state.value, exit_code=exit_code, error=error
            )
            if state is not State.COMPLETED:
                self._fail_dependents(db, task_id, state, now)

    def _fail_dependents(
        self, db: sqlite3.Connection, task_id: str, state: State, now: int
    ) -> None:
        frontier = [(task_id, state.value)]
        while frontier:
            dep, dep_state = frontier.pop()
            error = f"dependency {dep[:12]} ended {dep_state}"
            rows = db.execute(
                "UPDATE tasks SET state = 'failed', error = :error, finished_at = :now, "
                "updated_at = :now WHERE state = 'pending' AND id IN "
                "(SELECT task_id FROM deps WHERE depends_on = :dep) RETURNING id",
                {"error": error, "now": now, "dep": dep},
            ).fetchall()
            for (child,) in rows:
                self._event(db, child, "finished", now, state="failed", error=error)
                frontier.append((child, "failed"))

    def cancel_requests(self) -> list[Task]:
        return self._read(
            lambda db: [
                self._task(db, r)
                for r in db.execute(
                    "SELECT * FROM tasks WHERE state = 'running' AND cancel_requested = 1"
                )
            ]
        )

    def set_progress(
        self,
        task_id: str,
        fraction: float | None,
        message: str | None,
        *,
        supervisor_id: str | None = None,
    ) -> None:
        now = self._clock()
        with self._write() as db:
            self._fence(db, task_id, supervisor_id)
            row = db.execute(
                "UPDATE tasks SET progress = ?, progress_message = ?, updated_at = ? "
                "WHERE id = ? AND state = 'running' AND "
                "(progress IS NOT ? OR progress_message IS NOT ?) RETURNING id",
                (fraction, message, now, task_id, fraction, message),
            ).fetchone()
            if row is not None:
                self._event(db, task_id, "progress", now, fraction=fraction, message=message)

    def record_usage(
        self,
        task_id: str,
        *,
        tokens_in: int,
        tokens_out: int,
        cost_usd: float | None,
        model_used: str,
        tokens_cached: int = 0,
    ) -> None:
        now = self._clock()
        with self._write() as db:
            db.execute(
                "UPDATE tasks SET tokens_in = coalesce(tokens_in, 0) + :tin, "
                "tokens_out = coalesce(tokens_out, 0) + :tout, "
                "tokens_cached = coalesce(tokens_cached, 0) + :tcached, "
                "cost_usd = CASE WHEN :cost IS NULL THEN cost_usd "
                "ELSE coalesce(cost_usd, 0) + :cost END, "
                "model_used = :model, updated_at = :now WHERE id = :id",
                {
                    "tin": tokens_in,
                    "tout": tokens_out,
                    "tcached": tokens_cached,
                    "cost": cost_usd,
                    "model": model_used,
                    "now": now,
                    "id": task_id,
                },
            )
            self._event(
                db,
                task_id,
                "usage",
                now,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                tokens_cached=tokens_cached,
                cost_usd=cost_usd,
                model=model_used,
            )

    def record_event(self, task_id: str, kind: str, **detail: Any) -> None:
        with self._write() as db:
            self._event(db, task_id, kind, self._clock(), **detail)

    def record_result(
        self,
        task_id: str,
        *,
        result: str | None = None,
        files_written: Sequence[str] = (),
        error: str | None = None,
        supervisor_id: str | None = None,
    ) -> None:
        with self._write() as db:
            self._fence(db, task_id, supervisor_id)
            db.execute(
                "UPDATE tasks SET result = ?, files_written = ?, error = ?, updated_at = ? "
                "WHERE id = ?",
                (result, json.dumps(list(files_written)), error, self._clock(), task_id),
            )

    def _fence(self, db: sqlite3.Connection, task_id: str, supervisor_id: str | None) -> None:
        """Refuses a write by `supervisor_id` about a task it no longer runs."""
        if supervisor_id is None:
            return
        row = db.execute(
            "SELECT state, supervisor_id FROM tasks WHERE id = ?", (task_id,)
        ).fetchone()
        check_still_runs(row, task_id, supervisor_id)

    def heartbeat(self, supervisor_id: str, pid: int) -> None:
        value = json.dumps({"id": supervisor_id, "pid": pid, "at": self._clock()})
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('supervisor', ?)", (value,)
            )

    def supervisor_info(self) -> dict[str, str] | None:
        row = self._read(
            lambda db: db.execute("SELECT value FROM meta WHERE key = 'supervisor'").fetchone()
        )
        return None if row is None else dict(json.loads(row[0]))
