"""The cyclic garbage collector: paused while a command starts, resumed where it settles in.

Each real command runs in a subprocess under a wrapper that notes, in a file, the pause
(`P`), every automatic collection after it (`c`, through `gc.callbacks`) and every resume
(`R` when it left the collector running, `?` if not): a quick command must make no
collection, and each command that goes on working (supervisor, MCP server, HTTP server)
must resume it once started, or it would never free a reference cycle again.
"""

from __future__ import annotations

import gc
import json
import signal
import subprocess
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import _env, wait_until
from offload import collector
from offload.desk.waits import wait_for
from offload.queue.models import State, TaskSpec
from offload.queue.sqlite import SqliteStore
from offload.supervisor.wake import poke

pytestmark = pytest.mark.slow

# `python -c` this, then the command's words: `offload ...` with the collector watched.
WATCHED = """
import gc, os, sys
def note(text):
    with open(os.environ["GC_MARKS"], "a") as f:
        f.write(text)
paused = []
def collected(phase, info):  # from the pause on: the interpreter's own start aside
    if phase == "stop" and paused:
        note("c")
gc.callbacks.append(collected)
import offload.collector as collector
real_pause, real_resume = collector.pause, collector.resume
def pause():
    real_pause()
    paused.append(True)
    note("P")
collector.pause = pause
def resume(**kw):
    real_resume(**kw)
    note("R" if gc.isenabled() else "?")
collector.resume = resume
sys.argv = ["offload", *sys.argv[1:]]
from offload.entry import run
run()
"""


def _watched(home: Path, marks: Path, *args: str, **kw: Any) -> subprocess.Popen[str]:
    marks.write_text("")
    return subprocess.Popen(
        [sys.executable, "-P", "-c", WATCHED, *args],
        env=_env(home, {"GC_MARKS": str(marks)}),
        text=True,
        **kw,
    )


def _resumed(marks: Path) -> bool:
    return marks.read_text().startswith("P") and marks.read_text().count("R") == 1


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    return tmp_path / "gc-marks"


@pytest.fixture
def paused() -> Iterator[None]:
    """This test process with the collector paused, as the `offload` script has it."""
    collector.pause()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.enable()


@pytest.mark.parametrize("words", [["list"], ["submit", "--", "true"]])
def test_a_quick_command_runs_without_a_collection(
    offload_home: Path, workspace: Path, marks: Path, words: list[str], start_supervisor: Any
) -> None:
    start_supervisor()
    proc = _watched(offload_home, marks, *words, cwd=workspace, stdout=subprocess.PIPE)
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert marks.read_text() == "P"  # paused, then no collection (~16 with it running)


def test_the_supervisor_resumes_collecting_once_it_runs(
    offload_home: Path, workspace: Path, store: SqliteStore, marks: Path
) -> None:
    offload_home.mkdir(mode=0o700, exist_ok=True)
    proc = _watched(offload_home, marks, "supervisor", "--foreground", stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: poke(offload_home) or proc.poll() is not None, what="start")
        wait_until(lambda: _resumed(marks), what="the collector resumed")
        task = store.submit(
            [TaskSpec(command="true", cwd=str(workspace), workspace=str(workspace))]
        )
        poke(offload_home)
        wait_until(lambda: store.get(task[0].id).state is State.COMPLETED, what="the task")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0


def _answer(proc: subprocess.Popen[str], request_id: int) -> dict[str, Any]:
    assert proc.stdout is not None
    while True:
        message = json.loads(proc.stdout.readline())
        if message.get("id") == request_id:
            return dict(message)


def test_the_mcp_server_resumes_collecting_once_it_serves(
    offload_home: Path, workspace: Path, marks: Path, start_supervisor: Any
) -> None:
    start_supervisor()
    proc = _watched(
        offload_home,
        marks,
        "mcp",
        cwd=workspace,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None
    client = {"name": "t", "version": "1"}
    hello = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": client}
    messages = [
        {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "list_tasks"}},
    ]
    try:
        proc.stdin.write("".join(json.dumps(m) + "\n" for m in messages))
        proc.stdin.flush()
        assert "result" in _answer(proc, 0)
        assert _answer(proc, 1)["result"]["isError"] is False
        assert _resumed(marks)
    finally:
        proc.communicate(timeout=30)


def test_the_http_server_resumes_collecting_once_it_serves(
    offload_home: Path, workspace: Path, marks: Path
) -> None:
    proc = _watched(
        offload_home,
        marks,
        "serve",
        "--port",
        "0",
        cwd=workspace,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        url = proc.stdout.readline().strip()
        assert httpx.get(url.replace("/?", "/api/stats?"), timeout=20).is_success
        assert _resumed(marks)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


def test_waits_and_follows_resume_the_collector(
    paused: None, store: SqliteStore, workspace: Path, offload_home: Path
) -> None:
    from offload.config import load_settings
    from offload.desk import open_desk

    task = store.submit([TaskSpec(command="true", cwd=str(workspace), workspace=str(workspace))])[0]
    store.claim(1, "sup", {})
    store.finish(task.id, State.COMPLETED, exit_code=0)
    assert not gc.isenabled()
    assert wait_for(store, [task.id])[1]
    assert gc.isenabled() and gc.get_freeze_count() > 0  # resumed, the start-up left out
    collector.pause()
    desk = open_desk(
        load_settings(), workspace=workspace, confined=False, store=store, wake=lambda: None
    )
    assert list(desk.follow(store.get(task.id))) == []
    assert gc.isenabled()


def test_resume_is_a_no_op_unless_paused() -> None:
    frozen = gc.get_freeze_count()
    collector.resume()
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_resume_can_free_the_start_ups_cycles_before_the_freeze(paused: None) -> None:
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    probe = Cycle()
    gone = weakref.ref(probe)
    del probe
    collector.resume(collect_first=True)
    assert gone() is None  # frozen, it would have stayed for good
