"""The connection plumbing under the PostgreSQL Store.

`PgDb` owns a small psycopg connection pool, checks the server (reachable, version 13 or
newer), applies the SQL migrations under an advisory lock, and offers the helpers every
verb shares: one transaction (`_tx`) whose events are inserted last under an advisory lock
and announced by NOTIFY at commit, reads, id lookup by prefix, and the guarded state
change. psycopg errors become `StoreError` here, with the URL shown without its password.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from offload.errors import AmbiguousId, IllegalTransition, NotFound, StoreError
from offload.queue.models import State, Task
from offload.queue.postgres.migrate import migrate
from offload.queue.postgres.url import redact

__all__ = ["MIN_PREFIX", "MIN_SERVER_VERSION", "PgDb", "Tx"]

MIN_PREFIX = 6
MIN_SERVER_VERSION = 130000
CONNECT_TIMEOUT_SECONDS = 5
POOL_SIZE = 4
# Advisory lock keys (two-int form, class 0x0FF10AD): event order, migrations.
LOCK_CLASS = 0x0FF10AD
EVENTS_LOCK = 1
_T = TypeVar("_T")
Row = dict[str, Any]


def _local_ms() -> int:
    return time.time_ns() // 1_000_000


class Tx:
    """One open transaction: a cursor plus the events to append when it is done."""

    def __init__(self, cur: psycopg.Cursor[Row]) -> None:
        self.cur = cur
        self._events: list[tuple[str | None, int, str, str | None]] = []

    def execute(self, sql: str, params: Mapping[str, Any] | Sequence[Any] = ()) -> Row | None:
        """Runs one statement and returns its first row (or None)."""
        self.cur.execute(sql, params)
        return self.cur.fetchone() if self.cur.description else None

    def rows(self, sql: str, params: Mapping[str, Any] | Sequence[Any] = ()) -> list[Row]:
        """Runs one statement and returns every row."""
        self.cur.execute(sql, params)
        return self.cur.fetchall() if self.cur.description else []

    def event(self, task_id: str | None, kind: str, now: int, **detail: Any) -> None:
        """Queues an event for the feed; it is written just before commit."""
        self._events.append((task_id, now, kind, json.dumps(detail) if detail else None))

    def flush(self, channel: str) -> None:
        """Writes the queued events in seq order of commit, then NOTIFYs listeners.

        The advisory lock is held until commit, so no event with a smaller seq can become
        visible after one with a larger seq: a reader's cursor never skips an event.
        """
        if not self._events:
            return
        ids, ats, kinds, details = zip(*self._events, strict=True)
        with self.cur.connection.pipeline():  # three statements, one round trip
            self.cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, EVENTS_LOCK))
            self.cur.execute(
                "INSERT INTO events (task_id, at, kind, detail) "
                "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[])",
                (list(ids), list(ats), list(kinds), list(details)),
            )
            self.cur.execute("SELECT pg_notify(%s, %s)", (channel, ",".join(sorted(set(kinds)))))
        self._events.clear()


class PgDb:
    """One PostgreSQL database, checked and migrated, with the verbs' shared helpers."""

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], int] | None = None,
        pool_size: int = POOL_SIZE,
    ) -> None:
        self.url = url
        self.safe_url = redact(url)
        self._lock = threading.Lock()
        self._bounds: dict[str, Any] = {}  # connection options set by limit_waits()
        offset, self.channel = self._check_and_migrate()
        self._clock = clock or (lambda: _local_ms() + offset)
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max(1, pool_size),
            kwargs={"autocommit": True, "row_factory": dict_row},
            open=False,
            name="offload",
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS * 2)
        except Exception as exc:  # PoolTimeout: the server went away after the check
            self._pool.close()
            raise StoreError(f"cannot connect to PostgreSQL at {self.safe_url}: {exc}") from exc

    # -- plumbing ----------------------------------------------------------------------
    def connect(self, **kwargs: Any) -> psycopg.Connection[Row]:
        """A new connection of its own (the NOTIFY listener uses one), errors translated."""
        options = {"connect_timeout": CONNECT_TIMEOUT_SECONDS, **self._bounds, **kwargs}
        try:
            return psycopg.connect(self.url, row_factory=dict_row, **options)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {self.safe_url}: {self._clean(exc)}; "
                "check database_url (OFFLOAD_DATABASE_URL) and that the server runs"
            ) from exc

    def limit_waits(self, seconds: float) -> None:
        """Bounds how long one call may block on an unreachable server.

        A supervisor cut off from the server must still run its loop: notice that its lease
        ran out and kill its trees. So connecting, waiting for a pooled connection and data
        the server has not acknowledged (`tcp_user_timeout`) each give up after `seconds`,
        and keepalives find a silent peer on an idle connection (the LISTEN one). On the
        server's side, a session left idle inside a transaction (its host vanished between
        two statements) is ended after `seconds`, so the row locks it held cannot stall
        the members that reap it.
        """
        whole = max(1, math.ceil(seconds))
        ms = max(1, int(seconds * 1000))
        options = conninfo_to_dict(self.url).get("options") or ""
        self._bounds = {
            "connect_timeout": max(2, whole),  # libpq's minimum is 2 s
            "tcp_user_timeout": ms,
            "keepalives": 1,
            "keepalives_idle": whole,
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "options": f"{options} -c idle_in_transaction_session_timeout={ms}".strip(),
        }
        self._pool.kwargs = {"autocommit": True, "row_factory": dict_row, **self._bounds}
        self._pool.timeout = seconds
        self._pool.drain()  # connections opened before now lack the bounds

    def _check_and_migrate(self) -> tuple[int, str]:
        """Checks the server version, migrates, and measures the server's clock offset."""
        with self.connect(autocommit=True) as conn:
            version = conn.info.server_version
            if version < MIN_SERVER_VERSION:
                raise StoreError(
                    f"PostgreSQL at {self.safe_url} is version {version // 10000}; "
                    f"offload needs {MIN_SERVER_VERSION // 10000} or newer"
                )
            try:
                migrate(conn, self.safe_url)
                before = _local_ms()
                row = conn.execute(
                    "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now, "
                    "current_schema() AS schema"
                ).fetchone()
                after = _local_ms()
            except psycopg.Error as exc:
                raise StoreError(
                    f"cannot prepare the queue in PostgreSQL at {self.safe_url}: {self._clean(exc)}"
                ) from exc
        assert row is not None
        # All hosts stamp times by the server's clock, so leases compare across hosts.
        offset = int(row["now"]) - (before + after) // 2
        schema = str(row["schema"] or "public")
        return offset, "offload" if schema == "public" else f"offload_{schema}"[:63]

    def _clean(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split())
        return text.replace(self.url, self.safe_url) or type(exc).__name__

    @contextmanager
    def _tx(self, *, durable: bool = True) -> Iterator[Tx]:
        """One transaction; its events are written last; psycopg errors become StoreError.

        `durable=False` lets the commit return before the server flushes it to disk (a
        server crash may lose it; nothing else can): for records a lost write only makes
        staler (a task's pid, progress, shipped output), which saves most of a write's cost.
        """
        try:
            with (
                self._pool.connection() as conn,
                conn.transaction(),
                conn.cursor(row_factory=dict_row) as cur,
            ):
                tx = Tx(cur)
                if not durable:
                    tx.execute("SET LOCAL synchronous_commit TO OFF")
                yield tx
                tx.flush(self.channel)
        except psycopg.Error as exc:
            raise StoreError(f"queue database write failed: {self._clean(exc)}") from exc

    def _read(self, fn: Callable[[Tx], _T]) -> _T:
        try:
            with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                return fn(Tx(cur))
        except psycopg.Error as exc:
            raise StoreError(f"queue database read failed: {self._clean(exc)}") from exc

    # -- helpers the verbs share -------------------------------------------------------
    def _tasks(self, tx: Tx, rows: Iterable[Row]) -> list[Task]:
        """Tasks for rows, their dependencies fetched in one query."""
        rows = list(rows)
        if not rows:
            return []
        deps: dict[str, list[str]] = {}
        for dep in tx.rows(
            "SELECT task_id, depends_on FROM deps WHERE task_id = ANY(%s) ORDER BY depends_on",
            ([r["id"] for r in rows],),
        ):
            deps.setdefault(dep["task_id"], []).append(dep["depends_on"])
        return [Task.from_row(r, deps.get(r["id"], ())) for r in rows]

    def _task(self, tx: Tx, row: Row) -> Task:
        return self._tasks(tx, [row])[0]

    def _deps(self, tx: Tx, task_id: str) -> list[str]:
        rows = tx.rows("SELECT depends_on FROM deps WHERE task_id = %s", (task_id,))
        return [r["depends_on"] for r in rows]

    def _resolve(self, tx: Tx, task_id: str) -> Row:
        key = task_id.strip().lower()
        if len(key) < MIN_PREFIX or any(c not in "0123456789abcdef" for c in key):
            raise NotFound(
                f"'{task_id}' is not a task id: give the id or a unique prefix of at least "
                f"{MIN_PREFIX} hex characters"
            )
        rows = tx.rows(
            "SELECT * FROM tasks WHERE id >= %s AND id < %s ORDER BY id LIMIT 2",
            (key, key + "g"),
        )
        if not rows:
            raise NotFound(f"no task matches '{task_id}'; `offload list` shows the tasks")
        if len(rows) > 1:
            raise AmbiguousId(f"'{task_id}' matches several tasks; give more characters of the id")
        return rows[0]

    def _transition(
        self,
        tx: Tx,
        task_id: str,
        allowed: Iterable[State],
        verb: str,
        sets: str,
        params: Mapping[str, Any],
    ) -> Row:
        """Applies `sets` if the task is in one of `allowed`, else raises IllegalTransition."""
        names = sorted(s.value for s in allowed)
        row = tx.execute(
            f"UPDATE tasks SET {sets} WHERE id = %(id)s AND state = ANY(%(allowed)s) RETURNING *",
            {**params, "id": task_id, "allowed": names},
        )
        if row is None:
            state = tx.execute("SELECT state FROM tasks WHERE id = %s", (task_id,))
            if state is None:
                raise NotFound(f"task {task_id} no longer exists")
            raise IllegalTransition(
                f"cannot {verb} task {task_id[:12]}: it is {state['state']}; "
                f"only {' or '.join(names)} tasks can be {_past(verb)}"
            )
        return row

    def close(self) -> None:
        self._pool.close()


def _past(verb: str) -> str:
    return {"cancel": "cancelled", "retry": "retried", "finish": "finished"}.get(verb, verb + "ed")
