"""The connection plumbing under the SQLite Store.

`SqliteDb` owns the one connection per process (guarded by a lock so worker threads of the
MCP and HTTP servers can share it): it opens the file (0600, its directory 0700), sets WAL
mode and a busy timeout, migrates the schema, and runs every write in `BEGIN IMMEDIATE` so
two writers never deadlock on a lock upgrade. sqlite3 errors become `StoreError` here. It
also holds the small row helpers every verb shares: events, dependencies, id lookup by
prefix and the guarded state change. The verbs themselves live in `sqlite_supervisor` and
`sqlite`.
"""

from __future__ import annotations

import _thread  # threading.RLock is this lock; the threading module costs ~1 ms to import
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from offload.clock import now_ms
from offload.errors import AmbiguousId, IllegalTransition, NotFound, StoreError
from offload.queue.models import State, Task
from offload.queue.schema import MIGRATIONS, SCHEMA_VERSION

TYPE_CHECKING = False  # typing costs ~3 ms of every CLI call; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any, TypeVar

    _T = TypeVar("_T")

__all__ = ["BUSY_TIMEOUT_MS", "MIN_PREFIX", "SqliteDb"]

BUSY_TIMEOUT_MS = 15_000
MIN_PREFIX = 6
# A checkpoint aside (see `checkpoint_aside`) follows this many commits: about 50 tasks'
# writes, some 650 pages of the write-ahead log (SQLite's own default is 1,000 pages).
CHECKPOINT_EVERY_COMMITS = 150
# ...and the writer's own checkpoint waits for this many pages: only it can start the log
# over, which a checkpoint beside a busy writer never can (8 MiB of 4 KiB pages).
CHECKPOINT_IN_LINE_PAGES = 2000


class SqliteDb:
    """One SQLite file, opened and migrated, with the helpers the Store's verbs share."""

    def __init__(self, path: Path | str, *, clock: Callable[[], int] = now_ms) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = _thread.RLock()
        self._checkpoints: _Checkpoints | None = None
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
                raise _store_error("is unavailable", exc) from exc
            try:
                yield self._db
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sqlite3.Error):
                    raise _store_error("write failed", exc) from exc
                raise
            else:
                try:
                    self._db.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._rollback()
                    raise _store_error("write failed", exc) from exc
                if self._checkpoints is not None:
                    self._checkpoints.committed()

    def _rollback(self) -> None:
        """Rolls back what is left of a failed transaction.

        On a full disk or an I/O error SQLite has often rolled back already; a second
        ROLLBACK would replace the real cause with "no transaction is active".
        """
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the connection is unusable for this transaction either way

    def set_busy_timeout(self, seconds: float) -> None:
        """How long a statement waits on another process's lock before failing."""
        with self._lock:
            self._db.execute(f"PRAGMA busy_timeout = {max(0, int(seconds * 1000))}")

    def checkpoint_aside(self, every: int = CHECKPOINT_EVERY_COMMITS) -> Callable[[], None]:
        """Moves most of this connection's checkpoint work onto a thread; returns its stop.

        A commit that takes the write-ahead log past 1,000 pages copies the log back into
        the database and syncs both files before it returns: several milliseconds every
        80 or so tasks, in the supervisor's loop. From here on every `every` commits wake
        a thread that runs a passive checkpoint on its own connection while the loop goes
        on (sqlite3 lets go of the GIL while it works). Only a writer starts the log over,
        once all of it is copied, and a busy writer never lets the thread catch up: so
        this connection still checkpoints itself, less often (`CHECKPOINT_IN_LINE_PAGES`)
        and with little left to copy, and the log stays a few MiB however long the burst.
        """
        with self._lock:
            if self._checkpoints is None:
                try:
                    self._checkpoints = _Checkpoints(self.path, every)
                except RuntimeError:  # no thread to be had: checkpoints stay in line
                    return lambda: None
                self._db.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_IN_LINE_PAGES}")
            checkpoints = self._checkpoints

        def stop() -> None:
            with self._lock:
                if self._checkpoints is checkpoints:
                    self._checkpoints = None
                    self._db.execute("PRAGMA wal_autocheckpoint = 1000")
            checkpoints.stop()

        return stop

    def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._lock:
            try:
                return fn(self._db)
            except sqlite3.Error as exc:
                raise _store_error("read failed", exc) from exc

    def _event(
        self, db: sqlite3.Connection, task_id: str | None, kind: str, now: int, **detail: Any
    ) -> None:
        db.execute(
            "INSERT INTO events (task_id, at, kind, detail) VALUES (?, ?, ?, ?)",
            (task_id, now, kind, json.dumps(detail) if detail else None),
        )

    def _deps(self, db: sqlite3.Connection, task_id: str) -> list[str]:
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

    def close(self) -> None:
        with self._lock:
            checkpoints, self._checkpoints = self._checkpoints, None
            self._db.close()
        if checkpoints is not None:
            checkpoints.stop()


class _Checkpoints:
    """A thread that checkpoints one database file each time it is woken (see above)."""

    def __init__(self, path: Path, every: int) -> None:
        import threading  # only the supervisor pays for it

        self._path = path
        self._every = every
        self._count = 0
        self._stopping = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="offload-checkpoints", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        self._count += 1
        if self._count >= self._every:
            self._count = 0
            self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        db: sqlite3.Connection | None = None
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:  # PASSIVE: never waits on a reader or a writer; a later one goes on
                    db = db or sqlite3.connect(self._path, isolation_level=None)
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    pass  # no file handle, a full disk: tried again after the next commits
        finally:
            if db is not None:
                db.close()


def _store_error(what: str, exc: sqlite3.Error) -> StoreError:
    """One line for a failed database call; a full disk says so and what to do."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL or "disk is full" in str(exc):
        return StoreError(
            "the disk holding the queue database is full; free some space and try again "
            "(offload resumes by itself)"
        )
    return StoreError(f"queue database {what}: {exc}")


def _past(verb: str) -> str:
    return {"cancel": "cancelled", "retry": "retried", "finish": "finished"}.get(verb, verb + "ed")
