"""The SQLite implementation of the Store.

One connection per process (guarded by a lock so worker threads of the MCP and HTTP
servers can share it), WAL mode, a busy timeout, and `BEGIN IMMEDIATE` for every write
so two writers never deadlock on a lock upgrade. sqlite3 errors become `StoreError`.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from offload.errors import AmbiguousId, IllegalTransition, InvalidInput, NotFound, StoreError
from offload.queue.models import (
    PURGEABLE_STATES,
    RETRYABLE_STATES,
    Event,
    State,
    Task,
    TaskSpec,
    new_task_id,
)
from offload.queue.schema import MIGRATIONS, SCHEMA_VERSION
from offload.queue.stats import read_stats
from offload.queue.store import Stats, Store

__all__ = ["SqliteStore", "now_ms"]

BUSY_TIMEOUT_MS = 15_000
MIN_PREFIX = 6
MAX_ROWS = 2**62  # LIMIT and OFFSET are clamped to this: more rows than any queue holds
_T = TypeVar("_T")

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
     ORDER BY t.priority, t.seq
     LIMIT 1)
RETURNING *
"""


def now_ms() -> int:
    """Current UTC time in milliseconds, written by the app (SQLite 3.40 lacks `subsec`)."""
    return time.time_ns() // 1_000_000


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


class SqliteStore(Store):
    """Store backed by one SQLite file (created 0600, its directory 0700)."""

    def __init__(self, path: Path | str, *, clock: Callable[[], int] = now_ms) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            self._db = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the queue database {self.path}: {exc}") from exc

    # -- plumbing ----------------------------------------------------------------------
    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this offload "
                f"({SCHEMA_VERSION}); upgrade offload"
            )
        if version == SCHEMA_VERSION:
            return
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for script in MIGRATIONS[version:]:
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One `BEGIN IMMEDIATE` transaction; sqlite3 errors become StoreError."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"queue database is unavailable: {exc}") from exc
            try:
                yield self._db
            except BaseException as exc:
                self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"queue database write failed: {exc}") from exc
                raise
            else:
                try:
                    self._db.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._db.execute("ROLLBACK")
                    raise StoreError(f"queue database write failed: {exc}") from exc

    def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._lock:
            try:
                return fn(self._db)
            except sqlite3.Error as exc:
                raise StoreError(f"queue database read failed: {exc}") from exc

    def _event(
        self, db: sqlite3.Connection, task_id: str | None, kind: str, now: int, **detail: Any
    ) -> None:
        db.execute(
            "INSERT INTO events (task_id, at, kind, detail) VALUES (?, ?, ?, ?)",
            (task_id, now, kind, json.dumps(detail) if detail else None),
        )

    def _deps(self, db: sqlite3.Connection, task_id: str) -> builtins.list[str]:
        rows = db.execute("SELECT depends_on FROM deps WHERE task_id = ?", (task_id,))
        return [r[0] for r in rows]

    def _task(self, db: sqlite3.Connection, row: sqlite3.Row) -> Task:
        return Task.from_row(row, self._deps(db, row["id"]))  # type: ignore[arg-type]

    def _resolve(self, db: sqlite3.Connection, task_id: str) -> sqlite3.Row:
        key = task_id.strip().lower()
        if len(key) < MIN_PREFIX or any(c not in "0123456789abcdef" for c in key):
            raise NotFound(
                f"'{task_id}' is not a task id: give the id or a unique prefix of at least "
                f"{MIN_PREFIX} hex characters"
            )
        rows = db.execute(
            "SELECT * FROM tasks WHERE id >= ? AND id < ? ORDER BY id LIMIT 2",
            (key, key + "g"),
        ).fetchall()
        if not rows:
            raise NotFound(f"no task matches '{task_id}'; `offload list` shows the tasks")
        if len(rows) > 1:
            raise AmbiguousId(f"'{task_id}' matches several tasks; give more characters of the id")
        return rows[0]

    def _transition(
        self,
        db: sqlite3.Connection,
        task_id: str,
        allowed: Iterable[State],
        verb: str,
        sets: str,
        params: Mapping[str, Any],
    ) -> sqlite3.Row:
        """Applies `sets` if the task is in one of `allowed`, else raises IllegalTransition."""
        names = sorted(s.value for s in allowed)
        marks = ", ".join(f":s{i}" for i in range(len(names)))
        args = {**params, "id": task_id, **{f"s{i}": s for i, s in enumerate(names)}}
        row = db.execute(
            f"UPDATE tasks SET {sets} WHERE id = :id AND state IN ({marks}) RETURNING *", args
        ).fetchone()
        if row is None:
            state = db.execute("SELECT state FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if state is None:
                raise NotFound(f"task {task_id} no longer exists")
            raise IllegalTransition(
                f"cannot {verb} task {task_id[:12]}: it is {state[0]}; "
                f"only {' or '.join(names)} tasks can be {_past(verb)}"
            )
        return row

    # -- submitting and reading --------------------------------------------------------
    def submit(self, specs: Sequence[TaskSpec]) -> builtins.list[Task]:
        now = self._clock()
        with self._write() as db:
            return [self._insert(db, spec, now) for spec in specs]

    def _insert(self, db: sqlite3.Connection, spec: TaskSpec, now: int) -> Task:
        self._check_deps(db, spec.depends_on)
        task_id = new_task_id()
        row = db.execute(
            """INSERT INTO tasks (id, type, state, command, spec, cwd, workspace, timeout_seconds,
                   priority, grp, env, name, labels, output_path, context_files, model,
                   large_context, max_turns, parent_id, created_at, updated_at)
               VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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

    # -- the supervisor's side ---------------------------------------------------------
    def claim(
        self,
        n: int,
        supervisor_id: str,
        group_limits: Mapping[str, int],
        default_group_limit: int = 1,
    ) -> builtins.list[Task]:
        now = self._clock()
        params = {
            "now": now,
            "sup": supervisor_id,
            "limits": json.dumps(dict(group_limits)),
            "default_limit": default_group_limit,
        }
        claimed: builtins.list[Task] = []
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
    ) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE tasks SET pid = ?, pgid = ?, proc_start = ?, cgroup = ?, log_path = ?, "
                "updated_at = ? WHERE id = ?",
                (pid, pgid, proc_start, cgroup, log_path, self._clock(), task_id),
            )

    def finish(
        self,
        task_id: str,
        state: State,
        *,
        exit_code: int | None = None,
        signal: int | None = None,
        error: str | None = None,
    ) -> Task:
        now = self._clock()
        with self._write() as db:
            row = self._transition(
                db,
                task_id,
                {State.RUNNING},
                "finish",
                "state = :state, finished_at = :now, updated_at = :now, exit_code = :code, "
                "signal = :sig, error = :error, cancel_requested = 0",
                {
                    "state": state.value,
                    "now": now,
                    "code": exit_code,
                    "sig": signal,
                    "error": error,
                },
            )
            self._event(
                db, task_id, "finished", now, state=state.value, exit_code=exit_code, error=error
            )
            if state is not State.COMPLETED:
                self._fail_dependents(db, task_id, state, now)
            return self._task(db, row)

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

    def running(self) -> builtins.list[Task]:
        return self.list([State.RUNNING], limit=1_000_000)

    def cancel_requests(self) -> builtins.list[Task]:
        return self._read(
            lambda db: [
                self._task(db, r)
                for r in db.execute(
                    "SELECT * FROM tasks WHERE state = 'running' AND cancel_requested = 1"
                )
            ]
        )

    def set_progress(self, task_id: str, fraction: float | None, message: str | None) -> None:
        now = self._clock()
        with self._write() as db:
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
    ) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE tasks SET result = ?, files_written = ?, error = ?, updated_at = ? "
                "WHERE id = ?",
                (result, json.dumps(list(files_written)), error, self._clock(), task_id),
            )

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
        for task in purged:
            _unlink_quietly(task.log_path)
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

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _clamp_rows(count: int) -> int:
    """A LIMIT or OFFSET within 0..MAX_ROWS, so no count overflows SQLite's 64-bit integer."""
    return max(0, min(count, MAX_ROWS))


def _past(verb: str) -> str:
    return {"cancel": "cancelled", "retry": "retried", "finish": "finished"}.get(verb, verb + "ed")


def _unlink_quietly(path: str | None) -> None:
    """Removes a task's log, its agent transcript and its agent staging directory."""
    if not path:
        return
    base = path[: -len(".log")] if path.endswith(".log") else path
    for name in (path, base + ".turns.jsonl"):
        try:
            os.unlink(name)
        except OSError:
            pass
    shutil.rmtree(base + ".staging", ignore_errors=True)
