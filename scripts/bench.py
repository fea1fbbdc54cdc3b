"""offload's benchmark: the figures issues 2 and 13 name, beside their peers, from one run.

Run it as `scripts/bench` (it uses ./.venv). Every figure is measured in this run, and
comparisons are printed as ratios, because these machines are noisy. Nothing here
touches ~/.offload: each part uses its own temporary OFFLOAD_HOME.
"""

from __future__ import annotations

import atexit
import os
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from offload.logs import read_tail
from offload.queue.models import State, TaskSpec
from offload.queue.sqlite import SqliteStore
from offload.supervisor.wake import poke

N_TASKS = 200
N_SLOPE = 2000  # the per-task overhead at scale, without start-up dominating
CONCURRENCY = 2
VENV_BIN = Path(sys.executable).parent
ROWS: list[tuple[str, str, str]] = []
# Every part's files stay until the run ends. On ext4 without a journal, creating a file
# scans the inodes deleted in the last ~30 s: after one part deleted its 2,000 task logs,
# every log the next part created cost about 0.6 ms more, and the figures described the
# benchmark's own cleanup.
# scripts/bench names one directory for both of its scripts and removes it at the end.
if os.environ.get("OFFLOAD_BENCH_SCRATCH"):
    SCRATCH = Path(os.environ["OFFLOAD_BENCH_SCRATCH"])
else:
    SCRATCH = Path(tempfile.mkdtemp(prefix="offload-bench-"))
    atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)


def scratch(prefix: str) -> Path:
    """A fresh directory for one part of the run, removed when the run ends."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=SCRATCH))


def report(name: str, value: str, target: str = "") -> None:
    ROWS.append((name, value, target))
    print(f"  {name:<58} {value:>22}   {target}", flush=True)


def wait(condition: Callable[[], object], timeout: float = 120, interval: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step did not finish in time")
        time.sleep(interval)


@contextmanager
def supervisor(**settings: str) -> Iterator[tuple[Path, SqliteStore, subprocess.Popen[bytes]]]:
    home = scratch("offload-bench-")
    env = {**os.environ, "OFFLOAD_HOME": str(home)}
    env.update({f"OFFLOAD_{k.upper()}": v for k, v in settings.items()})
    proc = subprocess.Popen(
        [sys.executable, "-m", "offload", "supervisor"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait(lambda: poke(home))
    store = SqliteStore(home / "queue.db")
    try:
        yield home, store, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        store.close()


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def all_done(store: SqliteStore) -> bool:
    return not store.list([State.PENDING, State.RUNNING], limit=1)


# -- 200 x true --------------------------------------------------------------------------
SUPERVISOR_CPU: dict[int, float] = {}  # n -> the supervisor's CPU seconds for that run


def bench_offload_batch(n: int = N_TASKS) -> float:
    """One `offload submit --batch` call (a CLI start included) until all n are done."""
    with supervisor(max_concurrent=str(CONCURRENCY)) as (home, store, proc):
        own = psutil.Process(proc.pid)
        before = sum(own.cpu_times()[:2])
        batches = []  # one CLI call per 1,000 tasks: the batch limit of one submit
        for i, start_at in enumerate(range(0, n, 1000)):
            batches.append(home / f"batch{i}.txt")
            batches[-1].write_text("true\n" * min(1000, n - start_at))
        env = {**os.environ, "OFFLOAD_HOME": str(home)}
        start = time.perf_counter()
        for batch in batches:
            subprocess.run(
                [str(VENV_BIN / "offload"), "submit", "--batch", str(batch)],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
                cwd=home,
            )
        wait(lambda: all_done(store), timeout=600)
        elapsed = time.perf_counter() - start
        SUPERVISOR_CPU[n] = sum(own.cpu_times()[:2]) - before
        assert store.stats(0).counts.get("completed") == n
        return elapsed


def bench_floor(n: int = N_TASKS) -> float:
    """A bare SQLite queue + Popen: insert 200 rows, run them 2 at a time, record results."""
    tmp = scratch("offload-floor-")
    db = sqlite3.connect(tmp / "floor.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, cmd TEXT, state TEXT, code INTEGER)")
    start = time.perf_counter()
    db.executemany("INSERT INTO t (cmd, state) VALUES (?, 'pending')", [("true",)] * n)
    running: dict[int, subprocess.Popen[bytes]] = {}
    while True:
        while len(running) < CONCURRENCY:
            row = db.execute(
                "UPDATE t SET state='running' WHERE id = (SELECT id FROM t WHERE state='pending' "
                "ORDER BY id LIMIT 1) RETURNING id, cmd"
            ).fetchone()
            if row is None:
                break
            running[row[0]] = subprocess.Popen(["/bin/sh", "-c", row[1]])
        if not running:
            break
        pid, status = os.wait()
        for task_id, proc in list(running.items()):
            if proc.pid == pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                db.execute(
                    "UPDATE t SET state='done', code=? WHERE id=?", (proc.returncode, task_id)
                )
                del running[task_id]
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed


def bench_task_spooler(n: int = N_TASKS) -> float | None:
    """n `tsp true` calls (tsp has no batch form) until `tsp -l` shows all n finished."""
    tsp = shutil.which("tsp") or shutil.which("ts")
    if tsp is None:
        return None
    tmp = scratch("offload-tsp-")
    env = {
        **os.environ,
        "TS_SOCKET": str(tmp / "socket"),
        "TMPDIR": str(tmp),
        "TS_SAVELIST": "",
        "TS_MAXFINISHED": str(n + 10),  # by default tsp forgets all but 1,000 finished jobs
    }
    subprocess.run([tsp, "-S", str(CONCURRENCY)], env=env, check=True)
    start = time.perf_counter()
    for _ in range(n):
        subprocess.run([tsp, "true"], env=env, check=True, stdout=subprocess.DEVNULL)

    def drained() -> bool:
        out = subprocess.run([tsp, "-l"], env=env, capture_output=True, text=True).stdout
        return out.count("finished") == n

    wait(drained, timeout=600, interval=0.005)
    elapsed = time.perf_counter() - start
    subprocess.run([tsp, "-K"], env=env, stderr=subprocess.DEVNULL)
    return elapsed


# -- latencies ----------------------------------------------------------------------------
def bench_cli_wall() -> tuple[float, float, float]:
    """Medians of 20: `offload submit -- true`, `offload list`, and a bare `python -c pass`."""
    with supervisor() as (home, store, _):
        env = {**os.environ, "OFFLOAD_HOME": str(home)}
        offload = str(VENV_BIN / "offload")
        submits, lists, bare = [], [], []
        for _ in range(20):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            bare.append(time.perf_counter() - start)
            start = time.perf_counter()
            subprocess.run(
                [offload, "submit", "--", "true"],
                env=env,
                cwd=home,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            submits.append(time.perf_counter() - start)
            start = time.perf_counter()
            subprocess.run(
                [offload, "list"], env=env, cwd=home, check=True, stdout=subprocess.DEVNULL
            )
            lists.append(time.perf_counter() - start)
        return statistics.median(submits), statistics.median(lists), statistics.median(bare)


def bench_submit_to_running() -> float:
    """Submit (store + wake) until the task's shell runs its first command.

    The task opens a FIFO for writing; our blocking open for reading returns at that
    instant, so the figure has no polling or clock-granularity error in it.
    """
    with supervisor() as (home, store, _):
        samples = []
        for i in range(30):
            fifo = home / f"fifo{i}"
            os.mkfifo(fifo)
            spec = TaskSpec(command=f"exec 3> {fifo}", cwd=str(home), workspace=str(home))
            start = time.perf_counter()
            task = store.submit([spec])[0]
            poke(home)
            fd = os.open(fifo, os.O_RDONLY)
            samples.append((time.perf_counter() - start) * 1000)
            os.close(fd)
            wait(lambda t=task: store.get(t.id).is_final)
        return statistics.median(samples)


def _sleepers(top: psutil.Process) -> list[psutil.Process]:
    """The `sleep` processes below `top` (none once it is gone)."""
    try:
        return [p for p in top.children(recursive=True) if p.name() == "sleep"]
    except psutil.Error:
        return []


def bench_cancel_tree() -> tuple[float, float]:
    """Cancel of `sleep 300 & sleep 300 & wait` until every process of it is gone."""
    with supervisor() as (home, store, _):
        tree_gone, state_final = [], []
        for _ in range(5):
            spec = TaskSpec(
                command="sleep 300 & sleep 300 & wait", cwd=str(home), workspace=str(home)
            )
            task = store.submit([spec])[0]
            poke(home)
            wait(lambda t=task: store.get(t.id).pid)
            # The recorded pid is the tree's top: the init of the task's PID namespace
            # (which runs the command's shell as its child) or, without one, the shell.
            # The tree is every descendant of it, as the supervisor sees it.
            main = psutil.Process(store.get(task.id).pid or 0)
            wait(lambda m=main: len(_sleepers(m)) >= 2)
            procs = [main, *main.children(recursive=True)]
            start = time.perf_counter()
            store.request_cancel(task.id)
            poke(home)
            wait(
                lambda ps=procs: not any(alive(p) for p in ps),
                interval=0.0005,
            )
            tree_gone.append((time.perf_counter() - start) * 1000)
            wait(lambda t=task: store.get(t.id).is_final, interval=0.0005)
            state_final.append((time.perf_counter() - start) * 1000)
        return statistics.median(tree_gone), statistics.median(state_final)


def _store_with(rows: int) -> SqliteStore:
    store = SqliteStore(scratch("offload-rows-") / "queue.db")
    for start in range(0, rows, 10_000):
        n = min(10_000, rows - start)
        store.submit([TaskSpec(command="true", cwd="/", workspace="/") for _ in range(n)])
    return store


def bench_claim_and_list(small_rows: int, large_rows: int) -> tuple[float, float]:
    """Median ms of one claim + finish + list(50) on each store, the two interleaved.

    Medians of single rounds, taken in turn on both stores: a WAL checkpoint or a stall of
    the machine lands in a few rounds of either, not in the mean of one of them.
    """
    stores = {small_rows: _store_with(small_rows), large_rows: _store_with(large_rows)}
    times: dict[int, list[float]] = {small_rows: [], large_rows: []}
    for _ in range(50):  # leaves half of the 100-row table pending: its size barely moves
        for rows, store in stores.items():
            begin = time.perf_counter()
            (task,) = store.claim(1, "bench", {})
            store.finish(task.id, State.COMPLETED, exit_code=0)
            store.list(limit=50)
            times[rows].append((time.perf_counter() - begin) * 1000)
    for store in stores.values():
        store.close()
    return statistics.median(times[small_rows]), statistics.median(times[large_rows])


def bench_tail_1gb() -> float:
    tmp = scratch("offload-tail-")
    log = tmp / "big.log"
    with open(log, "wb") as f:
        f.seek(2**30 - 1_000_000)  # 1 GB file; the last megabyte holds real lines
        f.write(b"".join(b"line %d of the build output\n" % i for i in range(35_000)))
    assert log.stat().st_size >= 2**30
    samples = []
    for _ in range(50):
        start = time.perf_counter()
        tail = read_tail(log, lines=100)
        samples.append((time.perf_counter() - start) * 1000)
    assert tail.lines == 100
    log.unlink()  # one inode: no cost to later parts, and 1 GB less on the disk
    return statistics.median(samples)


def bench_300_sleepers() -> tuple[int, float, int]:
    with supervisor(max_concurrent="300") as (home, store, proc):
        sup = psutil.Process(proc.pid)
        idle_threads = sup.num_threads()
        specs = [
            TaskSpec(command="sleep 120", cwd=str(home), workspace=str(home)) for _ in range(300)
        ]
        store.submit(specs)
        poke(home)
        wait(lambda: len([t for t in store.list([State.RUNNING], limit=400) if t.pid]) == 300)
        threads, rss = sup.num_threads(), sup.memory_info().rss / 2**20
        for task in store.list([State.RUNNING], limit=400):
            store.request_cancel(task.id)
        poke(home)
        wait(lambda: all_done(store))
        return threads, rss, idle_threads


# -- containment (issue 10) ---------------------------------------------------------------
def bench_containment() -> None:
    """Per-spawn cost of each containment level, and 200 x `true` with the sandbox on/off."""
    from offload.supervisor.pidns import init_argv, probe_pid_namespaces
    from offload.supervisor.sandbox import probe_sandbox

    pidns, box = probe_pid_namespaces(), probe_sandbox()
    work = scratch("offload-bench-ws-")
    command = ["/bin/sh", "-c", "true"]

    def spawn_cost(prefix: list[str], in_namespace: bool, n: int = 200) -> float:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            if in_namespace:
                with pidns.entered():
                    proc = subprocess.Popen([*prefix, *command], cwd=work)
            else:
                proc = subprocess.Popen([*prefix, *command], cwd=work)
            proc.wait()
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000

    print("\ncontainment, per spawn of `sh -c true` (median of 200)")
    floor = spawn_cost([], False)
    report("no containment (Popen, the floor)", f"{floor:.2f} ms")
    if pidns.available:
        cost = spawn_cost(init_argv(), True)
        report("PID namespace (+ shell init)", f"{cost:.2f} ms", f"{cost / floor:.2f}x floor")
    else:
        report("PID namespace", "unavailable", pidns.reason)
    if box.available:
        for network in (True, False):
            sandbox = box.argv(workspace=str(work), cwd=str(work), network=network)
            cost = spawn_cost(sandbox, pidns.available)
            report(
                f"full sandbox (bwrap, network {'on' if network else 'off'})",
                f"{cost:.2f} ms",
                f"{cost / floor:.2f}x floor",
            )
        off = _batch_with_policy(None)
        on = _batch_with_policy({"sandbox": True, "network": True})
        report(f"{N_TASKS} x true, concurrency {CONCURRENCY}, sandbox off", f"{off:.3f} s")
        report(
            f"{N_TASKS} x true, concurrency {CONCURRENCY}, sandbox on",
            f"{on:.3f} s",
            f"{on / off:.2f}x off (target <= 2x)",
        )
        # The same with a command that does a little work: a Python start (~10 ms).
        work_cmd = f"{shlex.quote(sys.executable)} -c pass"
        off = _batch_with_policy(None, work_cmd)
        on = _batch_with_policy({"sandbox": True, "network": True}, work_cmd)
        report(f"{N_TASKS} x `python -c pass`, sandbox off", f"{off:.3f} s")
        report(f"{N_TASKS} x `python -c pass`, sandbox on", f"{on:.3f} s", f"{on / off:.2f}x off")
    else:
        report("full sandbox", "unavailable", box.reason)


def _batch_with_policy(policy: dict[str, object] | None, command: str = "true") -> float:
    with supervisor(max_concurrent=str(CONCURRENCY)) as (home, store, _):
        work = home.parent / f"{home.name}-ws"
        work.mkdir()
        specs = [
            TaskSpec(command=command, cwd=str(work), workspace=str(work), policy=policy)
            for _ in range(N_TASKS)
        ]
        start = time.perf_counter()
        store.submit(specs)
        poke(home)
        wait(lambda: all_done(store))
        elapsed = time.perf_counter() - start
        assert store.stats(0).counts.get("completed") == N_TASKS
        return elapsed


def main() -> int:
    print(f"offload benchmark — {os.cpu_count()} cores, python {sys.version.split()[0]}\n")
    print(f"{N_TASKS} x `true`, concurrency {CONCURRENCY}, submit -> all done")
    floor = bench_floor()
    ours = bench_offload_batch()
    tsp = bench_task_spooler()
    report("bare SQLite + Popen floor", f"{floor:.3f} s")
    report(
        "offload (one `submit --batch` call)",
        f"{ours:.3f} s",
        f"{ours / floor:.2f}x floor (target <= 1.5x)",
    )
    if tsp is None:
        report("task-spooler", "not installed", "apt-get install task-spooler")
    else:
        report(
            f"task-spooler ({N_TASKS} `tsp true` calls, -S 2)",
            f"{tsp:.3f} s",
            f"tsp / offload = {tsp / ours:.2f} (target >= 1.0, aim 1.2)",
        )
    print(f"\n{N_SLOPE} x `true`, concurrency {CONCURRENCY}: the per-task overhead at scale")
    floor_k, ours_k = bench_floor(N_SLOPE), bench_offload_batch(N_SLOPE)
    tsp_k = bench_task_spooler(N_SLOPE)
    report("bare SQLite + Popen floor", f"{floor_k:.3f} s")
    report("offload", f"{ours_k:.3f} s", f"{ours_k / floor_k:.2f}x floor")
    if tsp_k is not None:
        report("task-spooler", f"{tsp_k:.3f} s", f"tsp / offload = {tsp_k / ours_k:.2f}")
        slope = ((tsp_k - tsp) / (N_SLOPE - N_TASKS), (ours_k - ours) / (N_SLOPE - N_TASKS))
        report(
            "per extra task: tsp vs offload",
            f"{slope[0] * 1000:.2f} / {slope[1] * 1000:.2f} ms",
            f"ratio {slope[0] / slope[1]:.2f}",
        )
    report(
        "offload supervisor CPU per task (user + system)",
        f"{SUPERVISOR_CPU[N_SLOPE] / N_SLOPE * 1000:.2f} ms",
        "one loop: at concurrency 2 it sets the pace",
    )
    print("\nlatency")
    submit, listing, bare = bench_cli_wall()
    report("bare `python -c pass` (same venv), median of 20", f"{bare * 1000:.0f} ms")
    report(
        "`offload submit` wall, median of 20",
        f"{submit * 1000:.0f} ms",
        f"{submit / bare:.1f}x python (target <= 3x)",
    )
    report(
        "`offload list` wall, median of 20",
        f"{listing * 1000:.0f} ms",
        f"{listing / bare:.1f}x python (target <= 3x)",
    )
    report(
        "submit -> process running, median of 30",
        f"{bench_submit_to_running():.2f} ms",
        "target <= 5 ms",
    )
    gone, final = bench_cancel_tree()
    report("cancel -> SIGTERM-honouring tree gone, median", f"{gone:.1f} ms", "target <= 100 ms")
    report("cancel -> state cancelled, median", f"{final:.1f} ms")
    print("\nscaling")
    small, large = bench_claim_and_list(100, 100_000)
    report("claim + finish + list at 100 rows, median", f"{small:.3f} ms")
    report(
        "claim + finish + list at 100,000 rows, median",
        f"{large:.3f} ms",
        f"ratio {large / small:.2f} (target <= 1.5)",
    )
    report("tail 100 lines of a 1 GB log, median", f"{bench_tail_1gb():.3f} ms", "target <= 10 ms")
    threads, rss, idle = bench_300_sleepers()
    report(
        "supervisor threads with 300 running tasks", f"{threads} (idle {idle})", "target: no growth"
    )
    report("supervisor RSS with 300 running tasks", f"{rss:.1f} MiB")
    bench_containment()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
