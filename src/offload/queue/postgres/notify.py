"""Waking on new events by LISTEN/NOTIFY instead of polling.

Every transaction that appends events NOTIFYs the queue's channel at commit (db.py). A
`Listener` holds one connection of its own that LISTENs from its first use on, so a
notification sent between a caller's read and its wait is queued, never lost. The
supervisor does not block here: it puts the connection's socket (`fileno`) in its own
`select()` and `take`s what arrived.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from psycopg import sql

from offload.errors import StoreError

__all__ = ["Listener"]


class Listener:
    """A dedicated LISTENing connection; `wait` returns when a notification arrives."""

    def __init__(self, conn: psycopg.Connection[Any], channel: str) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def wait(self, timeout: float) -> bool:
        """True if a notification came within `timeout` seconds (queued ones count)."""
        with self._lock:
            try:
                got = list(self._conn.notifies(timeout=max(0.0, timeout), stop_after=1))
            except psycopg.Error as exc:
                raise StoreError(f"lost the queue's notification connection: {exc}") from exc
            return bool(got)

    def fileno(self) -> int:
        """The connection's socket: readable when a notification (or an error) arrives."""
        return self._conn.fileno()

    def take(self) -> set[str]:
        """Consumes every notification already received, without blocking.

        Returns the payloads' event kinds (each payload is a comma-separated list).
        """
        with self._lock:
            try:
                got = list(self._conn.notifies(timeout=0))
            except psycopg.Error as exc:
                raise StoreError(f"lost the queue's notification connection: {exc}") from exc
        return {kind for n in got for kind in n.payload.split(",") if kind}

    def close(self) -> None:
        self._conn.close()
