"""Several hosts, one PostgreSQL queue: sharing work, cancelling and reading output across hosts.

Real supervisors, each with its own data dir and host name, against one fresh schema
(tests/hosts_cluster.py). Faults (kill -9, SIGSTOP, a network cut) are in
test_hosts_faults.py and test_hosts_netns.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import marked_processes, wait_until
from hosts_cluster import cluster, elapsed_until, tree_gone
from offload.queue.models import State

pytestmark = pytest.mark.slow

DRAIN_TASKS = 5000
GROUP_LIMITS = {"g1": 2, "g2": 1}


def _replay_group_peaks(events: list[Any], group_of: dict[str, str | None]) -> dict[str, int]:
    """The most tasks of each group running at once, replayed from the event feed."""
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    started: set[str] = set()
    for event in events:
        group = group_of.get(event.task_id or "")
        if group is None:
            continue
        if event.kind == "started":
            started.add(event.task_id)
            running[group] += 1
            peak[group] = max(peak[group], running[group])
        elif event.kind == "finished" and event.task_id in started:
            started.discard(event.task_id)
            running[group] -= 1
    return dict(peak)


def test_three_hosts_drain_5000_tasks_each_once_within_group_limits(tmp_path: Path) -> None:
    groups = ",".join(f"{g}={n}" for g, n in GROUP_LIMITS.items())
    with cluster(tmp_path, lease_seconds=15, max_concurrent=4, groups=groups) as c:
        for name in ("h1", "h2", "h3"):
            c.start(name)
        marks = tmp_path / "marks"
        marks.mkdir()
        command = f'echo "$OFFLOAD_TASK_ID" >> {marks}/"$OFFLOAD_TASK_ID"'
        per_group = DRAIN_TASKS // 10
        tasks = [
            *c.submit(command, per_group, group="g1"),
            *c.submit(command, DRAIN_TASKS - 2 * per_group),
            *c.submit(command, per_group, group="g2"),
        ]
        members = {}

        def drained() -> bool:
            members.update({m.id: m.host for m in c.store.members()})  # before they retire
            return not c.store.list([State.PENDING, State.RUNNING], limit=1)

        wait_until(drained, timeout=900, interval=0.5, what="5000 tasks to drain")
        done = c.store.get_many([t.id for t in tasks])
        assert Counter(t.state for t in done) == {State.COMPLETED: DRAIN_TASKS}
        # each task ran exactly once: one marker file each, with one line
        files = {p.name: p.read_text().splitlines() for p in marks.iterdir()}
        assert len(files) == DRAIN_TASKS
        assert all(lines == [name] for name, lines in files.items())
        # every host took a share
        by_host = Counter(members.get(t.supervisor_id or "") for t in done)
        assert set(by_host) == {"h1", "h2", "h3"}, by_host
        # group limits held across hosts at every step of the feed
        events = c.store.events_since(0, limit=10 * DRAIN_TASKS)
        peaks = _replay_group_peaks(events, {t.id: t.group for t in done})
        assert peaks == GROUP_LIMITS


def _shipped_lag(c: Any, task_id: str, log: Path) -> float:
    """Seconds until the queue holds as many bytes of the task's output as its log has now."""
    size = log.stat().st_size
    return elapsed_until(
        lambda: c.store.output_size(task_id) >= size, timeout=10, what="output shipped"
    )


def test_output_is_shipped_within_a_second_and_a_cancel_from_another_host_lands_in_one(
    tmp_path: Path, cli_on: Callable[..., Any]
) -> None:
    with cluster(tmp_path, lease_seconds=5) as c:
        c.start("a", labels="a")
        b = c.start("b", labels="b")
        command = "i=0; while :; do echo line $i; i=$((i+1)); sleep 0.05; done"
        (task,) = c.submit(command, run_on=("a",))
        (started,) = c.wait_started([task.id])
        assert c.live_member("a").id == started.supervisor_id  # type: ignore[union-attr]
        log = Path(started.log_path or "")
        # (the task's init creates the log just after the task is recorded as started)
        wait_until(lambda: log.is_file() and log.stat().st_size > 100, what="output")
        lags = []
        for _ in range(5):
            lags.append(_shipped_lag(c, task.id, log))
        print(f"output shipped behind by at most {max(lags):.3f} s")  # shown with -s
        assert max(lags) <= 1.0, lags
        shipped = c.store.read_output(task.id, 0, 64).data
        assert shipped.startswith(b"line 0\nline 1\n")
        # cancel through the CLI of another host (its own data dir): host a gets it by NOTIFY
        assert marked_processes(task.id)
        done = cli_on(b, "cancel", task.id)
        assert done.returncode == 0, done.stderr
        wait_until(lambda: tree_gone(task.id), timeout=5, interval=0.01, what="the tree to go")
        gone_at = c.store.now_ms()
        final = c.wait_state([task.id], {State.CANCELLED})[0]
        assert final.error == "cancelled while running"
        events = c.store.events_since(0, task_ids=[task.id])
        (asked,) = [e for e in events if e.kind == "cancel_requested"]
        print(f"cancel from host b: tree on a gone {gone_at - asked.at} ms after the request")
        assert gone_at - asked.at <= 1000, gone_at - asked.at
        # the rest of the log went out before the end was written
        assert c.store.output_size(task.id) == log.stat().st_size


@pytest.fixture
def cli_on() -> Callable[..., Any]:
    """Runs the real `offload` CLI as a given host (its data dir, name and database)."""
    import subprocess
    import sys

    def run(host: Any, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-P", "-m", "offload", *args],
            env=host.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def test_start_up_touches_no_live_supervisors_tasks_and_the_data_dir_lock_still_holds(
    tmp_path: Path, cli_on: Callable[..., Any]
) -> None:
    """Two data dirs under one host name (a second supervisor on the same machine), and a
    second supervisor on one data dir."""
    with cluster(tmp_path, lease_seconds=3) as c:
        first = c.start("one", host_name="same", labels="one")
        (task,) = c.submit("sleep 300", run_on=("one",))
        (running,) = c.wait_started([task.id])
        second = c.host("two", host_name="same")
        second.start()
        wait_until(lambda: "started" in second.log_text(), what="the second to start")
        assert "recovered=0" in second.log_text()
        assert c.store.get(task.id).state is State.RUNNING and marked_processes(task.id)
        assert len([m for m in c.store.members() if m.host == "same"]) == 2
        again = cli_on(first, "supervisor", "--foreground")
        assert again.returncode != 0
        assert f"already runs for {first.home}" in again.stderr
        assert "Traceback" not in again.stderr
        assert c.store.get(task.id).state is State.RUNNING
        assert c.live_member("same") is not None and first.proc is not None
        assert first.proc.poll() is None and running.pid
