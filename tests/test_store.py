"""The Store contract suite: written against the interface, run for every backend."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from offload.errors import AmbiguousId, IllegalTransition, InvalidInput, LeaseLost, NotFound
from offload.queue.models import State, TaskSpec
from offload.queue.postgres import PostgresStore
from offload.queue.sqlite import SqliteStore
from offload.queue.store import Store
from pg_server import fresh_schema


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, FakeClock]]:
    """Every contract test runs on SQLite and on PostgreSQL (a fresh schema per test)."""
    clock = FakeClock()
    if request.param == "sqlite":
        s: Store = SqliteStore(tmp_path / "data" / "queue.db", clock=clock)
        yield s, clock
        s.close()
        return
    with fresh_schema() as url:
        s = PostgresStore(url, clock=clock, pool_size=2)
        yield s, clock
        s.close()


@pytest.fixture
def s(backend: tuple[Store, FakeClock]) -> Store:
    return backend[0]


def spec(command: str = "true", **kw: object) -> TaskSpec:
    return TaskSpec(command=command, cwd="/tmp", workspace="/tmp", **kw)  # type: ignore[arg-type]


def test_submit_get_and_prefix(s: Store) -> None:
    (task,) = s.submit([spec("echo hi")])
    assert len(task.id) == 32 and int(task.id, 16) >= 0
    assert task.state is State.PENDING and task.attempt == 1
    assert s.get(task.id[:6]).id == task.id
    assert s.get(task.id.upper()).id == task.id
    with pytest.raises(NotFound, match="at least 6"):
        s.get(task.id[:5])
    with pytest.raises(NotFound, match="no task matches"):
        s.get("ffffff" if not task.id.startswith("ffffff") else "000000")


def test_ambiguous_prefix(s: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = iter(["abcdef0123" + "a" * 22, "abcdef0123" + "b" * 22])
    monkeypatch.setattr("offload.queue.sqlite.new_task_id", lambda: next(ids))
    monkeypatch.setattr("offload.queue.postgres.tasks.new_task_id", lambda: next(ids))
    first, second = s.submit([spec(), spec()])
    assert (first.id, second.id) == ("abcdef0123" + "a" * 22, "abcdef0123" + "b" * 22)
    for shared in ("abcdef", "abcdef0123", "ABCDEF0123"):
        with pytest.raises(AmbiguousId, match="matches several tasks"):
            s.get(shared)
    assert s.get("abcdef0123a").id == first.id
    assert s.get("abcdef0123bb").id == second.id
    with pytest.raises(NotFound, match="no task matches"):
        s.get("abcdef0123c")


def test_claim_honours_priority_then_fifo(s: Store) -> None:
    low = s.submit([spec("a", priority=9)])[0]
    first = s.submit([spec("b", priority=5)])[0]
    second = s.submit([spec("c", priority=5)])[0]
    urgent = s.submit([spec("d", priority=1)])[0]
    claimed = s.claim(10, "sup", {})
    assert [t.id for t in claimed] == [urgent.id, first.id, second.id, low.id]
    assert all(t.state is State.RUNNING and t.supervisor_id == "sup" for t in claimed)
    assert s.claim(10, "sup", {}) == []


def test_group_is_a_lane_unless_configured(s: Store) -> None:
    a, b, c = s.submit([spec(group="build"), spec(group="build"), spec(group="build")])
    other = s.submit([spec(group="docs")])[0]
    claimed = s.claim(10, "sup", {})
    assert {t.id for t in claimed} == {a.id, other.id}
    s.finish(a.id, State.COMPLETED, exit_code=0)
    assert [t.id for t in s.claim(10, "sup", {})] == [b.id]
    s.finish(b.id, State.COMPLETED, exit_code=0)
    d = s.submit([spec(group="build")])[0]
    assert {t.id for t in s.claim(10, "sup", {"build": 2})} == {c.id, d.id}


def test_full_groups_do_not_block_other_groups_or_the_default_limit(s: Store) -> None:
    build = s.submit([spec(group="build", priority=1) for _ in range(3)])
    docs = s.submit([spec(group="docs", priority=2) for _ in range(3)])
    free = s.submit([spec(priority=9)])[0]
    claimed = s.claim(10, "sup", {"build": 1}, default_group_limit=2)
    assert [t.id for t in claimed] == [build[0].id, docs[0].id, docs[1].id, free.id]
    assert s.claim(10, "sup", {"build": 1}, default_group_limit=2) == []
    s.finish(docs[0].id, State.COMPLETED, exit_code=0)
    assert [t.id for t in s.claim(10, "sup", {"build": 1}, default_group_limit=2)] == [docs[2].id]
    assert [t.id for t in s.claim(10, "sup", {"build": 2})] == [build[1].id]


def test_claim_takes_only_tasks_whose_labels_the_claimer_has(s: Store) -> None:
    anywhere, gpu, gpu_linux = s.submit(
        [spec("true"), spec("true", run_on=("gpu",)), spec("true", run_on=("gpu", "linux"))]
    )
    assert [t.id for t in s.claim(5, "plain", {})] == [anywhere.id]
    assert s.claim(5, "linux-only", {}, labels=("linux",)) == []
    assert [t.id for t in s.claim(5, "gpu", {}, labels=("gpu",))] == [gpu.id]
    claimed = s.claim(5, "both", {}, labels=("linux", "gpu", "big"))
    assert [t.id for t in claimed] == [gpu_linux.id]


def test_a_labelled_task_does_not_hold_a_group_slot_from_others(s: Store) -> None:
    gpu, free = s.submit([spec("true", group="g", run_on=("gpu",)), spec("true", group="g")])
    assert [t.id for t in s.claim(5, "plain", {"g": 1})] == [free.id]
    assert gpu.state is State.PENDING


def test_claim_cost_does_not_grow_per_task_with_the_full_groups(tmp_path: Path) -> None:
    """Skipping a task of a full group is one cheap check, not a count of the group.

    Counted in SQLite VM steps, which are deterministic where wall time is not: the old
    per-task count of running tasks cost ~43 steps per blocked task, the CTE ~16.
    """
    s = SqliteStore(tmp_path / "queue.db")
    s.submit([spec(group="build") for _ in range(2000)])
    assert len(s.claim(1, "sup", {})) == 1  # the lane is busy: 1,999 tasks are blocked
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    s._db.set_progress_handler(count, 1)
    assert s.claim(1, "sup", {}) == []
    s._db.set_progress_handler(None, 1)
    assert steps / 2000 < 25
    s.close()


def test_dependencies_wait_then_run(s: Store) -> None:
    dep = s.submit([spec("dep")])[0]
    child = s.submit([spec("child", depends_on=(dep.id,), priority=1)])[0]
    assert child.depends_on == (dep.id,)
    assert [t.id for t in s.claim(10, "sup", {})] == [dep.id]
    assert s.claim(10, "sup", {}) == []
    s.finish(dep.id, State.COMPLETED, exit_code=0)
    assert [t.id for t in s.claim(10, "sup", {})] == [child.id]


def test_failed_dependency_fails_dependents_transitively(s: Store) -> None:
    dep = s.submit([spec("dep")])[0]
    mid = s.submit([spec("mid", depends_on=(dep.id,))])[0]
    leaf = s.submit([spec("leaf", depends_on=(mid.id,))])[0]
    s.claim(1, "sup", {})
    s.finish(dep.id, State.FAILED, exit_code=2, error="exited with code 2")
    assert s.get(mid.id).state is State.FAILED
    assert f"dependency {dep.id[:12]} ended failed" in (s.get(mid.id).error or "")
    assert f"dependency {mid.id[:12]}" in (s.get(leaf.id).error or "")


def test_unknown_or_failed_dependency_refused(s: Store) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        s.submit([spec(depends_on=("0" * 32,))])
    dep = s.submit([spec()])[0]
    s.claim(1, "sup", {})
    s.finish(dep.id, State.FAILED, exit_code=1)
    with pytest.raises(InvalidInput, match="retry it first"):
        s.submit([spec(depends_on=(dep.id,))])
    assert s.list(limit=100)[0].id == dep.id  # the refused batch stored nothing


def test_batch_is_all_or_nothing(s: Store) -> None:
    with pytest.raises(InvalidInput):
        s.submit([spec("ok"), spec("bad", depends_on=("f" * 32,))])
    assert s.list() == []


@pytest.mark.parametrize(
    ("setup", "action", "message"),
    [
        ("completed", "retry", "only cancelled or failed or interrupted or timed_out tasks"),
        ("completed", "cancel", "it is completed"),
        ("pending", "retry", "it is pending"),
        ("running", "retry", "it is running"),
        ("pending", "finish", "it is pending"),
    ],
)
def test_illegal_transitions_name_the_state(
    s: Store, setup: str, action: str, message: str
) -> None:
    task = s.submit([spec()])[0]
    if setup in {"running", "completed"}:
        s.claim(1, "sup", {})
    if setup == "completed":
        s.finish(task.id, State.COMPLETED, exit_code=0)
    with pytest.raises(IllegalTransition, match=message):
        if action == "retry":
            s.retry(task.id)
        elif action == "cancel":
            s.request_cancel(task.id)
        else:
            s.finish(task.id, State.COMPLETED)


def test_cancel_pending_is_immediate_running_is_requested(s: Store) -> None:
    pending, running = s.submit([spec("p", priority=9), spec("r", priority=1)])
    s.claim(1, "sup", {})
    assert s.request_cancel(pending.id[:8]).state is State.CANCELLED
    after = s.request_cancel(running.id)
    assert after.state is State.RUNNING and after.cancel_requested
    assert [t.id for t in s.cancel_requests()] == [running.id]
    s.finish(running.id, State.CANCELLED, error="cancelled while running")
    done = s.get(running.id)
    assert done.state is State.CANCELLED
    assert not done.cancel_requested and s.cancel_requests() == []


def test_mark_started_updates_updated_at(s: Store, backend: tuple[Store, FakeClock]) -> None:
    clock = backend[1]
    task = s.submit([spec()])[0]
    s.claim(1, "sup", {})
    clock.now += 1234
    s.mark_started(task.id, pid=123, pgid=123, proc_start=None, cgroup=None, log_path="/x")
    started = s.get(task.id)
    assert started.pid == 123 and started.updated_at == clock.now


def test_writes_about_a_task_are_fenced_to_the_supervisor_that_runs_it(s: Store) -> None:
    task = s.submit([spec()])[0]
    s.claim(1, "A", {})
    started = {"pid": 7, "pgid": 7, "proc_start": None, "cgroup": None, "log_path": "/x"}
    with pytest.raises(LeaseLost, match="no longer run by supervisor B"):
        s.mark_started(task.id, **started, supervisor_id="B")
    with pytest.raises(LeaseLost, match="no longer run by supervisor B"):
        s.finish(task.id, State.FAILED, exit_code=1, supervisor_id="B")
    left = s.get(task.id)
    assert (left.state, left.pid, left.exit_code) == (State.RUNNING, None, None)
    s.mark_started(task.id, **started, supervisor_id="A")
    s.finish(task.id, State.COMPLETED, exit_code=0, supervisor_id="A")
    assert s.get(task.id).pid == 7
    with pytest.raises(LeaseLost, match="is completed"):  # a late second end by its own
        s.finish(task.id, State.FAILED, exit_code=1, supervisor_id="A")
    with pytest.raises(LeaseLost, match="is completed"):
        s.mark_started(task.id, **started, supervisor_id="A")
    with pytest.raises(IllegalTransition, match="it is completed"):  # unfenced: the state
        s.finish(task.id, State.FAILED)
    assert s.get(task.id).state is State.COMPLETED
    with pytest.raises(NotFound):
        s.finish("0" * 32, State.FAILED, supervisor_id="A")


def test_huge_limits_and_offsets_are_clamped(s: Store) -> None:
    tasks = s.submit([spec(), spec()])
    huge = 10**20  # past SQLite's 64-bit integers
    assert [t.id for t in s.list(limit=huge)] == [t.id for t in reversed(tasks)]
    assert s.list(limit=huge, offset=huge) == []
    assert s.list(limit=-1, offset=-1) == []
    assert len(s.events_since(0, limit=huge)) == 2


def test_retry_resets_and_counts_attempts(s: Store) -> None:
    task = s.submit([spec()])[0]
    s.claim(1, "sup", {})
    s.mark_started(task.id, pid=123, pgid=123, proc_start=None, cgroup=None, log_path="/x")
    s.finish(task.id, State.TIMED_OUT, error="timed out after 1 s")
    again = s.retry(task.id)
    assert again.state is State.PENDING and again.attempt == 2
    assert again.error is None and again.pid is None and again.exit_code is None


def test_retry_failed_skips_tasks_whose_dependency_was_cancelled(s: Store) -> None:
    flaky = s.submit([spec("make test")])[0]
    s.claim(1, "sup", {})
    s.finish(flaky.id, State.FAILED, exit_code=1)
    cancelled = s.submit([spec("a")])[0]
    blocked = s.submit([spec("b", depends_on=(cancelled.id,))])[0]
    s.request_cancel(cancelled.id)
    assert s.get(blocked.id).state is State.FAILED
    assert [t.id for t in s.retry_failed()] == [flaky.id]
    assert s.get(flaky.id).state is State.PENDING
    assert s.get(blocked.id).state is State.FAILED and s.get(cancelled.id).attempt == 1


def test_retry_failed_retries_dependencies_first(s: Store) -> None:
    dep = s.submit([spec("dep")])[0]
    child = s.submit([spec("child", depends_on=(dep.id,))])[0]
    s.claim(1, "sup", {})
    s.finish(dep.id, State.FAILED, exit_code=1)
    assert s.get(child.id).state is State.FAILED
    with pytest.raises(IllegalTransition, match="retry that one first"):
        s.retry(child.id)
    retried = s.retry_failed()
    assert [t.id for t in retried] == [dep.id, child.id]
    assert all(t.state is State.PENDING for t in retried)


def test_purge_removes_rows_and_leaves_files_to_their_owner(
    s: Store, backend: tuple[Store, FakeClock], tmp_path: Path
) -> None:
    clock = backend[1]
    old, recent, failed = s.submit([spec("old"), spec("recent"), spec("failed")])
    log = tmp_path / "old.log"
    log.write_text("output")
    s.claim(3, "sup", {})
    s.mark_started(old.id, pid=1, pgid=1, proc_start=None, cgroup=None, log_path=str(log))
    s.finish(old.id, State.COMPLETED, exit_code=0)
    clock.now += 3_600_000
    s.finish(recent.id, State.COMPLETED, exit_code=0)
    s.finish(failed.id, State.FAILED, exit_code=1)
    purged = s.purge(older_than_ms=1_800_000)
    assert [t.id for t in purged] == [old.id] and log.exists()  # the desk deletes files
    assert {t.id for t in s.list()} == {recent.id, failed.id}
    assert [t.id for t in s.purge(states=[State.FAILED])] == [failed.id]
    with pytest.raises(IllegalTransition, match="cancel them first"):
        s.purge(states=[State.RUNNING])


def test_events_are_an_ordered_change_feed(s: Store) -> None:
    start = s.last_event_seq()
    task = s.submit([spec()])[0]
    s.claim(1, "sup", {})
    s.set_progress(task.id, 0.5, "[5/10]")
    s.set_progress(task.id, 0.5, "[5/10]")  # unchanged: no event
    s.finish(task.id, State.COMPLETED, exit_code=0)
    events = s.events_since(start)
    assert [e.kind for e in events] == ["submitted", "started", "progress", "finished"]
    assert events[-1].detail["state"] == "completed"
    assert s.events_since(events[1].seq, task_ids=[task.id])[0].kind == "progress"
    assert s.events_since(events[-1].seq) == []


def test_usage_and_stats(s: Store, backend: tuple[Store, FakeClock]) -> None:
    clock = backend[1]
    a, b, c = s.submit([spec(), spec(), spec()])
    s.claim(3, "sup", {})
    s.record_usage(a.id, tokens_in=100, tokens_out=50, cost_usd=0.25, model_used="gpt-4o")
    s.record_usage(a.id, tokens_in=10, tokens_out=5, cost_usd=0.05, model_used="gpt-4o")
    s.record_usage(b.id, tokens_in=7, tokens_out=3, cost_usd=None, model_used="mystery")
    for t in (a, b):
        s.finish(t.id, State.COMPLETED, exit_code=0)
    assert s.get(a.id).cost_usd == pytest.approx(0.30) and s.get(a.id).tokens_in == 110
    assert s.get(b.id).cost_usd is None  # unknown price stays unknown, never 0
    stats = s.stats(clock.now)
    assert stats.counts == {"completed": 2, "running": 1}
    assert stats.cost_today_usd == pytest.approx(0.30)
    assert stats.tokens_in == 117 and len(stats.days) == 14
    assert stats.days[-1].by_model == {"gpt-4o": pytest.approx(0.30)}
    assert stats.days[-1].finished == 2
    s.finish(c.id, State.CANCELLED)


def test_database_files_are_private(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "fresh" / "queue.db")
    s.submit([spec()])
    assert stat.S_IMODE((tmp_path / "fresh").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "fresh" / "queue.db").stat().st_mode) == 0o600
    s.close()


_CLAIMER = r"""
import sys
from offload.queue.sqlite import SqliteStore
s = SqliteStore(sys.argv[1])
out = open(sys.argv[2], "w")
while True:
    got = s.claim(7, sys.argv[3], {})
    if not got:
        break
    out.write("".join(t.id + "\n" for t in got))
out.close()
"""


def test_racing_claimers_claim_each_task_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "race.db"
    s = SqliteStore(db)
    ids = set()
    for _ in range(5):
        ids |= {t.id for t in s.submit([spec() for _ in range(1000)])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, str(db), str(tmp_path / f"{i}.out"), f"w{i}"]
        )
        for i in range(4)
    ]
    for p in procs:
        assert p.wait(120) == 0
    claimed = [line for i in range(4) for line in (tmp_path / f"{i}.out").read_text().split()]
    assert len(claimed) == 5000 and set(claimed) == ids
    assert s.list([State.PENDING]) == []
    s.close()


def test_an_older_database_is_migrated_in_place(tmp_path: Path) -> None:
    from offload.queue.schema import MIGRATIONS

    db = sqlite3.connect(tmp_path / "old.db")
    db.executescript(MIGRATIONS[0])
    db.execute(
        "INSERT INTO tasks (id, type, state, cwd, workspace, priority, created_at, "
        "updated_at) VALUES ('ab' || lower(hex(randomblob(15))), 'shell', 'pending', '/', '/', "
        "5, 0, 0)"
    )
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    s = SqliteStore(tmp_path / "old.db")
    (task,) = s.list()
    assert task.tokens_cached is None and task.state is State.PENDING
    s.claim(1, "sup", {})
    s.record_usage(
        task.id, tokens_in=10, tokens_out=1, cost_usd=None, model_used="m", tokens_cached=4
    )
    assert s.get(task.id).tokens_cached == 4
    s.close()


def test_a_claim_and_a_finish_write_only_the_pages_they_change(tmp_path: Path) -> None:
    """Each page a transaction dirties is a frame in the write-ahead log, written on every
    task's claim and finish: the indexes hold only the rows they serve (pending, grouped,
    finished), so an ungrouped task's claim and finish leave the others untouched."""
    s = SqliteStore(tmp_path / "q.db")
    task = s.submit([spec()])[0]
    wal = tmp_path / "q.db-wal"
    frame = 24 + s._db.execute("PRAGMA page_size").fetchone()[0]

    def frames(write: Callable[[], object]) -> int:
        s._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        write()
        return (wal.stat().st_size - 32) // frame  # 32: the log's own header

    # the row, the state index, the event, its index, the event sequence, and one of the
    # pending (claim) or finished (finish) index; never the group index
    assert frames(lambda: s.claim(1, "sup", {})) == 6
    assert frames(lambda: s.finish(task.id, State.COMPLETED, exit_code=0)) == 6
    plan = " ".join(
        row[3]
        for row in s._db.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM tasks WHERE state = 'pending' "
            "ORDER BY priority, seq LIMIT 1"
        )
    )
    assert "tasks_claim" in plan and "TEMP B-TREE" not in plan, plan
    s.close()


def test_the_supervisor_s_connection_leaves_checkpoints_to_a_thread(tmp_path: Path) -> None:
    """A commit past 1,000 pages of log would copy the log into the database and sync both
    in the supervisor's loop. With checkpoints aside its commits leave that to a thread,
    woken every so many commits, which stops when asked (see the next test for the log's
    bound)."""
    s = SqliteStore(tmp_path / "q.db")
    s.submit([spec()])
    s._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    main = tmp_path / "q.db"
    before = main.read_bytes()

    def threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name == "offload-checkpoints"]

    stop = s.checkpoint_aside(every=10**9)  # a thread that is never woken
    for i in range(1_200):  # each a commit of its own, more than 1,000 pages in all
        s.heartbeat(f"sup-{i}", i)
    assert main.read_bytes() == before, "a commit checkpointed in line"
    stop()
    assert not threads()

    stop = s.checkpoint_aside(every=100)
    for i in range(100):
        s.heartbeat(f"sup-{i}", i)
    deadline = time.monotonic() + 10
    while main.read_bytes() == before:  # the thread copies the log into the file
        assert time.monotonic() < deadline, "no checkpoint aside"
        time.sleep(0.01)
    assert threads()
    stop()
    assert not threads()
    assert s.supervisor_info() is not None  # the connection goes on as before
    s.close()


@pytest.mark.slow
def test_a_long_burst_of_commits_keeps_the_log_small_with_checkpoints_aside(
    tmp_path: Path,
) -> None:
    """Only a writer starts the log over, and a checkpoint beside a busy writer never catches
    up with it: with no checkpoint of its own the log grew by every commit (40 MB after
    10,000). The writer still checkpoints itself, every 2,000 pages."""
    s = SqliteStore(tmp_path / "q.db")
    stop = s.checkpoint_aside()
    page = s._db.execute("PRAGMA page_size").fetchone()[0]
    for i in range(10_000):  # back to back, as a busy loop commits
        s.heartbeat(f"sup-{i % 50}", i)
    stop()
    wal = (tmp_path / "q.db-wal").stat().st_size
    assert wal < 3_000 * (page + 24), f"the log grew to {wal // 1024} KiB"
    s.close()


def test_purge_with_an_absurd_age_purges_nothing_and_negative_is_refused(s: Store) -> None:
    task = s.submit([spec()])[0]
    s.claim(1, "sup", {})
    s.finish(task.id, State.COMPLETED, exit_code=0)
    assert s.purge(older_than_ms=10**30) == []
    with pytest.raises(InvalidInput, match="zero or more"):
        s.purge(older_than_ms=-1)
