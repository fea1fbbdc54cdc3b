"""offload on PostgreSQL: claim + finish throughput against pgqueuer, and 200 × `true`
end to end against the SQLite backend, each pair measured in the same run.

    .venv/bin/python scripts/bench_pg.py [--url URL] [--tasks N] [--claimers 1,2,4]
                                         [--e2e-tasks 200] [--e2e-rounds 3]

For each claimer count, N no-op tasks are submitted to a fresh schema; that many processes
each loop `claim(8)` then `finish` every task until none is left; tasks per second are
printed. The anchor, in the same run and on the same server, is pgqueuer enqueueing N
no-op jobs and draining them with one worker (install it for the bench only:
`.venv/bin/pip install pgqueuer`; it is not a dependency of offload).

End to end: a real supervisor (`offload supervisor --foreground`, concurrency 2) and one
`offload submit --batch` of 200 × `true`, from the submit until all are done, once on a
fresh PostgreSQL schema and once on SQLite, alternating for `--e2e-rounds` rounds; the
medians and their ratio are printed. Each schema and data dir is removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
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


def _wait(condition: Callable[[], object], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step did not finish in time")
        time.sleep(0.002)


def end_to_end(url: str | None, tasks: int) -> float:
    """Seconds from one `offload submit --batch` of `tasks` × `true` until all are done,
    with a real supervisor at concurrency 2, on PostgreSQL (`url`) or SQLite (None)."""
    from offload.config import Settings
    from offload.queue import open_store
    from offload.queue.models import State
    from offload.supervisor.wake import poke

    home = Path(tempfile.mkdtemp(prefix="offload-bench-pg-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFLOAD_")}
    env.update(OFFLOAD_HOME=str(home), OFFLOAD_MAX_CONCURRENT="2")
    if url:
        env["OFFLOAD_DATABASE_URL"] = url
    proc = subprocess.Popen(
        [sys.executable, "-m", "offload", "supervisor", "--foreground"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = None
    try:
        _wait(lambda: poke(home) or proc.poll() is not None)
        store = open_store(Settings(home=home, database_url=url))
        batch = home / "batch.txt"
        batch.write_text("true\n" * tasks)
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "offload", "submit", "--batch", str(batch)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            cwd=home,
        )
        active = [State.PENDING, State.RUNNING]
        _wait(lambda: not store.list(active, limit=1))
        elapsed = time.perf_counter() - began
        assert store.stats(0).counts.get("completed") == tasks
        return elapsed
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        if store is not None:
            store.close()
        shutil.rmtree(home, ignore_errors=True)


E2E_KINDS = ("PostgreSQL", "PostgreSQL, synchronous_commit=off", "SQLite")


def end_to_end_medians(url: str, tasks: int, rounds: int) -> dict[str, float]:
    """Median seconds end to end per backend, the backends alternating round by round.

    SQLite runs in WAL mode with synchronous=NORMAL (a commit survives offload crashing,
    not the machine losing power); PostgreSQL's default waits for the disk flush at every
    commit. With `synchronous_commit=off` it does not (a server crash may lose the last
    commits), which is the closer match to SQLite's setting.
    """
    times: dict[str, list[float]] = {kind: [] for kind in E2E_KINDS}
    for _ in range(rounds):
        with _Schema(url) as schema_url:
            times[E2E_KINDS[0]].append(end_to_end(schema_url, tasks))
        with _Schema(url) as schema_url:
            relaxed = schema_url.replace(
                "options=", "options=" + quote("-csynchronous_commit=off ")
            )
            times[E2E_KINDS[1]].append(end_to_end(relaxed, tasks))
        times[E2E_KINDS[2]].append(end_to_end(None, tasks))
    return {kind: statistics.median(values) for kind, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--claimers", default="1,2,4")
    parser.add_argument("--e2e-tasks", type=int, default=200)
    parser.add_argument("--e2e-rounds", type=int, default=3)
    args = parser.parse_args()
    if args.e2e_rounds > 0:
        medians = end_to_end_medians(args.url, args.e2e_tasks, args.e2e_rounds)
        print(
            f"{args.e2e_tasks} x true end to end, real supervisor, concurrency 2 "
            f"(median of {args.e2e_rounds}):"
        )
        for kind, seconds in medians.items():
            ratio = seconds / medians["SQLite"]
            print(f"  {kind:<36} {seconds:6.2f} s = {ratio:.2f} x SQLite")
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
