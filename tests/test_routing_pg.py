"""Several hosts on one PostgreSQL queue, as the front ends show them.

Members are registered straight through the Store (each stands for a supervisor on its
own host), so these tests need no second machine: `supervisor status` lists them, `stats`
counts tasks per host, and output another host shipped into the database is read by
`logs`, `logs --tail`, `logs -f`, MCP `task_output` (and its resource) and the HTTP API
from a data dir that never ran the task.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.client import Client

from conftest import _env, _supervisors_of, wait_until
from offload.config import load_settings
from offload.desk.output import LocalOutput, StoreOutput
from offload.mcp_server.server import OUTPUT_URI, build_server
from offload.queue.models import State, Task, TaskSpec
from offload.queue.postgres import PostgresStore
from offload.queue.store import HostFigures
from offload.supervisor.wake import poke
from offload.web.auth import AccessPolicy
from offload.web.routes import create_app
from offload.web.serve import Prepared, ServerThread, _bind
from pg_server import fresh_schema
from test_mcp_support import call

Cli = Callable[..., subprocess.CompletedProcess[str]]
A, B, C = "a" * 16, "b" * 16, "c" * 16
TOKEN = "t" * 40


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_schema() as u:
        yield u


@pytest.fixture
def pg(url: str) -> Iterator[PostgresStore]:
    s = PostgresStore(url, pool_size=2)
    yield s
    s.close()


def spec(workspace: Path, **kw: Any) -> TaskSpec:
    where = str(workspace.resolve())
    return TaskSpec(command="true", cwd=where, workspace=where, **kw)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def http(settings: Any, store: PostgresStore) -> tuple[ServerThread, httpx.Client]:
    """The HTTP API on a free loopback port, over `store`, and a client with the token."""
    sock = _bind("127.0.0.1", 0)
    app = create_app(settings, AccessPolicy.for_bind(TOKEN, "127.0.0.1"), store=store)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    client = httpx.Client(base_url=base, timeout=20, headers={"Authorization": f"Bearer {TOKEN}"})
    return ServerThread(Prepared(app=app, sock=sock, url="", token=TOKEN)), client


# -- the README's three steps ---------------------------------------------------------------
def _worker(home: Path, url: str, labels: str) -> subprocess.Popen[bytes]:
    """`offload supervisor --labels …` on its own data dir: a worker host of the queue."""
    worker = subprocess.Popen(
        [sys.executable, "-P", "-m", "offload", "supervisor", "--labels", labels],
        env=_env(home, {"OFFLOAD_DATABASE_URL": url, "OFFLOAD_HOST_NAME": home.name}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_until(lambda: poke(home) or worker.poll() is not None, what=f"worker {home.name}")
    assert worker.poll() is None, worker.communicate()[1].decode()[-2000:]
    return worker


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    worker.communicate(timeout=20)


def test_the_readme_steps_route_a_task_to_the_host_with_the_label(
    url: str, cli: Cli, offload_home: Path, tmp_path: Path
) -> None:
    """`submit --on gpu` waits, and says why, while the only worker lacks the label; a
    worker started `--labels linux,gpu` takes it; its output reads the same from here."""
    env = {"OFFLOAD_DATABASE_URL": url}
    workers = [_worker(tmp_path / "cpu-1", url, "linux")]
    try:
        task_id = ok(cli("submit", "--on", "gpu", "--", "echo", "trained", **env)).strip()
        # Whatever this data dir's own on-demand supervisor does, let it settle first.
        wait_until(lambda: poke(offload_home) or not _supervisors_of(offload_home))
        assert "waiting   no live supervisor has label gpu" in ok(cli("show", task_id, **env))
        _stop(workers[0])
        workers.append(_worker(tmp_path / "gpu-1", url, "linux,gpu"))
        ok(cli("wait", task_id, "--timeout", "30", **env))
        assert ok(cli("logs", task_id, **env)) == "trained\n"
        assert "waiting" not in ok(cli("show", task_id, **env))
    finally:
        for worker in workers:
            _stop(worker)


# -- supervisor status ----------------------------------------------------------------------
def test_supervisor_status_lists_every_member(pg: PostgresStore, url: str, cli: Cli) -> None:
    pg.register_member(A, host="build-1", pid=111, labels=["gpu", "linux"], capacity=4)
    pg.register_member(B, host="build-2", pid=222, capacity=2)
    pg.register_member(C, host="build-3", pid=333, capacity=1, lease_seconds=1)
    assert pg.reap_expired_members(now_ms() + 5_000) == []  # C is lost; A and B hold on
    workspace = Path.cwd()
    pg.submit([spec(workspace), spec(workspace)])
    assert len(pg.claim(1, A, {})) == 1

    text = ok(cli("supervisor", "status", OFFLOAD_DATABASE_URL=url))
    lines = text.splitlines()
    assert lines[0] == "2 live supervisor(s) on 2 host(s); 1 running, 1 pending"
    assert lines[1].split() == ["HOST", "ID", "PID", "LABELS", "CAPACITY", "LEASE", "RUNNING"]
    one, two, three = (line.split() for line in lines[2:])
    assert one[:5] == ["build-1", A, "111", "gpu,linux", "4"] and one[-2:] == ["left", "1"]
    assert two[:5] == ["build-2", B, "222", "-", "2"] and two[-1] == "0"
    assert three[:2] == ["build-3", C] and "lost" in three and three[-1] == "0"

    shown = json.loads(ok(cli("supervisor", "status", "--json", OFFLOAD_DATABASE_URL=url)))
    assert (shown["running"], shown["pending"]) == (1, 1)
    members = {m["id"]: m for m in shown["members"]}
    assert members[A]["labels"] == ["gpu", "linux"] and members[A]["running"] == 1
    assert members[A]["alive"] and 0 < members[A]["lease_left_seconds"] <= 30
    assert not members[C]["alive"] and members[C]["lost_at"] is not None

    pg.retire_member(A)
    pg.retire_member(B)
    nobody = cli("supervisor", "status", OFFLOAD_DATABASE_URL=url)
    assert nobody.returncode == 3 and "0 live supervisor(s)" in nobody.stdout


# -- per-host figures -----------------------------------------------------------------------
@pytest.mark.slow  # a live HTTP server and an MCP session
def test_stats_count_tasks_per_host(pg: PostgresStore, url: str, workspace: Path) -> None:
    for member, host in ((A, "host-a"), (B, "host-b"), (C, "host-c")):
        pg.register_member(member, host=host, pid=1, capacity=2)
    pending = pg.submit([spec(workspace) for _ in range(5)])
    a1, a2 = pg.claim(2, A, {})
    (b1,) = pg.claim(1, B, {})
    (c1,) = pg.claim(1, C, {})
    pg.finish(a1.id, State.COMPLETED, exit_code=0, supervisor_id=A)
    pg.retire_member(C)  # c1 is interrupted; host-c's record goes with its member
    expected = [HostFigures("host-a", 1, 1), HostFigures("host-b", 1, 0), HostFigures(None, 0, 1)]
    assert pg.stats(now_ms()).hosts == expected

    settings = load_settings(overrides={"database_url": url})

    async def mcp() -> None:
        server = build_server(settings, workspace, store=pg, wake=lambda: None)
        async with Client(server) as client:
            stats = await call(client, "queue_stats")
        assert stats["hosts"] == [
            {"host": "host-a", "running": 1, "finished": 1},
            {"host": "host-b", "running": 1, "finished": 0},
            {"running": 0, "finished": 1},
        ]

    anyio.run(mcp)
    server, client = http(settings, pg)
    with server, client:
        hosts = client.get("/api/stats").json()["hosts"]
    assert hosts[0] == {"host": "host-a", "running": 1, "finished": 1}
    assert hosts[2] == {"host": None, "running": 0, "finished": 1}
    assert pending[4].id not in {a1.id, a2.id, b1.id, c1.id}


def test_cli_stats_show_per_host_lines(pg: PostgresStore, url: str, cli: Cli) -> None:
    workspace = Path.cwd()
    pg.register_member(A, host="host-a", pid=1, capacity=2)
    pg.submit([spec(workspace), spec(workspace)])
    for task in pg.claim(2, A, {}):
        pg.finish(task.id, State.COMPLETED, exit_code=0, supervisor_id=A)
    shown = json.loads(ok(cli("stats", "--json", OFFLOAD_DATABASE_URL=url)))
    assert shown["hosts"] == [{"host": "host-a", "running": 0, "finished": 2}]
    assert "  host-a  0 running  2 finished\n" in ok(cli("stats", OFFLOAD_DATABASE_URL=url))


# -- output from any host -------------------------------------------------------------------
def _shipped(pg: PostgresStore, workspace: Path, elsewhere: Path, data: bytes) -> Task:
    """A task host-a ran and shipped `data` for, its log a file of host-a (not here)."""
    task = pg.submit([spec(workspace)])[0]
    pg.claim(1, A, {})
    log = elsewhere / "logs" / f"{task.id}.log"
    pg.mark_started(
        task.id, pid=1, pgid=1, proc_start=None, cgroup=None, log_path=str(log), supervisor_id=A
    )
    for start in range(0, len(data), 7_000):  # shipped in chunks, as a running host does
        pg.append_output(task.id, start, data[start : start + 7_000], supervisor_id=A)
    pg.finish(task.id, State.COMPLETED, exit_code=0, supervisor_id=A)
    return pg.get(task.id)


LOGS = [
    b"",
    b"one line\n",
    b"no newline at the end",
    b"a\nbb\n\nccc\n" * 9_000,
    "é€😀\n".encode() * 7_000,
    b"x" * 150_000 + b"\nlast\n",
]


def test_shipped_output_reads_exactly_as_the_log_file(
    pg: PostgresStore, workspace: Path, tmp_path: Path
) -> None:
    settings = load_settings()
    pg.register_member(A, host="host-a", pid=1, capacity=len(LOGS))
    for number, data in enumerate(LOGS):
        _same_bytes(
            pg,
            settings,
            _shipped(pg, workspace, tmp_path / "host-a", data),
            tmp_path / f"here-{number}.log",
            data,
        )


def _same_bytes(pg: PostgresStore, settings: Any, shipped: Task, here: Path, data: bytes) -> None:
    here.write_bytes(data)
    local = replace(shipped, log_path=str(here))
    store_side, file_side = StoreOutput(settings, pg), LocalOutput(settings)
    cuts = [(0, 10), (1, 1), (1, 5), (2, 7), (3, 100), (10, 65_536), (100, 1 << 20)]
    for lines, max_bytes in cuts:
        assert store_side.tail(shipped, lines, max_bytes) == file_side.tail(local, lines, max_bytes)
    assert store_side.size(shipped) == len(data) == file_side.size(local)
    for offset, max_bytes in [(0, 65_536), (5, 3), (len(data), 10), (len(data) + 5, 10)]:
        expected = file_side.read(local, offset, max_bytes)
        assert store_side.read(shipped, offset, max_bytes) == expected
    # A log file this host has wins over the shipped copy (it is the source here).
    here.write_bytes(b"the local file\n")
    assert store_side.read(local, 0) == (b"the local file\n", 15)


def test_logs_tail_and_follow_read_another_hosts_output(
    pg: PostgresStore,
    url: str,
    cli: Cli,
    start_supervisor: Any,
    offload_home: Path,
    workspace: Path,
    tmp_path: Path,
) -> None:
    # This data dir's own supervisor runs first, so nothing here looks orphaned; it
    # lacks the label, so the task is host-a's to run.
    start_supervisor(database_url=url)
    pg.register_member(A, host="host-a", pid=1, labels=["a-only"], capacity=1)
    task = pg.submit([spec(workspace, run_on=("a-only",))])[0]
    assert [t.id for t in pg.claim(1, A, {}, labels=("a-only",))] == [task.id]
    log = tmp_path / "host-a" / "logs" / f"{task.id}.log"
    pg.mark_started(
        task.id, pid=1, pgid=1, proc_start=None, cgroup=None, log_path=str(log), supervisor_id=A
    )
    first, rest = b"first line\n", "second é line\nno newline".encode()
    pg.append_output(task.id, 0, first, supervisor_id=A)

    follower = subprocess.Popen(
        [sys.executable, "-P", "-m", "offload", "logs", "-f", task.id],
        env=_env(offload_home, {"OFFLOAD_DATABASE_URL": url}),
        cwd=workspace,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    got = bytearray()

    def read() -> None:
        assert follower.stdout is not None
        while chunk := follower.stdout.read1(65_536):
            got.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: bytes(got) == first, timeout=20, what="the first shipped chunk")
        assert follower.poll() is None  # still following: the task runs on host-a
        pg.append_output(task.id, len(first), rest, supervisor_id=A)
        pg.finish(task.id, State.COMPLETED, exit_code=0, supervisor_id=A)
        assert follower.wait(30) == 0
        reader.join(10)
        assert follower.stderr is not None and follower.stderr.read() == b""
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        for stream in (follower.stdout, follower.stderr):
            assert stream is not None
            stream.close()
    assert bytes(got) == first + rest

    env = {"OFFLOAD_DATABASE_URL": url}
    assert ok(cli("logs", task.id, **env)) == (first + rest).decode()
    assert ok(cli("logs", task.id, "--tail", "2", **env)) == "second é line\nno newline"
    assert ok(cli("logs", task.id, "--tail", "1", **env)) == "no newline"
    assert not log.exists()  # read from the database, not a file

    settings = load_settings(overrides={"database_url": url})

    async def mcp() -> None:
        server = build_server(settings, workspace, store=pg, wake=lambda: None)
        async with Client(server) as client:
            output = await call(client, "task_output", task_id=task.id)
            assert output["text"] == (first + rest).decode()
            assert output["size_bytes"] == len(first + rest)
            tail = await call(client, "task_output", task_id=task.id, tail_lines=1)
            assert tail["text"] == "no newline" and tail["truncated"]
            read = await client.read_resource(OUTPUT_URI.format(task_id=task.id))
            assert [getattr(c, "text", None) for c in read.contents] == [output["text"]]
            info = await call(client, "get_task", task_id=task.id)
            assert info["tail"] == output["text"]

    anyio.run(mcp)
    server, client = http(settings, pg)
    with server, client:
        answer = client.get(f"/api/tasks/{task.id}/output", params={"tail": 1}).json()
        assert (answer["text"], answer["size"]) == ("no newline", len(first + rest))
        with client.stream("GET", "/api/events", params={"follow": task.id}) as streamed:
            events = _events(streamed.iter_lines())
    assert (
        "".join(data["text"] for kind, data in events if kind == "output")
        == (first + rest).decode()
    )
    assert events[-1][0] == "end"


def _events(lines: Iterator[str]) -> list[tuple[str, dict[str, Any]]]:
    """A finite server-sent event stream as (event name, JSON data) pairs."""
    found, name, data = [], "message", ""
    for line in lines:
        if not line:
            if data:
                found.append((name, json.loads(data)))
            name, data = "message", ""
        elif line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data += line.removeprefix("data:").strip()
    return found
