"""No task stays `running` without a live supervisor; no wait blocks on tasks nobody runs.

Real supervisors are killed with SIGKILL or stopped with SIGSTOP; the front ends that
only read (list, wait, MCP wait) must notice and start one (which marks the orphans
interrupted) or say plainly why they cannot.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

from conftest import SupervisorProc, marked_processes, wait_until
from offload.config import load_settings
from offload.queue.models import State
from offload.queue.sqlite import SqliteStore
from offload.supervisor.liveness import Liveness, ensure_live, process_start, supervisor_state
from test_mcp_support import call

Start = Callable[..., SupervisorProc]
Cli = Callable[..., subprocess.CompletedProcess[str]]
FAST = {"OFFLOAD_GRACE_SECONDS": "1"}


def _running_task(cli: Cli, store: SqliteStore, command: str = "sleep 300") -> str:
    task_id = cli("submit", "--", command).stdout.strip()
    wait_until(lambda: store.get(task_id).pid, what="the task to start")
    return task_id


def _kill9(sup: SupervisorProc) -> None:
    sup.proc.kill()
    sup.proc.wait(10)


@pytest.fixture
def stopped() -> Iterator[list[int]]:
    """Pids a test SIGSTOPs; each gets SIGCONT at teardown, whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def test_a_reused_pid_is_not_a_live_supervisor(offload_home: Path) -> None:
    offload_home.mkdir()
    lock = offload_home / "supervisor.lock"
    proc = subprocess.Popen(["sleep", "30"])
    try:
        start = process_start(proc.pid) or 0.0
        lock.write_text(f"{proc.pid} {start}\n")
        assert supervisor_state(offload_home) == Liveness("running", proc.pid)
        lock.write_text(f"{proc.pid} {start - 3600}\n")  # same pid, another start time
        assert supervisor_state(offload_home) == Liveness("dead", proc.pid)
    finally:
        proc.kill()
        proc.wait()
    lock.write_text(f"{proc.pid} {start}\n")
    assert supervisor_state(offload_home).state == "dead"
    lock.unlink()
    assert supervisor_state(offload_home).state == "none"


def test_nothing_active_means_nothing_is_started(offload_home: Path, store: SqliteStore) -> None:
    started: list[bool] = []
    assert ensure_live(load_settings(), store, start=lambda: started.append(True)) is None
    assert not started


@pytest.mark.slow
def test_wait_after_kill9_ends_with_the_task_interrupted(
    cli: Cli, store: SqliteStore, start_supervisor: Start
) -> None:
    sup = start_supervisor()
    task_id = _running_task(cli, store)
    _kill9(sup)
    began = time.monotonic()
    result = cli("wait", task_id, "--timeout", "60", **FAST)
    assert time.monotonic() - began < 20, "wait blocked on a task nobody ran"
    assert result.returncode == 1, result.stderr  # final but not completed; not a timeout
    task = store.get(task_id)
    assert task.state is State.INTERRUPTED and "died while this task ran" in (task.error or "")
    assert not marked_processes(task_id)  # the orphan was killed too


@pytest.mark.slow
def test_list_after_kill9_starts_a_supervisor_that_recovers(
    cli: Cli, store: SqliteStore, start_supervisor: Start
) -> None:
    sup = start_supervisor()
    task_id = _running_task(cli, store)
    _kill9(sup)
    assert cli("list", **FAST).returncode == 0
    wait_until(lambda: store.get(task_id).state is State.INTERRUPTED, timeout=20)
    pending = cli("submit", "--", "echo after").stdout.strip()  # and the queue runs again
    wait_until(lambda: store.get(pending).state is State.COMPLETED, timeout=20)


@pytest.mark.slow
def test_mcp_wait_after_kill9_does_not_hang(
    offload_home: Path, workspace: Path, cli: Cli, store: SqliteStore, start_supervisor: Start
) -> None:
    sup = start_supervisor()
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "offload.mcp_server"],
        cwd=workspace,
        env={"OFFLOAD_HOME": str(offload_home), "PATH": os.environ["PATH"], **FAST},
    )

    async def scenario() -> dict[str, Any]:
        async with Client(params) as client:
            sub = await call(client, "submit_task", command="sleep 300", timeout_seconds=3)
            await anyio.to_thread.run_sync(
                lambda: wait_until(lambda: store.get(sub["task_id"]).pid, what="start")
            )
            await anyio.to_thread.run_sync(_kill9, sup)
            return await call(client, "wait_for_tasks", task_ids=[sub["task_id"]])

    waited = anyio.run(scenario)
    assert waited["met"] and waited["tasks"][0]["state"] == "interrupted", waited


@pytest.mark.slow
def test_status_and_wait_tell_a_stopped_supervisor(
    cli: Cli, store: SqliteStore, start_supervisor: Start, stopped: list[int]
) -> None:
    sup = start_supervisor()
    task_id = _running_task(cli, store)
    os.kill(sup.proc.pid, signal.SIGSTOP)
    stopped.append(sup.proc.pid)
    wait_until(lambda: psutil.Process(sup.proc.pid).status() == psutil.STATUS_STOPPED)
    status = cli("supervisor", "status")
    assert status.returncode == 3 and "stopped" in status.stdout, status.stdout
    began = time.monotonic()
    waited = cli("wait", task_id, "--timeout", "60")
    assert time.monotonic() - began < 10
    assert waited.returncode == 1 and "SIGSTOP" in waited.stderr, waited.stderr
    assert "Traceback" not in waited.stderr
    os.kill(sup.proc.pid, signal.SIGCONT)
    assert cli("supervisor", "status").returncode == 0


@pytest.mark.slow
def test_wait_timeout_says_what_is_true(
    cli: Cli, store: SqliteStore, start_supervisor: Start
) -> None:
    start_supervisor()
    task_id = _running_task(cli, store)
    result = cli("wait", task_id, "--timeout", "1")
    assert result.returncode == 124
    assert "timed out after 1 s; still waiting on 1 running" in result.stderr


@pytest.mark.slow
def test_a_second_supervisor_never_interrupts_a_live_ones_tasks(
    cli: Cli, store: SqliteStore, start_supervisor: Start, offload_home: Path
) -> None:
    first = start_supervisor()
    task_id = _running_task(cli, store)
    wait_until(lambda: store.supervisor_info(), what="the first heartbeat")
    (offload_home / "supervisor.lock").unlink()
    (offload_home / "wake.fifo").unlink()
    second = start_supervisor()
    assert second.proc.wait(20) != 0  # refused: a live supervisor holds the data dir
    assert store.get(task_id).state is State.RUNNING
    assert first.proc.poll() is None
    # the first one puts its FIFO and lock back, so front ends reach it again
    wait_until(lambda: (offload_home / "wake.fifo").exists(), timeout=15, what="FIFO")
    assert supervisor_state(offload_home, store).pid == first.proc.pid
    cli("cancel", task_id)
    wait_until(lambda: store.get(task_id).state is State.CANCELLED, timeout=15)
