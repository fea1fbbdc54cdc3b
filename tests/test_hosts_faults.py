"""A host that dies, hangs or is paused while it runs tasks of a shared PostgreSQL queue.

kill -9: a live member marks its tasks interrupted within lease + 5 s, and the survivors
are killed when a supervisor starts again on that host. SIGSTOP past the lease: the
paused supervisor, resumed, kills its trees and writes nothing about them (fencing). The
last test drives one supervisor a pass at a time to show the fenced write itself.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import marked_processes, wait_until
from hosts_cluster import cluster, elapsed_until, tree_gone
from offload.config import load_settings
from offload.queue.models import State, TaskSpec
from offload.queue.postgres import PostgresStore
from pg_server import fresh_schema

LEASE_SECONDS = 2.0
LONG = "sleep 300"


@pytest.mark.slow
def test_kill_9_a_host_its_tasks_are_interrupted_and_its_successor_kills_the_survivors(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path, lease_seconds=LEASE_SECONDS, grace_seconds=1) as c:
        a = c.start("a", labels="a")
        c.start("b")
        tasks = c.submit(f"sh -c '{LONG}; true' & {LONG}", 2, run_on=("a",))
        ids = [t.id for t in tasks]
        c.wait_started(ids)
        wait_until(lambda: all(len(marked_processes(i)) >= 2 for i in ids), what="trees")
        lost = c.live_member("a")
        assert lost is not None
        a.signal(signal.SIGKILL)
        a.proc.wait()  # type: ignore[union-attr]
        took = elapsed_until(
            lambda: all(t.state is State.INTERRUPTED for t in c.store.get_many(ids)),
            timeout=LEASE_SECONDS + 5,
            what="the dead host's tasks to be interrupted",
        )
        print(f"interrupted {took:.2f} s after kill -9 (lease {LEASE_SECONDS:g} s)")
        for task in c.store.get_many(ids):
            assert task.error and task.error.startswith("host a stopped renewing its lease at ")
            assert c.finished_events(task.id) == ["interrupted"]
        assert all(marked_processes(i) for i in ids)  # nobody on host a killed them yet
        # a supervisor starts again on host a (same data dir): the survivors go
        a.start()
        wait_until(lambda: all(tree_gone(i) for i in ids), timeout=15, what="survivors killed")
        assert "recovered_orphan" in a.log_text()
        assert lost.id not in {m.id for m in c.store.members()}  # retired once recovered
        for task in c.store.get_many(ids):
            assert task.state is State.INTERRUPTED
            assert c.finished_events(task.id) == ["interrupted"]  # marked once, by b


@pytest.mark.slow
def test_sigstop_past_the_lease_kills_its_trees_and_writes_nothing_late(tmp_path: Path) -> None:
    with cluster(tmp_path, lease_seconds=LEASE_SECONDS) as c:
        a = c.start("a", labels="a")
        c.start("b")
        go = tmp_path / "go"
        waits = f"while [ ! -e {go} ]; do sleep 0.05; done"  # ends when the test says
        (long, quick) = c.submit(LONG, run_on=("a",)) + c.submit(waits, run_on=("a",))
        ids = [long.id, quick.id]
        c.wait_started(ids)
        old = c.live_member("a")
        assert old is not None
        a.signal(signal.SIGSTOP)
        c.wait_state(ids, {State.INTERRUPTED}, timeout=LEASE_SECONDS + 5)
        go.touch()  # the quick task ends while its supervisor is stopped: a late finish
        wait_until(lambda: tree_gone(quick.id), what="the quick task to exit")
        assert marked_processes(long.id)
        a.signal(signal.SIGCONT)
        wait_until(lambda: tree_gone(long.id), timeout=10, what="a to kill its tree")
        joined = wait_until(lambda: c.live_member("a"), what="a to register again")
        assert joined.id != old.id
        log = a.log_text()
        assert "lease_lost" in log and "end_not_written" in log
        for task in c.store.get_many(ids):
            assert task.state is State.INTERRUPTED
            assert task.error and task.error.startswith("host a stopped renewing its lease")
            assert c.finished_events(task.id) == ["interrupted"]  # nothing double-counted
        assert c.store.stats(c.store.now_ms()).counts.get("completed", 0) == 0
        # and a goes on under its new id
        (after,) = c.submit("true", run_on=("a",))
        assert c.wait_state([after.id], {State.COMPLETED})[0].supervisor_id == joined.id


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_schema() as url:
        yield url


class _Clock:
    """The queue's clock, moved forward by the test (the supervisor's own stays real)."""

    def __init__(self) -> None:
        self.skew_ms = 0

    def __call__(self) -> int:
        return time.time_ns() // 1_000_000 + self.skew_ms


@pytest.mark.slow
def test_a_finish_after_the_lease_ran_out_is_refused_and_the_trees_killed(
    offload_home: Path, pg_url: str
) -> None:
    """The queue's clock passes the lease while two tasks run; the supervisor does not know.

    Without fencing, the quick task's finish would be written `completed` by a member whose
    lease ran out (another host may already run it again), and the long one would go on.
    """
    from offload.supervisor.daemon import Supervisor

    settings = load_settings(overrides={"database_url": pg_url, "host_name": "h"})
    clock = _Clock()
    store = PostgresStore(pg_url, clock=clock, pool_size=2)
    sup = Supervisor(settings, store)
    sup.start()
    ws = str(offload_home.parent / "ws")
    go = offload_home.parent / "go"
    try:
        long, quick = store.submit(
            [
                TaskSpec(command=LONG, cwd=ws, workspace=ws),
                TaskSpec(command=f"while [ ! -e {go} ]; do sleep 0.02; done", cwd=ws, workspace=ws),
            ]
        )

        def step() -> None:
            sup.wait(0.01)
            sup.run_once(time.monotonic())

        def running() -> bool:
            step()
            return all(t.pid for t in store.get_many([long.id, quick.id]))

        wait_until(running, what="both tasks to start")
        first = sup.id
        clock.skew_ms = int(settings.lease_seconds * 1000) + 1000  # the lease has run out
        go.touch()
        wait_until(lambda: tree_gone(quick.id), what="the quick task to exit")

        def settled() -> bool:
            step()
            return not sup.tracker.running and sup.id not in (None, first)

        wait_until(settled, timeout=settings.grace_seconds + 10, what="the fence")
        assert tree_gone(long.id)
        assert not sup.tracker.unrecorded and not sup.tracker.abandoned
        assert sup.membership is not None and sup.membership.fenced == 1
        wait_until(lambda: (step(), store.get(quick.id).state)[1] is State.INTERRUPTED)
        for task in store.get_many([long.id, quick.id]):
            assert task.state is State.INTERRUPTED, task
            assert task.error and task.error.startswith("host h stopped renewing its lease")
            kinds = [e.kind for e in store.events_since(0, task_ids=[task.id])]
            assert kinds.count("finished") == 1
    finally:
        sup.flags.stop = True
        while not sup.finished():
            step()
        sup.close()
        store.close()
