"""Claim + finish throughput of no-op tasks on PostgreSQL, against pgqueuer as the anchor.

    .venv/bin/python scripts/bench_pg.py [--url URL] [--tasks N] [--claimers 1,2,4]

For each claimer count, N no-op tasks are submitted to a fresh schema; that many processes
each loop `claim(8)` then `finish` every task until none is left; tasks per second are
printed. The anchor, in the same run and on the same server, is pgqueuer enqueueing N
no-op jobs and draining them with one worker (install it for the bench only:
`.venv/bin/pip install pgqueuer`; it is not a dependency of offload). Each schema is
dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import secrets
import sys
import time
from typing import Any
from urllib.parse import quote

DEFAULT_URL = os.environ.get("OFFLOAD_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1/test")


def _schema_url(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


class _Schema:
    """A fresh schema, dropped on exit."""

    def __init__(self, url: str) -> None:
        self.admin = url
        self.name = "bench_" + secrets.token_hex(4)
        self.url = _schema_url(url, self.name)

    def __enter__(self) -> str:
        import psycopg

        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {self.name}")
        return self.url

    def __exit__(self, *exc: object) -> None:
        import psycopg

        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {self.name} CASCADE")


def _claimer(url: str, worker: str, start: Any) -> None:
    from offload.queue.models import State
    from offload.queue.postgres import PostgresStore

    store = PostgresStore(url, pool_size=1)
    start.wait()
    while got := store.claim(8, worker, {}):
        for task in got:
            store.finish(task.id, State.COMPLETED, exit_code=0, supervisor_id=worker)
    store.close()


def offload_rate(url: str, tasks: int, claimers: int) -> float:
    """Tasks per second claimed and finished by `claimers` processes."""
    from offload.queue.models import TaskSpec
    from offload.queue.postgres import PostgresStore

    with _Schema(url) as schema_url:
        store = PostgresStore(schema_url, pool_size=1)
        store.submit([TaskSpec(command="true", cwd="/", workspace="/") for _ in range(tasks)])
        ctx = mp.get_context("spawn")
        start = ctx.Event()
        procs = [
            ctx.Process(target=_claimer, args=(schema_url, f"w{i}", start)) for i in range(claimers)
        ]
        for p in procs:
            p.start()
        time.sleep(1.0)  # let every claimer connect before the clock starts
        began = time.perf_counter()
        start.set()
        for p in procs:
            p.join()
        elapsed = time.perf_counter() - began
        assert all(t.state.value == "completed" for t in store.list(limit=tasks))
        store.close()
    return tasks / elapsed


async def _pgqueuer(url: str, tasks: int) -> float:
    import psycopg
    from pgqueuer.db import PsycopgDriver
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    driver = PsycopgDriver(conn)
    queries = Queries(driver)
    await queries.install()
    began = time.perf_counter()
    await queries.enqueue(["noop"] * tasks, [None] * tasks, [0] * tasks)
    qm = QueueManager(queries)
    done = 0

    @qm.entrypoint("noop")
    async def noop(job: object) -> None:
        nonlocal done
        done += 1

    await qm.run(mode=QueueExecutionMode.drain, batch_size=8)
    elapsed = time.perf_counter() - began
    await conn.close()
    assert done == tasks, f"pgqueuer ran {done} of {tasks}"
    return tasks / elapsed


def pgqueuer_rate(url: str, tasks: int) -> float | None:
    """Jobs per second enqueued and drained by pgqueuer, or None when it is not installed."""
    try:
        import pgqueuer  # noqa: F401
    except ImportError:
        return None
    with _Schema(url) as schema_url:
        return asyncio.run(_pgqueuer(schema_url, tasks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--claimers", default="1,2,4")
    args = parser.parse_args()
    anchor = pgqueuer_rate(args.url, args.tasks)
    print(
        f"pgqueuer enqueue+drain (1 worker): {anchor:.0f}/s"
        if anchor
        else "pgqueuer: not installed"
    )
    for n in (int(x) for x in args.claimers.split(",")):
        rate = offload_rate(args.url, args.tasks, n)
        ratio = f" = {rate / anchor:.2f} x pgqueuer" if anchor else ""
        print(f"offload claim+finish, {n} claimer(s): {rate:.0f} tasks/s{ratio}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
