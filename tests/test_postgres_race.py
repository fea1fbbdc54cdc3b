"""Many claimers on one PostgreSQL queue: each task claimed once, group limits never exceeded.

Proved from the event feed: events are committed in seq order (db.py), so replaying the
`started`/`finished` events replays the committed states, and the running count of each
group can be checked at every step, not only at the moments a test happens to look.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from offload.queue.models import State, TaskSpec
from offload.queue.postgres import PostgresStore
from pg_server import fresh_schema

LIMITS = {"a": 1, "b": 2, "c": 3}

_CLAIMER = r"""
import os, sys
from offload.queue.models import State
from offload.queue.postgres import PostgresStore
url, out_path, sup, done_flag = sys.argv[1:5]
s = PostgresStore(url, pool_size=1)
limits = {"a": 1, "b": 2, "c": 3}
with open(out_path, "w") as out:
    while True:
        got = s.claim(5, sup, limits, default_group_limit=1)
        out.write("".join(t.id + "\n" for t in got))
        for t in got:
            s.finish(t.id, State.COMPLETED, exit_code=0, supervisor_id=sup)
        if got:
            continue
        cursor = s.last_event_seq()
        if os.path.exists(done_flag) and not s.list([State.PENDING], limit=1):
            break
        s.wait_for_event(cursor, 1.0)  # woken by the next finish, not by polling
s.close()
"""


def _specs() -> list[TaskSpec]:
    groups = [None, None, None, "a", "b", "c", "x"]  # x: a group with the default limit 1
    return [
        TaskSpec(
            command="true",
            cwd="/",
            workspace="/",
            group=groups[i % len(groups)] if i % 5 else None,
            priority=1 + i % 9,
        )
        for i in range(5000)
    ]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_concurrent_claimers_take_each_task_once_within_group_limits(tmp_path: Path) -> None:
    with fresh_schema() as url:
        store = PostgresStore(url)
        specs = _specs()
        ids = {t.id for t in store.submit(specs[:4000])}
        done_flag = tmp_path / "all-submitted"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _CLAIMER, url, str(tmp_path / f"{i}.out"), f"w{i}"]
                + [str(done_flag)]
            )
            for i in range(4)
        ]
        try:
            # The rest arrive while claimers run, urgent and grouped: claimers whose
            # snapshots differ then disagree about which task heads a group.
            for start in range(4000, 5000, 10):
                batch = [
                    TaskSpec(command="true", cwd="/", workspace="/", group="abc"[i % 3], priority=1)
                    for i in range(start, start + 10)
                ]
                ids |= {t.id for t in store.submit(batch)}
            done_flag.touch()
            for p in procs:
                assert p.wait(540) == 0
        finally:
            for p in procs:
                p.kill()
                p.wait()
        claimed = [x for i in range(4) for x in (tmp_path / f"{i}.out").read_text().split()]
        assert len(claimed) == len(ids) == 5000
        assert set(claimed) == ids
        assert store.list([State.PENDING, State.RUNNING]) == []
        # every worker took part in the grouped work too, not one worker alone
        per_worker = [len((tmp_path / f"{i}.out").read_text().split()) for i in range(4)]
        assert min(per_worker) > 0
        _assert_groups_never_exceeded(store, ids)
        store.close()


def _assert_groups_never_exceeded(store: PostgresStore, ids: set[str]) -> None:
    group_of = {t.id: t.group for t in store.list(limit=10_000)}
    limits = {**LIMITS, "x": 1}
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    started = 0
    cursor = 0
    while events := store.events_since(cursor, limit=5000):
        for event in events:
            group = group_of.get(event.task_id or "")
            if event.kind == "started":
                started += 1
                if group:
                    running[group] += 1
                    peak[group] = max(peak[group], running[group])
                    assert running[group] <= limits[group], f"group {group} over its limit"
            elif event.kind == "finished" and group:
                running[group] -= 1
        cursor = events[-1].seq
    assert started == len(ids)
    # the limits were reached, so the check above was not vacuous
    assert peak == Counter(limits)
