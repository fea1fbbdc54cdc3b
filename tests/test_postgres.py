"""PostgreSQL-only behaviour: members and leases, fencing, shipped output, LISTEN/NOTIFY,
migrations and the errors a person sees for a bad server or URL.

The Store contract itself runs on PostgreSQL in test_store.py.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from conftest import wait_until
from offload.config import load_settings
from offload.errors import IllegalTransition, LeaseLost, StoreError
from offload.queue.models import State, TaskSpec
from offload.queue.postgres import PostgresStore, redact
from offload.queue.postgres.migrate import SCHEMA_VERSION
from pg_server import Clock, require_postgres


def spec(**kw: object) -> TaskSpec:
    return TaskSpec(command="sleep 100", cwd="/", workspace="/", **kw)  # type: ignore[arg-type]


# -- members, leases, reaping ---------------------------------------------------------------
def test_expired_member_is_reaped_and_its_tasks_interrupted(
    pg: PostgresStore, clock: Clock
) -> None:
    pg.register_member("A", host="build-1", pid=11, labels=["gpu"], capacity=2, lease_seconds=30)
    pg.register_member("B", host="build-2", pid=22, capacity=2, lease_seconds=30)
    a1, a2, b1 = pg.submit([spec(), spec(), spec()])
    dependent = pg.submit([spec(depends_on=(a1.id,))])[0]
    assert len(pg.claim(2, "A", {})) == 2
    assert len(pg.claim(1, "B", {})) == 1
    clock.now += 10_000
    assert pg.renew_lease("B", 30)
    assert pg.reap_expired_members(clock.now) == []  # nobody expired yet
    clock.now += 25_000  # A last renewed 35 s ago, B 25 s ago
    reaped = pg.reap_expired_members(clock.now)
    assert [t.id for t in reaped] == [a1.id, a2.id]
    for task in (pg.get(a1.id), pg.get(a2.id)):
        assert task.state is State.INTERRUPTED
        assert task.error == "host build-1 stopped renewing its lease at 2027-01-15 08:00:00 UTC"
    assert pg.get(b1.id).state is State.RUNNING
    assert pg.get(dependent.id).state is State.FAILED
    assert pg.reap_expired_members(clock.now) == []  # reaped once only
    members = {m.id: m for m in pg.members()}
    assert members["A"].lost_at == clock.now and members["A"].labels == ("gpu",)
    assert members["B"].alive_at(clock.now)
    kinds = [e.kind for e in pg.events_since(0)]
    assert "member_lost" in kinds


def test_a_lost_lease_cannot_be_renewed_and_fences_every_write(
    pg: PostgresStore, clock: Clock
) -> None:
    pg.register_member("A", host="h", pid=1, capacity=1, lease_seconds=30)
    task = pg.submit([spec()])[0]
    pg.claim(1, "A", {})
    clock.now += 31_000
    # expired but not yet reaped: the lease is lost already, and so are the writes
    assert not pg.renew_lease("A")
    with pytest.raises(LeaseLost, match="lost its lease"):
        pg.finish(task.id, State.COMPLETED, exit_code=0, supervisor_id="A")
    assert pg.get(task.id).state is State.RUNNING
    pg.reap_expired_members(clock.now)
    # the late finish never overwrites interrupted; neither do the other writes
    with pytest.raises(LeaseLost, match="is interrupted"):
        pg.finish(task.id, State.COMPLETED, exit_code=0, supervisor_id="A")
    with pytest.raises(LeaseLost):
        pg.mark_started(
            task.id, pid=5, pgid=5, proc_start=None, cgroup=None, log_path="/x", supervisor_id="A"
        )
    with pytest.raises(LeaseLost):
        pg.set_progress(task.id, 0.5, "half", supervisor_id="A")
    with pytest.raises(LeaseLost):
        pg.record_result(task.id, result="late", supervisor_id="A")
    with pytest.raises(LeaseLost):
        pg.append_output(task.id, 0, b"late", supervisor_id="A")
    after = pg.get(task.id)
    assert after.state is State.INTERRUPTED and after.pid is None and after.result is None
    assert pg.output_size(task.id) == 0
    # a reaped id cannot come back; a restarted supervisor registers a new one
    with pytest.raises(LeaseLost, match="new id"):
        pg.register_member("A", host="h", pid=2, capacity=1)
    # a finish without fencing still names the state, as on SQLite
    with pytest.raises(IllegalTransition, match="it is interrupted"):
        pg.finish(task.id, State.COMPLETED)


def test_a_write_by_another_supervisor_is_refused(pg: PostgresStore) -> None:
    pg.register_member("A", host="h1", pid=1, capacity=1)
    pg.register_member("B", host="h2", pid=2, capacity=1)
    task = pg.submit([spec()])[0]
    pg.claim(1, "A", {})
    with pytest.raises(LeaseLost, match="no longer run by supervisor B"):
        pg.finish(task.id, State.FAILED, exit_code=1, supervisor_id="B")
    pg.finish(task.id, State.COMPLETED, exit_code=0, supervisor_id="A")
    assert pg.get(task.id).state is State.COMPLETED


@pytest.mark.slow
def test_a_finish_racing_the_reaper_leaves_one_outcome(url: str) -> None:
    """Reaper and late finisher on separate connections: exactly one of them wins."""
    for _ in range(5):
        a = PostgresStore(url, pool_size=1)
        b = PostgresStore(url, pool_size=1)
        a.register_member("A", host="h", pid=1, capacity=1, lease_seconds=30)
        task = a.submit([spec()])[0]
        a.claim(1, "A", {})  # an expired member may not claim: shorten the lease after
        a.register_member("A", host="h", pid=1, capacity=1, lease_seconds=0.001)
        expires = a._clock() + 2  # the lease runs out before the finish is tried
        wait_until(lambda a=a, expires=expires: a._clock() >= expires, what="lease expired")
        outcome: dict[str, object] = {}

        def finish(
            a: PostgresStore = a, task_id: str = task.id, outcome: dict[str, object] = outcome
        ) -> None:
            try:
                a.finish(task_id, State.COMPLETED, supervisor_id="A")
                outcome["finish"] = State.COMPLETED
            except LeaseLost as exc:
                outcome["finish"] = exc

        t = threading.Thread(target=finish)
        t.start()
        reaped = b.reap_expired_members(b._clock() + 1000)
        t.join(10)
        final = b.get(task.id)
        assert final.state is State.INTERRUPTED  # the lease had run out: the finish is refused
        assert isinstance(outcome["finish"], LeaseLost)
        assert [r.id for r in reaped] in ([task.id], [])
        finished = [e for e in b.events_since(0, task_ids=[task.id]) if e.kind == "finished"]
        assert len(finished) == 1  # nothing double-counted
        a.retire_member("A")
        a.close()
        b.close()


def test_retire_interrupts_what_is_left_and_renew_of_unknown_is_false(pg: PostgresStore) -> None:
    pg.register_member("A", host="h1", pid=1, capacity=1)
    task = pg.submit([spec()])[0]
    pg.claim(1, "A", {})
    assert [t.id for t in pg.retire_member("A")] == [task.id]
    assert pg.get(task.id).error == "the supervisor on h1 stopped while it ran"
    assert not pg.renew_lease("A") and pg.members() == []


# -- output shipped in chunks ---------------------------------------------------------------
def test_output_chunks_append_read_tail_and_cap(url: str) -> None:
    s = PostgresStore(url, pool_size=1, max_output_bytes=10)
    s.register_member("A", host="h", pid=1, capacity=1)
    task = s.submit([spec()])[0]
    s.claim(1, "A", {})
    assert s.append_output(task.id, 0, b"hello ", supervisor_id="A") == 6
    assert s.append_output(task.id, 0, b"hello ", supervisor_id="A") == 6  # resent: kept once
    assert s.append_output(task.id, 6, b"world", supervisor_id="A") == 11
    assert s.read_output(task.id).data == b"hello world"
    assert s.read_output(task.id, 3, 5).data == b"lo wo"
    assert s.output_tail(task.id, 4) == b"orld"
    # past the cap (10) whole chunks before the last 10 bytes go; a straddling one stays
    s.append_output(task.id, 11, b"!!", supervisor_id="A")
    assert s.read_output(task.id).data == b"hello world!!"
    big = s.append_output(task.id, 13, b"0123456789ABCDEF", supervisor_id="A")
    sliced = s.read_output(task.id)
    assert big == 29 and sliced.size == 29
    assert (sliced.start, sliced.data) == (19, b"6789ABCDEF")  # only the tail survives
    assert s.output_tail(task.id, 3) == b"DEF"
    with pytest.raises(LeaseLost):
        s.append_output(task.id, 29, b"x", supervisor_id="B")
    s.finish(task.id, State.FAILED, exit_code=1)
    s.retry(task.id)  # a new attempt starts with empty output
    assert s.output_size(task.id) == 0
    s.close()


# -- LISTEN/NOTIFY --------------------------------------------------------------------------
def test_wait_for_event_wakes_on_another_hosts_submit(url: str) -> None:
    waiter = PostgresStore(url, pool_size=1)
    other = PostgresStore(url, pool_size=1)
    cursor = waiter.last_event_seq()
    assert not waiter.wait_for_event(cursor, 0.05)  # nothing happened: times out
    woke: dict[str, float] = {}

    def wait() -> None:
        start = time.monotonic()
        woke["ok"] = waiter.wait_for_event(cursor, 10)
        woke["after"] = time.monotonic() - start

    t = threading.Thread(target=wait)
    t.start()
    other.submit([spec()])
    t.join(15)
    assert woke["ok"] and woke["after"] < 5  # woken by NOTIFY, not by the 10 s timeout
    assert waiter.wait_for_event(cursor, 0)  # already there: returns at once
    waiter.close()
    other.close()


# -- migrations, errors, settings -----------------------------------------------------------
def test_migrations_run_once_even_when_hosts_start_together(url: str) -> None:
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(PostgresStore(url, pool_size=1))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(stores) == 4
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version FROM offload_schema").fetchall() == [(SCHEMA_VERSION,)]
    for s in stores:
        s.close()


def test_a_newer_schema_is_refused_with_the_url_without_password(url: str) -> None:
    PostgresStore(url, pool_size=1).close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO offload_schema (version) VALUES (999)")
    secret_url = url.replace("postgres@", "postgres:hunter2@")
    with pytest.raises(StoreError, match="schema version 999, newer") as caught:
        PostgresStore(secret_url, pool_size=1)
    assert "hunter2" not in str(caught.value) and "postgres:***@" in str(caught.value)


def test_an_unreachable_server_is_one_clear_line_without_password() -> None:
    require_postgres()
    with pytest.raises(StoreError) as caught:
        PostgresStore("postgresql://bob:s3cret@127.0.0.1:1/queue", pool_size=1)
    message = str(caught.value)
    assert message.startswith("cannot connect to PostgreSQL at postgresql://bob:***@127.0.0.1:1/")
    assert "s3cret" not in message and "\n" not in message
    assert "OFFLOAD_DATABASE_URL" in message


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        (
            "postgresql://u@h/db?password=pw&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("postgresql://h/db", "postgresql://h/db"),
        ("host=h password='a b' dbname=d", "host=h password=*** dbname=d"),
    ],
)
def test_redact_hides_passwords(raw: str, shown: str) -> None:
    assert redact(raw) == shown


def test_database_url_setting_reads_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().database_url is None
    monkeypatch.setenv("OFFLOAD_DATABASE_URL", "postgresql://u@h/db")
    assert load_settings().database_url == "postgresql://u@h/db"


def test_a_group_another_host_is_claiming_from_is_skipped(pg: PostgresStore, url: str) -> None:
    """While one claimer holds a group (mid-claim on another host), nobody else counts it.

    Without the group row lock a second claimer would judge the group's free slots from a
    snapshot that misses the first claimer's commit, and both could take the last slot.
    """
    grouped = pg.submit([spec(group="build")])[0]
    free = pg.submit([spec(priority=9)])[0]
    with psycopg.connect(url) as other, other.transaction():
        other.execute("SELECT grp FROM groups WHERE grp = 'build' FOR UPDATE")
        assert [t.id for t in pg.claim(5, "B", {"build": 5})] == [free.id]
    assert [t.id for t in pg.claim(5, "B", {"build": 5})] == [grouped.id]
