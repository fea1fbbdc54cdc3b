"""Schema migrations of the PostgreSQL queue: plain SQL files applied in order.

`migrations/NNNN_name.sql` brings the schema to version NNNN. They run at start under a
session advisory lock, so hosts starting together migrate once; each file runs in its own
transaction with the version bump. Add a file, never edit a shipped one.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import psycopg

from offload.errors import StoreError

__all__ = ["SCHEMA_VERSION", "migrate", "migrations"]

_LOCK = (0x0FF10AD, 2)


def migrations() -> list[tuple[int, str]]:
    """(version, SQL) of every shipped migration, in order."""
    folder = resources.files("offload.queue.postgres") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(found)


SCHEMA_VERSION = max(v for v, _ in migrations())


def migrate(conn: psycopg.Connection[Any], safe_url: str) -> None:
    """Brings the database to SCHEMA_VERSION; refuses a newer one. `conn` is autocommit."""
    conn.execute("SELECT pg_advisory_lock(%s, %s)", _LOCK)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS offload_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM offload_schema").fetchone()
        current = (row[0] if isinstance(row, tuple) else (row or {}).get("max")) or 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"the queue in PostgreSQL at {safe_url} has schema version {current}, newer "
                f"than this offload ({SCHEMA_VERSION}); upgrade offload on this host"
            )
        for version, sql in migrations():
            if version <= current:
                continue
            with conn.transaction():
                conn.execute(sql.encode())
                conn.execute("INSERT INTO offload_schema (version) VALUES (%s)", (version,))
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", _LOCK)
