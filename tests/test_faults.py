"""Faults end, they do not loop: refused finishes, a locked database, a full disk, huge output.

Real supervisors, real SQLite locks held by another connection, a real 20 MB tmpfs (the
suite runs as root in CI; the tmpfs tests skip elsewhere).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

from conftest import SupervisorProc, marked_processes, stop_detached_supervisors, wait_until
from offload.progress import final_progress
from offload.queue.models import State
from offload.queue.sqlite import SqliteStore
from offload.supervisor.liveness import supervisor_state

Start = Callable[..., SupervisorProc]
Cli = Callable[..., subprocess.CompletedProcess[str]]


def _log_of(offload_home: Path, index: int = 0) -> str:
    return (offload_home.parent / f"supervisor-{index}.err").read_text()


@pytest.mark.slow
def test_a_refused_finish_is_logged_once_and_sigterm_is_honoured(
    cli: Cli, store: SqliteStore, start_supervisor: Start, offload_home: Path
) -> None:
    sup = start_supervisor(grace_seconds="1")
    task_id = cli("submit", "--", "sleep 300").stdout.strip()
    wait_until(lambda: store.get(task_id).pid, what="the task to start")
    db = sqlite3.connect(offload_home / "queue.db", isolation_level=None)
    db.execute("UPDATE tasks SET state = 'interrupted' WHERE id = ?", (task_id,))
    db.close()
    # the supervisor notices at its next heartbeat: the tree is killed, not left to run
    wait_until(lambda: not marked_processes(task_id), timeout=20, what="the tree to die")
    wait_until(lambda: "finish_refused" in _log_of(offload_home), timeout=10)
    time.sleep(0.5)  # a looping supervisor would log hundreds of lines by now
    log = _log_of(offload_home)
    assert log.count("finish_refused") == 1 and "finish_failed" not in log
    assert sup.stop(timeout=10) == 0  # SIGTERM honoured


@pytest.mark.slow
def test_a_sigterm_ignoring_task_dies_on_time_while_the_db_is_locked(
    cli: Cli, store: SqliteStore, start_supervisor: Start, offload_home: Path
) -> None:
    start_supervisor(grace_seconds="1")
    task_id = cli("submit", "--timeout", "2", "--", "trap '' TERM; sleep 60").stdout.strip()
    started = wait_until(lambda: store.get(task_id).pid and store.get(task_id))
    assert started.started_at is not None
    locker = sqlite3.connect(offload_home / "queue.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        wait_until(lambda: not marked_processes(task_id), timeout=8, what="the kill")
        # timeout 2 s + grace 1 s, measured from the start the supervisor recorded
        assert time.time() - started.started_at / 1000 < 5.5
        assert store.get(task_id).state is State.RUNNING  # not recorded yet: the DB is locked
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    wait_until(lambda: store.get(task_id).state is State.TIMED_OUT, timeout=10)


@pytest.mark.parametrize(
    "dodge",
    ['rm "$L"', 'rm "$L"; : >"$L"'],
    ids=["log removed", "empty log swapped in"],
)
def test_the_output_cap_holds_when_the_task_removes_its_log(
    cli: Cli, store: SqliteStore, start_supervisor: Start, dodge: str
) -> None:
    """The cap looks at the file the task writes to, not only at the path."""
    start_supervisor(max_output_bytes="100000", grace_seconds="1")
    command = f"L=$(readlink /proc/self/fd/2); {dodge}; yes 0123456789"
    task_id = cli("submit", "--", command).stdout.strip()
    task = wait_until(lambda: (t := store.get(task_id)).is_final and t, timeout=20)
    assert task.state is State.FAILED and "max_output_bytes" in (task.error or "")


def test_cutting_a_log_leaves_a_link_the_task_put_there_alone(
    cli: Cli, store: SqliteStore, start_supervisor: Start, tmp_path: Path
) -> None:
    """The log is cut through the file the task wrote to, never through a link at its
    path: that once grew the link's target to the cap and wrote the note into it."""
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    start_supervisor(max_output_bytes="100000", grace_seconds="1")
    command = f'L=$(readlink /proc/self/fd/2); rm "$L"; ln -s {victim} "$L"; yes 0123456789'
    task_id = cli("submit", "--", command).stdout.strip()
    task = wait_until(lambda: (t := store.get(task_id)).is_final and t, timeout=20)
    assert task.state is State.FAILED and "max_output_bytes" in (task.error or "")
    assert victim.read_text() == "untouched\n"


@pytest.mark.slow
def test_output_past_the_cap_is_cut_and_the_task_stopped(
    cli: Cli, store: SqliteStore, start_supervisor: Start
) -> None:
    start_supervisor(max_output_bytes="100000", grace_seconds="1")
    task_id = cli("submit", "--", "yes 0123456789").stdout.strip()
    task = wait_until(lambda: (t := store.get(task_id)).is_final and t, timeout=20)
    assert task.state is State.FAILED and "max_output_bytes" in (task.error or "")
    log = Path(task.log_path or "").read_bytes()
    assert b"[offload: output cut at 100000 bytes" in log[100_000:100_200]
    assert len(log) < 1_000_000


def test_final_progress_reads_the_last_marker_past_a_summary(tmp_path: Path) -> None:
    log = tmp_path / "t.log"
    summary = "".join(f"summary line {i} of the run\n" for i in range(2000))
    log.write_text("[3/10] a\n[10/10] done\n" + summary)
    found = final_progress(log)
    assert found is not None and found.fraction == 1.0 and found.message == "[10/10] done"
    log.write_bytes(b"\0" * 3_000_000)  # one endless line, no marker: a quick None
    began = time.monotonic()
    assert final_progress(log) is None and time.monotonic() - began < 2


# -- a full disk ---------------------------------------------------------------------------
@pytest.fixture
def small_disk(offload_home: Path) -> Iterator[Path]:
    """OFFLOAD_HOME on a 20 MB tmpfs (root only); unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    offload_home.mkdir(mode=0o700, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m,mode=0700", "tmpfs", str(offload_home)],
        check=True,
    )
    try:
        yield offload_home
    finally:
        # Before the unmount: a lazy unmount would hide the home from the autouse clean-up.
        stop_detached_supervisors(offload_home)
        if subprocess.run(["umount", str(offload_home)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(offload_home)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return filler


@pytest.mark.slow
def test_a_full_disk_gets_one_line_everywhere_and_the_queue_resumes(
    small_disk: Path, cli: Cli, workspace: Path, offload_home: Path, store: SqliteStore
) -> None:
    first = cli("submit", "--", "echo before")  # starts a detached supervisor (logs on tmpfs)
    assert first.returncode == 0, first.stderr
    wait_until(lambda: store.get(first.stdout.strip()).state is State.COMPLETED, timeout=20)
    writer = cli("submit", "--", "head -c 30000000 /dev/zero").stdout.strip()
    wait_until(lambda: store.get(writer).pid, what="the writer to start")
    filler = _fill(small_disk)
    full = cli("submit", "--", "echo during")
    assert full.returncode == 1 and "disk" in full.stderr and "full" in full.stderr
    assert "Traceback" not in full.stderr and len(full.stderr.splitlines()) == 1

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "offload.mcp_server"],
        cwd=workspace,
        env={"OFFLOAD_HOME": str(offload_home), "PATH": os.environ["PATH"]},
    )

    async def mcp_submit() -> Any:
        async with Client(params) as client:
            return await client.call_tool("submit_task", {"command": "echo via mcp"})

    refused = anyio.run(mcp_submit)
    text = " ".join(getattr(c, "text", "") for c in refused.content)
    assert refused.is_error and "full" in text, text

    # The supervisor meets the full disk on its writes and logs, pass after pass: it must
    # stay up throughout, not just at one instant.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        found = supervisor_state(offload_home, store)
        assert found.state == "running", "the supervisor died of a full disk"
        time.sleep(0.05)
    filler.unlink()
    Path(store.get(writer).log_path or "").write_bytes(b"")  # free the writer's output too
    wait_until(lambda: store.get(writer).is_final, timeout=20, what="the writer's record")
    after = cli("submit", "--wait", "--", "echo after")
    assert after.returncode == 0 and "after" in after.stdout, after.stderr
    db = sqlite3.connect(offload_home / "queue.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
