"""The real PostgreSQL server the tests use, and a fresh schema per test.

The server is `OFFLOAD_TEST_DATABASE_URL` or postgresql://postgres@127.0.0.1:5432/test
(trust auth). Locally, without a server, PostgreSQL tests skip with the reason; with `CI`
set they fail instead, so CI never silently skips them. Each test gets its own schema
(much faster to make than a database) and drops it afterwards.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import pytest

ADMIN_URL = os.environ.get("OFFLOAD_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRED = bool(os.environ.get("CI"))


@functools.cache
def unavailable() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it can."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is a dependency
        return f"psycopg is not installed: {exc}"
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"no PostgreSQL at {ADMIN_URL}: {' '.join(str(exc).split())[:200]}"
    return None


def require_postgres() -> None:
    """Skips the test (fails it under CI) when no PostgreSQL server is reachable."""
    reason = unavailable()
    if reason is None:
        return
    if REQUIRED:
        pytest.fail(f"PostgreSQL tests must run in CI: {reason}")
    pytest.skip(reason)


def url_for_schema(schema: str) -> str:
    """ADMIN_URL with every connection's search_path set to `schema`.

    Commits skip the wait for the disk flush (synchronous_commit=off): the tests prove
    ordering and exclusion, not durability across a server crash, and a flush costs
    ~9 ms on the test machines.
    """
    sep = "&" if "?" in ADMIN_URL else "?"
    options = f"-csearch_path={schema} -csynchronous_commit=off"
    return f"{ADMIN_URL}{sep}options={quote(options)}"


@contextmanager
def fresh_schema() -> Iterator[str]:
    """Creates an empty schema, yields a URL that uses it, then drops it and its sessions."""
    import psycopg

    require_postgres()
    schema = "t_" + secrets.token_hex(6)
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield url_for_schema(schema)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


class Clock:
    """A settable clock in UTC milliseconds, for stores whose leases a test moves on."""

    def __init__(self) -> None:
        self.now = 1_800_000_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def url() -> Iterator[str]:
    """A fresh schema's URL, dropped after the test."""
    with fresh_schema() as u:
        yield u


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pg(url: str, clock: Clock) -> Iterator[Any]:
    """A PostgresStore on its own schema, timed by `clock`."""
    from offload.queue.postgres import PostgresStore

    s = PostgresStore(url, clock=clock, pool_size=2)
    yield s
    s.close()
