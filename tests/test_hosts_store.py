"""The shared-queue side of the PostgreSQL Store that supervisors of several hosts use.

`as_shared()`, a fenced claim, the tasks earlier members left, the LISTEN socket a
supervisor selects on, and the bounds on waiting for an unreachable server.
"""

from __future__ import annotations

import select
import time

import pytest

from offload.errors import LeaseLost
from offload.queue.models import State, TaskSpec
from offload.queue.postgres import PostgresStore
from offload.queue.sqlite import SqliteStore
from pg_server import Clock


def spec(**kw: object) -> TaskSpec:
    return TaskSpec(command="true", cwd="/", workspace="/", **kw)  # type: ignore[arg-type]


def test_only_the_postgres_queue_is_shared(pg: PostgresStore, store: SqliteStore) -> None:
    assert pg.as_shared() is pg
    assert store.as_shared() is None


def test_a_member_whose_lease_ran_out_may_not_claim(pg: PostgresStore, clock: Clock) -> None:
    pg.register_member("A", host="h", pid=1, capacity=2, lease_seconds=30)
    first, second, third = pg.submit([spec(), spec(), spec()])
    assert [t.id for t in pg.claim(1, "A", {})] == [first.id]
    clock.now += 30_000  # expired, not yet reaped
    with pytest.raises(LeaseLost, match="may not claim"):
        pg.claim(1, "A", {})
    pg.reap_expired_members(clock.now)
    with pytest.raises(LeaseLost):
        pg.claim(1, "A", {})
    assert pg.get(second.id).state is State.PENDING  # nothing was taken under a lost id
    # a claimer that never registered (one host, a benchmark) is not fenced
    assert [t.id for t in pg.claim(1, "w0", {})] == [second.id]


def test_tasks_of_members_finds_what_earlier_members_left(pg: PostgresStore) -> None:
    pg.register_member("A", host="h", pid=1, capacity=2)
    pg.register_member("B", host="h", pid=2, capacity=2)
    a1, a2, b1, _ = pg.submit([spec(), spec(), spec(), spec()])
    pg.claim(2, "A", {})
    pg.claim(1, "B", {})
    pg.finish(a2.id, State.COMPLETED, supervisor_id="A")
    found = pg.tasks_of_members(["A"], [State.RUNNING, State.INTERRUPTED])
    assert [t.id for t in found] == [a1.id]
    assert [t.id for t in pg.tasks_of_members(["A", "B"], [State.RUNNING])] == [a1.id, b1.id]
    assert pg.tasks_of_members([], [State.RUNNING]) == []


def _readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def test_the_wake_socket_turns_readable_on_another_hosts_submit_and_cancel(url: str) -> None:
    supervisor = PostgresStore(url, pool_size=1)
    other = PostgresStore(url, pool_size=1)
    try:
        fd = supervisor.wake_fileno()
        assert supervisor.wake_fileno() == fd  # one listening connection
        assert not _readable(fd, 0.05)
        began = time.monotonic()
        (task,) = other.submit([spec()])
        assert _readable(fd, 5)
        assert time.monotonic() - began < 1.0
        assert supervisor.take_wakes() == {"submitted"}
        assert supervisor.take_wakes() == set()  # consumed, and it does not block
        assert not _readable(fd, 0.05)
        other.claim(1, "w0", {})
        other.request_cancel(task.id)
        kinds: set[str] = set()
        deadline = time.monotonic() + 5
        while "cancel_requested" not in kinds and _readable(fd, deadline - time.monotonic()):
            kinds |= supervisor.take_wakes()
        assert kinds == {"started", "cancel_requested"}
    finally:
        supervisor.close()
        other.close()


def test_limit_waits_bounds_the_connections_and_keeps_the_urls_options(url: str) -> None:
    store = PostgresStore(url, pool_size=1)
    try:
        store.limit_waits(0.7)
        row = store._read(
            lambda tx: tx.execute(
                "SELECT current_setting('idle_in_transaction_session_timeout') AS idle, "
                "current_setting('search_path') AS path"
            )
        )
        assert row is not None
        assert row["idle"] == "700ms"
        assert row["path"].startswith("t_")  # the test schema from the URL's own options
        listener = store.connect(autocommit=True)
        try:
            assert listener.info.get_parameters()["tcp_user_timeout"] == "700"
            assert listener.info.get_parameters()["keepalives_idle"] == "1"
        finally:
            listener.close()
        assert store.now_ms() > 0
    finally:
        store.close()
