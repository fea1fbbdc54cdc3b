"""The CLI end to end through its real entry point (`python -m offload`)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import marked_processes, wait_until
from offload.queue.models import State, TaskSpec
from offload.queue.sqlite import SqliteStore
from offload.supervisor.wake import poke

Cli = Callable[..., subprocess.CompletedProcess[str]]


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def test_submit_starts_a_supervisor_on_demand_and_runs(cli: Cli, offload_home: Path) -> None:
    task_id = ok(cli("submit", "--", "echo", "hello", "&&", "echo", "world")).strip()
    assert len(task_id) == 32
    assert ok(cli("wait", task_id[:8], "--timeout", "30")) != ""
    assert poke(offload_home)  # a detached supervisor was started
    assert ok(cli("logs", task_id[:6])) == "hello\nworld\n"
    shown = json.loads(ok(cli("show", task_id, "--json")))
    assert shown["state"] == "completed" and shown["exit_code"] == 0
    assert (offload_home / "supervisor.log").read_text().count('"event": "started"') == 1


def test_submit_wait_follows_and_exits_with_the_task_code(cli: Cli, start_supervisor: Any) -> None:
    start_supervisor()
    result = cli("submit", "--wait", "--", "echo line1; echo line2; exit 7")
    assert result.returncode == 7
    assert result.stdout == "line1\nline2\n"  # the task's output only: the id is on stderr
    assert "exited with code 7" in result.stderr and "submitted" in result.stderr
    assert cli("submit", "--wait", "--", "true").returncode == 0


def test_list_show_stats_json_and_tables(cli: Cli, start_supervisor: Any) -> None:
    start_supervisor()
    first = ok(cli("submit", "--name", "the build", "--", "true")).strip()
    ok(cli("wait", first))
    table = ok(cli("list"))
    assert "the build" in table and "completed" in table and first[:12] in table
    rows = json.loads(ok(cli("list", "--json", "--state", "completed")))
    assert [r["id"] for r in rows] == [first]
    assert "completed" in ok(cli("show", first[:7]))
    stats = json.loads(ok(cli("stats", "--json")))
    assert stats["counts"] == {"completed": 1} and len(stats["days"]) == 14
    assert "completed 1" in ok(cli("stats"))


def test_logs_tail_and_follow(cli: Cli, start_supervisor: Any, offload_home: Path) -> None:
    start_supervisor()
    flag = offload_home.parent / "release"
    task_id = ok(
        cli("submit", "--", f"seq 1 50; while [ ! -e {flag} ]; do sleep 0.05; done; echo end")
    ).strip()
    wait_until(lambda: cli("logs", task_id).stdout.endswith("50\n"), what="output")
    assert ok(cli("logs", task_id, "--tail", "3")) == "48\n49\n50\n"
    follower = subprocess.Popen(
        [*_cli_argv(), "logs", task_id, "--tail", "1", "-f"],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(offload_home),
    )
    assert follower.stdout is not None
    assert follower.stdout.readline() == "50\n"  # the tail, printed before the task ends
    flag.touch()
    out, _ = follower.communicate(timeout=30)
    assert follower.returncode == 0 and out == "end\n"


def _cli_argv() -> list[str]:
    import sys

    return [sys.executable, "-m", "offload"]


def _env(home: Path) -> dict[str, str]:
    import os

    return {**os.environ, "OFFLOAD_HOME": str(home)}


def test_cancel_kills_the_tree(cli: Cli, start_supervisor: Any, store: SqliteStore) -> None:
    start_supervisor(grace_seconds="1")
    task_id = ok(cli("submit", "--", "setsid sleep 300 & sleep 300")).strip()
    wait_until(lambda: len(marked_processes(task_id)) >= 2, what="tree running")
    assert ok(cli("cancel", task_id[:8])).strip() == f"{task_id[:12]} cancelled"
    assert marked_processes(task_id) == []
    assert store.get(task_id).state is State.CANCELLED


def test_retry_failed_purge(cli: Cli, start_supervisor: Any, store: SqliteStore) -> None:
    start_supervisor()
    marker = Path("marker")
    bad = ok(cli("submit", "--", f"test -e {marker.name}")).strip()
    good = ok(cli("submit", "--", "true")).strip()
    assert cli("wait", bad, good).returncode == 1  # one of them failed
    assert store.get(bad).state is State.FAILED
    marker.touch()
    assert "attempt 2" in ok(cli("retry", "--failed"))
    ok(cli("wait", bad))
    assert store.get(bad).state is State.COMPLETED
    assert ok(cli("retry", "--failed")) == "nothing to retry\n"
    assert ok(cli("purge")) == "purged 2 task(s)\n"
    assert store.list() == []


def test_batch_submits_in_one_transaction(
    cli: Cli, start_supervisor: Any, store: SqliteStore
) -> None:
    start_supervisor()
    batch = 'echo one\n\n# a comment\n{"command": "echo two", "priority": 1, "name": "second"}\n'
    ids = ok(cli("submit", "--batch", "-", input=batch)).split()
    assert len(ids) == 2
    ok(cli("wait", *ids))
    assert {t.name or t.title for t in store.list()} == {"echo one", "second"}
    bad = 'echo fine\n{"command": "x", "priority": 42}\n'
    result = cli("submit", "--batch", "-", input=bad)
    assert result.returncode == 1 and "batch entry 2: priority must be 1-10" in result.stderr
    assert len(store.list()) == 2  # nothing of the refused batch was stored


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "--priority", "0", "--", "true"], "priority must be 1-10"),
        (["submit", "--timeout", "-5", "--", "true"], "'-5' is not a duration"),
        (["submit", "--timeout", "0", "--", "true"], "timeout"),
        (["submit", "--cwd", "/", "--", "true"], "outside the workspace"),
        (["submit", "--cwd", "missing-dir", "--", "true"], "not an existing directory"),
        (["submit", "--group", "bad group!", "--", "true"], "group"),
        (["submit", "--after", "abcdef1234", "--", "true"], "no task"),
        (["submit", "--env", "NOEQUALS", "--", "true"], "must be NAME=VALUE"),
        (["submit", "--env", "OPENAI_API_KEY=x", "--", "true"], "looks like a secret"),
        (["show", "zzzzzz"], "is not a task id"),
        (["show", "abc"], "at least 6"),
        (["logs", "abcdef", "--tail", "-1"], "tail must be between"),
        (["wait", "abcdef0"], "no task"),
        (["cancel", "abcdef0"], "no task"),
        (["retry"], "give a task id, or --failed"),
        (["purge", "--older-than", "soon"], "is not a duration"),
        (["purge", "--older-than", "1e300d"], "is not a duration"),
        (["submit", "--timeout", "1e400", "--", "true"], "must be at least 0 and under"),
        (["purge", "--older-than", "inf"], "must be at least 0 and under"),
        (["submit", "--batch", "/nonexistent"], "cannot read batch file /nonexistent: No such"),
        (["submit", "--batch", "/tmp"], "batch file /tmp is a directory"),
    ],
)
def test_bad_input_gets_one_clear_line(cli: Cli, args: list[str], message: str) -> None:
    result = cli(*args)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_batch_that_is_not_utf8_gets_one_clear_line(cli: Cli, workspace: Path) -> None:
    (workspace / "batch.txt").write_bytes(b"echo caf\xe9\n")
    result = cli("submit", "--batch", "batch.txt")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == (
        "offload: batch file batch.txt is not UTF-8 text (byte 0xe9 at offset 8); "
        "save it as UTF-8\n"
    )
    piped = subprocess.run(
        [*_cli_argv(), "submit", "--batch", "-"],
        input=b"echo caf\xe9\n",
        capture_output=True,
        cwd=workspace,
        env=_env(workspace.parent / "home"),
    )
    assert piped.returncode == 1
    assert piped.stderr.startswith(b"offload: standard input is not UTF-8 text")


def test_huge_list_limit_and_offset_are_clamped(cli: Cli, store: SqliteStore) -> None:
    huge = "99999999999999999999"
    assert json.loads(ok(cli("list", "--json", "--limit", huge))) == []
    assert json.loads(ok(cli("list", "--json", "--offset", huge, "--limit", huge))) == []
    assert ok(cli("list", "--limit", huge)) == ""  # piped: no header, no rows


def test_a_deleted_current_directory_gets_one_clear_line(offload_home: Path) -> None:
    gone = offload_home.parent / "gone"
    gone.mkdir()
    script = 'cd "$1" && rmdir "$1" && shift && exec "$@"'
    for args in (["submit", "--", "true"], ["list", "--here"]):
        result = subprocess.run(
            ["sh", "-c", script, "sh", str(gone), *_cli_argv(), *args],
            capture_output=True,
            text=True,
            env=_env(offload_home),
        )
        assert result.returncode == 1, result.stderr
        assert result.stderr == (
            "offload: the current directory no longer exists; cd somewhere else\n"
        )
        gone.mkdir()


def test_parent_id_must_name_an_existing_task(
    cli: Cli, start_supervisor: Any, store: SqliteStore, workspace: Path
) -> None:
    for parent, message in [
        ({"id": "x"}, "batch entry 1: parent_id must be a string, got dict"),
        ("abcdef0123", "batch entry 1: no task matches 'abcdef0123'"),
        ("not an id", "batch entry 1: 'not an id' is not a task id"),
    ]:
        entry = json.dumps({"command": "true", "parent_id": parent})
        result = cli("submit", "--batch", "-", input=entry)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr.startswith(f"offload: {message}"), result.stderr
    assert store.list() == []
    start_supervisor()  # the one the submit wakes, stopped when the test ends
    (parent_task,) = store.submit(
        [TaskSpec(command="true", cwd=str(workspace), workspace=str(workspace))]
    )
    entry = json.dumps({"command": "true", "parent_id": parent_task.id[:8]})
    child_id = ok(cli("submit", "--batch", "-", input=entry)).strip()
    assert store.get(child_id).parent_id == parent_task.id
    ok(cli("wait", child_id, parent_task.id, "--timeout", "30"))


def test_supervisor_status_counts_without_loading_the_tasks(
    store: SqliteStore, workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from offload.cli.status import show_status
    from offload.config import load_settings

    store.submit([TaskSpec(command="true", cwd=str(workspace), workspace=str(workspace))] * 3)
    store.claim(1, "sup", {})

    def no_listing(*args: Any, **kwargs: Any) -> list[Any]:
        raise AssertionError("status loaded every task to count them")

    monkeypatch.setattr(store, "list", no_listing)
    assert show_status(load_settings(), store, as_json=True) == 3  # none running
    shown = json.loads(capsys.readouterr().out)
    assert (shown["pending"], shown["running"]) == (2, 1)


def test_policy_refusals_name_the_rule(cli: Cli) -> None:
    result = cli("submit", "--", "echo ok | curl evil", OFFLOAD_ALLOW="^echo ")
    assert result.returncode == 1 and "'curl evil' is not allowed" in result.stderr
    result = cli("submit", "--", "rm -rf /", OFFLOAD_DENY="rm -rf")
    assert result.returncode == 1 and "deny rule 'rm -rf'" in result.stderr
    result = cli("submit", "--", "true", OFFLOAD_ALLOW="(")
    assert result.returncode == 1 and "invalid OFFLOAD_ALLOW pattern '('" in result.stderr


def test_tail_of_huge_or_negative_is_refused_clearly(cli: Cli, start_supervisor: Any) -> None:
    start_supervisor()
    task_id = ok(cli("submit", "--", "echo x")).strip()
    ok(cli("wait", task_id))
    for tail in ("-1", "100000000"):
        result = cli("logs", task_id, "--tail", tail)
        assert result.returncode == 1 and "tail must be between 0 and" in result.stderr
    assert ok(cli("logs", task_id, "--tail", "0")) == ""


def test_supervisor_status_and_stop(cli: Cli, offload_home: Path) -> None:
    assert cli("supervisor", "status").returncode == 3
    ok(cli("submit", "--", "true"))
    wait_until(lambda: poke(offload_home), what="on-demand supervisor")
    assert "supervisor running" in ok(cli("supervisor", "status"))
    assert "stopped" in ok(cli("supervisor", "stop"))
    assert not poke(offload_home)
    assert ok(cli("supervisor", "stop")) == "no supervisor running\n"


def test_stop_also_stops_a_supervisor_waiting_to_take_over(cli: Cli, offload_home: Path) -> None:
    """Two quick submits can start two on-demand supervisors: the second waits for the
    first's lock. A stop must not leave it to take over: it exits once it has the lock."""
    offload = str(Path(sys.executable).parent / "offload")
    env = {**os.environ, "OFFLOAD_HOME": str(offload_home)}
    first = subprocess.Popen([offload, "supervisor", "--detached"], env=env)
    wait_until(lambda: poke(offload_home), what="the first supervisor")
    second = subprocess.Popen([offload, "supervisor", "--detached"], env=env)
    try:
        lock = str(offload_home / "supervisor.lock")
        wait_until(
            lambda: any(f.path == lock for f in psutil.Process(second.pid).open_files()),
            what="the second supervisor waiting for the lock",
        )
        assert f"(pid {first.pid}" in ok(cli("supervisor", "stop"))
        assert first.wait(10) == 0 and second.wait(15) == 0  # it did not take over
        assert not poke(offload_home)
        ok(cli("submit", "--", "true"))  # a later front end still starts one
        wait_until(lambda: poke(offload_home), what="a supervisor after the stop")
        assert "stopped" in ok(cli("supervisor", "stop"))
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait()


def test_a_supervisor_waiting_for_the_lock_does_not_outlive_a_stop(
    offload_home: Path,
) -> None:
    """The lock is held (as by a supervisor shutting down); an on-demand one waits for it.
    A stop asked for meanwhile: once it has the lock, it exits instead of serving."""
    from offload.supervisor.wake import SupervisorLock, request_stop

    offload_home.mkdir(parents=True, exist_ok=True)
    held = SupervisorLock(offload_home)
    held.acquire()
    offload = str(Path(sys.executable).parent / "offload")
    env = {**os.environ, "OFFLOAD_HOME": str(offload_home)}
    waiting = subprocess.Popen([offload, "supervisor", "--detached"], env=env)
    try:
        lock = str(offload_home / "supervisor.lock")
        wait_until(
            lambda: any(f.path == lock for f in psutil.Process(waiting.pid).open_files()),
            what="the supervisor waiting for the lock",
        )
        request_stop(offload_home)
        held.release()
        assert waiting.wait(10) == 0
        assert not poke(offload_home)
    finally:
        held.release()
        waiting.kill()
        waiting.wait()


@pytest.mark.parametrize("planted", ["symlink", "hard link", "fifo", "directory"])
def test_stop_does_not_write_through_a_file_planted_for_its_note(
    cli: Cli, offload_home: Path, tmp_path: Path, planted: str
) -> None:
    """A task that may write the data dir plants something at the note's name: the note
    goes beside it and is renamed over it. A FIFO made the stop wait forever; a hard link
    had its target emptied; a directory (no rename replaces one with a file) kept the note
    from being written, so a supervisor starting meanwhile did not stop."""
    offload_home.mkdir(parents=True, exist_ok=True)
    victim = tmp_path / "bashrc"
    victim.write_text("export KEEP=1\n")
    note = offload_home / "supervisor.stop"
    if planted == "symlink":
        note.symlink_to(victim)
    elif planted == "hard link":
        os.link(victim, note)
    elif planted == "fifo":
        os.mkfifo(note, 0o600)
    else:  # deeper than Python's recursion limit: a recursive walk of it raised
        note.mkdir()
        (note / "link").symlink_to(tmp_path)
        _deep_directory(note, 1200)
    try:
        assert ok(cli("supervisor", "stop", timeout=20)) == "no supervisor running\n"
        assert victim.read_text() == "export KEEP=1\n" and (tmp_path / "bashrc").exists()
        assert note.is_file() and not note.is_symlink() and float(note.read_text()) > 0
    finally:
        for deep in [note, *offload_home.glob(".supervisor.stop.planted.*")]:
            if deep.is_dir() and not deep.is_symlink():
                _remove_deep_directory(deep)


def _deep_directory(top: Path, depth: int) -> None:
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(fd)


def _remove_deep_directory(top: Path) -> None:
    """One level at a time, by moving the rest up (pytest's clean-up would recurse)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in os.listdir(fd):
            if name != "d":
                os.unlink(name, dir_fd=fd)
        while "d" in os.listdir(fd):
            inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            try:
                if "d" in os.listdir(inner):
                    os.rename("d", "up", src_dir_fd=inner, dst_dir_fd=fd)
            finally:
                os.close(inner)
            os.rmdir("d", dir_fd=fd)
            if "up" in os.listdir(fd):
                os.rename("up", "d", src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(top)


def test_a_stop_whose_note_is_swapped_for_a_directory_still_stops(
    offload_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task watching the data dir swaps the stop's new file for a directory just before
    the rename: cleaning up after the failed rename raised, and `stop` ended before it
    signalled anything."""
    from offload.supervisor import wake

    offload_home.mkdir(parents=True, exist_ok=True)
    (offload_home / "supervisor.stop").write_text("1.0\n")  # an earlier stop's note
    real_replace = os.replace

    def swapped(source: Any, target: Any) -> None:
        os.unlink(source)
        os.mkdir(source)  # what the task swapped in
        real_replace(source, target)  # ENOTDIR, as the real race gives

    monkeypatch.setattr(wake.os, "replace", swapped)
    wake.request_stop(offload_home)  # no exception: the note is best effort
    for planted in offload_home.glob(".supervisor.stop.*"):
        planted.rmdir()


def test_stop_looks_at_each_lock_holder_once(
    offload_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task holds an flock on each of 300 files: `stop` read the task's descriptors once
    per lock, and with thousands of locks took minutes, past its --timeout."""
    from offload.supervisor import liveness

    offload_home.mkdir(parents=True, exist_ok=True)
    script = (
        "import fcntl, sys\n"
        "files = [open(f'{sys.argv[1]}/l{i}', 'w') for i in range(300)]\n"
        "for f in files: fcntl.flock(f, fcntl.LOCK_EX)\n"
        "print('locked', flush=True); sys.stdin.read()\n"
    )
    holder = subprocess.Popen(  # "supervisor" in its words: it passes the name check
        [sys.executable, "-c", script, str(tmp_path), "supervisor"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        listed: list[str] = []
        real_listdir = os.listdir

        def listdir(path: Any = ".") -> list[str]:
            listed.append(str(path))
            return real_listdir(path)

        monkeypatch.setattr(liveness.os, "listdir", listdir)
        assert liveness.lock_holders(offload_home) == []
        assert listed.count(f"/proc/{holder.pid}/fd") == 1
    finally:
        holder.kill()
        holder.communicate()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
def test_stop_finds_the_supervisor_through_a_bind_mount_of_its_data_dir(
    cli: Cli, offload_home: Path, tmp_path: Path
) -> None:
    """A container sees the data dir at another mount path: stop must still find its
    supervisor (the directory is the same, whatever path reaches it)."""
    ok(cli("submit", "--wait", "--", "true"))
    other_path = tmp_path / "bound"
    other_path.mkdir()
    stop = (
        f"mount --bind {shlex.quote(str(offload_home))} {shlex.quote(str(other_path))} && "
        f"OFFLOAD_HOME={shlex.quote(str(other_path))} "
        f"{shlex.join(_cli_argv())} supervisor stop --timeout 10"
    )
    result = subprocess.run(  # the mount lives and dies with this private namespace
        ["unshare", "-m", "--propagation", "private", "sh", "-c", stop],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0 and "stopped" in result.stdout, result
    assert not poke(offload_home)


def test_a_name_planted_for_the_stops_own_file_does_not_drop_the_note(
    offload_home: Path,
) -> None:
    """The note was first written to `.supervisor.stop.<pid>`: a task that planted a
    directory under every pid's name kept every stop from noting itself."""
    from offload.supervisor.wake import request_stop, stop_asked_since

    offload_home.mkdir(parents=True, exist_ok=True)
    (offload_home / f".supervisor.stop.{os.getpid()}").mkdir()
    began = time.time()
    request_stop(offload_home)
    assert stop_asked_since(offload_home, began)


def test_stop_signals_no_process_a_forged_lock_file_names(cli: Cli, offload_home: Path) -> None:
    """A task that may write the data dir writes another process's pid (and its right
    start time) into the lock file while something holds the FIFO: `stop` must not
    SIGTERM that process. It signals only a lock holder that runs a supervisor."""
    from offload.supervisor.liveness import process_start

    offload_home.mkdir(parents=True, exist_ok=True)
    victim = subprocess.Popen(["sleep", "300"])
    fifo = offload_home / "wake.fifo"
    os.mkfifo(fifo, 0o600)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a poke finds a reader
    try:
        wait_until(lambda: process_start(victim.pid) is not None, what="the victim")
        start = process_start(victim.pid)
        (offload_home / "supervisor.lock").write_text(f"{victim.pid} {start:.3f}\n")
        result = cli("supervisor", "stop", "--timeout", "0.5")
        assert result.returncode == 1 and "still running" in result.stderr, result
        assert victim.poll() is None, "stop signalled a process that is no supervisor"
    finally:
        os.close(reader)
        victim.kill()
        victim.wait()


@pytest.mark.parametrize(
    "planted", ["replaced", "hard link", "moved in, linked back", "own renamed, linked back"]
)
def test_stop_never_signals_another_data_dirs_supervisor(
    cli: Cli, offload_home: Path, tmp_path: Path, planted: str
) -> None:
    """A task that may write the data dir replaces its lock file with one naming another
    data dir's supervisor, or hard-links that one's lock file in its place (the kernel then
    says that supervisor holds a lock at this path), or moves that one's lock file in and
    links it back (its descriptor then reads this path). `stop` stopped the other one,
    whose tasks would have been interrupted, and left its own running. Renaming its own
    lock file aside and linking it back left `stop` nothing it would signal."""
    other_home = tmp_path / "other"
    other = subprocess.Popen(
        [*_cli_argv(), "supervisor"],
        env=_env(other_home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: poke(other_home), what="the other data dir's supervisor")
        # once a task ran, the supervisor's first pass (which re-takes a replaced lock
        # file, as it does every 5 s) is behind it
        ok(cli("submit", "--wait", "--", "true"))
        lock = offload_home / "supervisor.lock"
        own = int(lock.read_text().split()[0])
        if planted == "replaced":
            forged = offload_home / "forged"
            forged.write_text(f"{other.pid} 1.0\n")
            os.replace(forged, lock)
        elif planted == "hard link":
            lock.unlink()
            os.link(other_home / "supervisor.lock", lock)
        elif planted == "moved in, linked back":
            lock.rename(offload_home / "aside.lock")
            (other_home / "supervisor.lock").rename(lock)
            os.link(lock, other_home / "supervisor.lock")
        else:
            lock.rename(offload_home / "aside.lock")
            os.link(offload_home / "aside.lock", lock)
        assert f"(pid {own})" in ok(cli("supervisor", "stop", "--timeout", "10"))
        assert not poke(offload_home)
        assert other.poll() is None and poke(other_home), "stop hit the other supervisor"
    finally:
        other.terminate()
        other.wait(10)


def test_a_decoy_holding_the_data_dir_never_hides_its_supervisor(
    cli: Cli, offload_home: Path, tmp_path: Path
) -> None:
    """A task's own process takes an flock (one on each CPU, so the kernel lists it
    first), opens the data dir, calls itself a supervisor and ignores SIGTERM: `stop`
    signalled only that decoy and gave up on the real supervisor."""
    ok(cli("submit", "--wait", "--", "true"))
    own = int((offload_home / "supervisor.lock").read_text().split()[0])
    script = (
        "import fcntl, os, signal, sys\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "home = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\n"
        "locks = []\n"
        "for cpu in sorted(os.sched_getaffinity(0)):\n"
        "    os.sched_setaffinity(0, {cpu})\n"
        "    locks.append(open(f'{sys.argv[2]}/l{cpu}', 'w'))\n"
        "    fcntl.flock(locks[-1], fcntl.LOCK_EX)\n"
        "print('ready', flush=True); sys.stdin.read()\n"
    )
    decoy = subprocess.Popen(
        [sys.executable, "-c", script, str(offload_home), str(tmp_path), "supervisor"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert decoy.stdout is not None and decoy.stdout.readline() == "ready\n"
        ok(cli("supervisor", "stop", "--timeout", "10"))
        assert not psutil.pid_exists(own) or psutil.Process(own).status() == "zombie"
        assert not poke(offload_home)
    finally:
        decoy.kill()
        decoy.communicate()


def test_stop_finds_a_supervisor_whose_data_dir_was_moved_aside_and_recreated(
    cli: Cli, offload_home: Path
) -> None:
    """A task moves the data dir aside, makes a new one and moves every file back: the
    supervisor serves on, but the directory it held open was the old one, and `stop`
    found nothing to signal. It opens the new one on its next heartbeat."""
    ok(cli("submit", "--wait", "--", "true"))
    aside = offload_home.with_name("moved-aside")
    offload_home.rename(aside)
    offload_home.mkdir(mode=0o700)
    for entry in aside.iterdir():
        entry.rename(offload_home / entry.name)
    aside.rmdir()
    assert ok(cli("supervisor", "stop", "--timeout", "20")).endswith("stopped\n")
    assert not poke(offload_home)


def test_stop_finds_the_supervisor_after_the_wall_clock_stepped(
    cli: Cli, offload_home: Path
) -> None:
    """The lock file's start time is a wall-clock time; after a step of the clock (NTP at
    boot) it no longer matched the process, and stop found no supervisor to signal. The
    kernel's record of who holds the lock does not move."""
    ok(cli("submit", "--", "true"))
    wait_until(lambda: poke(offload_home), what="on-demand supervisor")
    lock = offload_home / "supervisor.lock"
    pid = int(lock.read_text().split()[0])
    with open(lock, "r+") as f:  # the same file the supervisor holds, its time 3 h off
        f.write(f"{pid} {time.time() - 3 * 3600:.3f}\n")
        f.truncate()
    assert f"(pid {pid})" in ok(cli("supervisor", "stop", "--timeout", "10"))
    assert not poke(offload_home)


def test_the_stop_note_and_the_lock_are_read_without_hanging(
    offload_home: Path, tmp_path: Path
) -> None:
    """A FIFO at either name would block a starting supervisor, or `stop`, in the open; a
    link to /dev/zero would be read for ever. Each reads as nothing there."""
    from offload.supervisor.liveness import lock_record
    from offload.supervisor.wake import stop_asked_since, supervisor_pid

    offload_home.mkdir(parents=True, exist_ok=True)
    for make in (lambda p: os.mkfifo(p, 0o600), lambda p: p.symlink_to("/dev/zero")):
        for name in ("supervisor.stop", "supervisor.lock"):
            (offload_home / name).unlink(missing_ok=True)
            make(offload_home / name)
        assert not stop_asked_since(offload_home, 0.0)
        assert supervisor_pid(offload_home) is None and lock_record(offload_home) is None


def test_huge_single_line_output_is_tailed_within_the_cap(
    cli: Cli, start_supervisor: Any, offload_home: Path
) -> None:
    start_supervisor()
    command = "head -c 50000000 /dev/zero | tr '\\0' x; printf '\\377\\376 end\\n'"
    task_id = ok(cli("submit", "--", command)).strip()
    ok(cli("wait", task_id, "--timeout", "120"))
    shown = json.loads(ok(cli("show", task_id, "--json")))
    assert shown["state"] == "completed"
    assert Path(shown["log_path"]).stat().st_size == 50_000_007
    tail = subprocess.run(
        [sys.executable, "-P", "-m", "offload", "logs", task_id, "--tail", "1"],
        env=_env(offload_home),
        capture_output=True,
        timeout=60,
    )
    assert tail.returncode == 0 and len(tail.stdout) <= 1_048_576
    assert tail.stdout.endswith(b"\xff\xfe end\n")  # raw bytes, as `logs` prints them


def test_path_cannot_be_overridden_under_an_allow_list(cli: Cli) -> None:
    result = cli("submit", "--env", "PATH=/tmp/evil", "--", "make", OFFLOAD_ALLOW="^make")
    assert result.returncode == 1 and "env PATH cannot be set" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--type", "write_file", "--spec", "x", "--output", "{home}/config.toml"],
        ["--type", "review", "--spec", "x", "--context", "{home}/queue.db"],
        ["--cwd", "{home}/logs", "--", "true"],
    ],
)
def test_no_task_may_touch_the_data_dir_even_inside_a_root(
    cli: Cli, offload_home: Path, args: list[str]
) -> None:
    offload_home.mkdir(mode=0o700, exist_ok=True)
    (offload_home / "logs").mkdir(exist_ok=True)
    (offload_home / "queue.db").touch()
    roots = str(offload_home.parent)  # the data dir is inside a configured root
    argv = [a.format(home=offload_home) for a in args]
    result = cli("submit", *argv, OFFLOAD_WORKSPACE_ROOTS=roots)
    assert result.returncode == 1
    assert "inside offload's data directory" in result.stderr
