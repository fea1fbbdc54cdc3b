"""The bubblewrap sandbox, with real bwrap: what a sandboxed task can and cannot touch."""

from __future__ import annotations

import os
import socket
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import run_to_end, wait_until
from offload.config import load_settings
from offload.policies.task_policy import TaskPolicy
from offload.queue.models import State, Task, TaskSpec
from offload.queue.sqlite import SqliteStore
from offload.supervisor.sandbox import command_sandbox, probe_sandbox
from offload.supervisor.wake import poke
from offload.workers.agent.commands import run_shell

# The interpreter a sandboxed command runs: the venv's own base interpreter, since a venv
# under /tmp (a CI clone there) is hidden by the sandbox's private /tmp.
_PYTHON = os.path.realpath(sys.executable)

pytestmark = pytest.mark.skipif(
    not probe_sandbox().available, reason=f"no sandbox here: {probe_sandbox().reason}"
)


@pytest.fixture
def fake_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME in tmp_path, with a planted SSH key and .netrc (the supervisor inherits it)."""
    home = tmp_path / "user"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE-KEY-PLANTED\n")
    (home / ".netrc").write_text("machine x login y password NETRC-PLANTED\n")
    (home / "notes.txt").write_text("visible\n")
    monkeypatch.setenv("HOME", str(home))
    return home


def _run(
    store: SqliteStore, home: Path, cwd: Path, command: str, **policy: Any
) -> tuple[Task, str]:
    spec = TaskSpec(
        command=command,
        cwd=str(cwd),
        workspace=str(cwd),
        policy=TaskPolicy(sandbox=True, **policy).to_json(),
    )
    return run_to_end(store, home, spec)


def _mounts() -> int:
    return len(Path("/proc/self/mountinfo").read_text().splitlines())


@pytest.mark.slow
def test_a_sandboxed_task_sees_no_secret_and_writes_only_its_workspace_and_tmp(
    fake_home: Path,
    store: SqliteStore,
    offload_home: Path,
    workspace: Path,
    start_supervisor: Callable[..., Any],
    cli: Callable[..., Any],
) -> None:
    mounts = _mounts()
    start_supervisor()
    outside = fake_home / "outside.txt"
    command = "; ".join(
        [
            "cat ~/.ssh/id_ed25519",
            "cat ~/.netrc",
            "cat ~/notes.txt",
            f"ls -A {offload_home}",
            f"cat {offload_home}/queue.db | wc -c",
            "touch /etc/offload-sandbox-test && echo wrote-etc",
            f"touch {outside} && echo wrote-outside",
            "touch ws-file && echo wrote-workspace",
            "touch /tmp/t && echo wrote-tmp",
            "mount -t tmpfs none ~/.ssh && echo remounted",
            "ls /proc | grep -c '^[0-9]'",
        ]
    )
    # the user's home is writable here so it is visible: the hidden paths must still be gone
    done, log = _run(store, offload_home, workspace, command, writable=(str(fake_home),))
    assert "PLANTED" not in log
    assert "visible" in log  # the rest of the home is there
    assert "wrote-etc" not in log and not Path("/etc/offload-sandbox-test").exists()
    assert "wrote-workspace" in log and (workspace / "ws-file").exists()
    assert "wrote-tmp" in log
    assert "remounted" not in log  # no capability to undo the sandbox
    assert "wrote-outside" in log and outside.exists()  # a writable path is writable
    assert log.strip().endswith(("\n3", "\n4", "\n5"))  # /proc: its own few processes
    assert done.containment == "pid-namespace+cgroup+sandbox(network on)" or (
        done.containment or ""
    ).startswith("pid-namespace+sandbox")
    shown = cli("show", done.id, COLUMNS="400").stdout
    assert f"containment  {done.containment}" in shown
    assert _mounts() == mounts  # bwrap's mounts died with its namespace


@pytest.mark.slow
def test_a_sandboxed_task_cannot_read_the_database_or_write_outside(
    fake_home: Path,
    store: SqliteStore,
    offload_home: Path,
    tmp_path: Path,
    start_supervisor: Callable[..., Any],
) -> None:
    start_supervisor()
    sibling = tmp_path / "sibling"
    sibling.mkdir()
    # the workspace holds the data dir: the one place the DB could be seen from
    done, log = _run(
        store,
        offload_home,
        tmp_path,
        f"ls -A {offload_home} | wc -l; cat {offload_home}/queue.db > /dev/null && echo read-db; "
        f"rm -rf {offload_home}/logs && echo removed; echo x > {sibling}/x && echo in-workspace",
    )
    assert done.state is State.COMPLETED, log
    assert log.splitlines()[0] == "0"
    assert "read-db" not in log
    assert (offload_home / "queue.db").exists() and (offload_home / "logs").is_dir()
    assert "in-workspace" in log
    # outside the workspace nothing is written, even where the task thinks it did
    other = tmp_path.parent / f"{tmp_path.name}-other"
    done, log = _run(store, offload_home, sibling, f"mkdir -p {other} && touch {other}/f; true")
    assert not other.exists()


@pytest.fixture
def loopback_server() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


@pytest.mark.slow
@pytest.mark.parametrize("network", [True, False])
def test_network_off_means_loopback_only(
    network: bool,
    loopback_server: int,
    store: SqliteStore,
    offload_home: Path,
    workspace: Path,
    start_supervisor: Callable[..., Any],
) -> None:
    start_supervisor()
    probe = (
        f"{_PYTHON} -c \"import socket; socket.create_connection(('127.0.0.1', "
        f"{loopback_server}), timeout=5); print('connected')\""
    )
    done, log = _run(store, offload_home, workspace, probe, network=network)
    assert ("connected" in log) is network, log
    assert (done.containment or "").endswith(f"sandbox(network {'on' if network else 'off'})")


def _tiny_wheel(folder: Path) -> Path:
    """A pure-Python wheel built by hand: installing it needs no index and no build."""
    wheel = folder / "offloadprobe-1.0-py3-none-any.whl"
    meta = "offloadprobe-1.0.dist-info"
    files = {
        "offloadprobe.py": "ANSWER = 42\n",
        f"{meta}/METADATA": "Metadata-Version: 2.1\nName: offloadprobe\nVersion: 1.0\n",
        f"{meta}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
        zf.writestr(f"{meta}/RECORD", "".join(f"{n},,\n" for n in files) + f"{meta}/RECORD,,\n")
    return wheel


@pytest.mark.slow
def test_pip_install_into_a_workspace_venv_works_inside(
    store: SqliteStore, offload_home: Path, workspace: Path, start_supervisor: Callable[..., Any]
) -> None:
    start_supervisor()
    wheel = _tiny_wheel(workspace)
    command = (
        f"{_PYTHON} -m venv --without-pip venv && "
        f"{_PYTHON} -m pip --python venv/bin/python install --no-index "
        f"--no-cache-dir -q {wheel.name} && "
        "venv/bin/python -c 'import offloadprobe; print(offloadprobe.ANSWER)'"
    )
    done, log = _run(store, offload_home, workspace, command, network=True)
    assert done.state is State.COMPLETED, log
    assert log.strip().endswith("42")
    assert list((workspace / "venv/lib").glob("python*/site-packages/offloadprobe.py"))


def test_an_agent_command_runs_sandboxed_over_the_staging_copy(
    tmp_path: Path, offload_home: Path, fake_home: Path
) -> None:
    settings = load_settings()
    staging = offload_home / "logs" / "t.staging"  # where agent staging copies live
    staging.mkdir(parents=True)
    (offload_home / "queue.db").write_text("DATABASE")
    box = command_sandbox(TaskPolicy(sandbox=True, network=False), settings, staging, staging)
    env = {"PATH": os.environ["PATH"], "HOME": str(fake_home)}
    run = run_shell(
        f"echo staged > out.txt && cat out.txt; cat {offload_home}/queue.db; "
        f"touch {tmp_path}/escaped; ls -A {offload_home}/logs",
        cwd=staging,
        env=env,
        timeout_seconds=30,
        cap_bytes=10_000,
        sandbox=box,
    )
    text = (run.head + run.tail).decode()
    assert run.exit_code == 0, text
    assert "staged" in text and (staging / "out.txt").read_text() == "staged\n"
    assert "DATABASE" not in text
    assert not (tmp_path / "escaped").exists()
    assert text.split()[-1] == "t.staging"  # only the staging copy shows in the data dir
    assert command_sandbox(TaskPolicy(sandbox=False), settings, staging, staging) == []


def test_sandbox_setting_is_read_from_the_environment(offload_home: Path) -> None:
    assert load_settings({"OFFLOAD_HOME": str(offload_home)}).sandbox == "auto"
    assert load_settings({"OFFLOAD_HOME": str(offload_home), "OFFLOAD_SANDBOX": "on"}).sandbox
    from offload.errors import ConfigError

    with pytest.raises(ConfigError, match="must be off, on or auto"):
        load_settings({"OFFLOAD_HOME": str(offload_home), "OFFLOAD_SANDBOX": "maybe"})


def test_probe_names_a_missing_bwrap(tmp_path: Path) -> None:
    missing = probe_sandbox(str(tmp_path / "no-bwrap"))
    assert not missing.available and "bwrap" in missing.reason


@pytest.mark.slow
def test_cancel_of_a_sandboxed_tree_leaves_no_survivor(
    store: SqliteStore, offload_home: Path, workspace: Path, start_supervisor: Callable[..., Any]
) -> None:
    import psutil

    token = f"{4000 + os.getpid() % 997}.5"

    def sleepers() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if proc.info["cmdline"] == ["sleep", token] and proc.status() != "zombie":
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    start_supervisor(grace_seconds="0.5")
    command = (
        f"setsid env -u OFFLOAD_TASK_ID sleep {token} & "
        f"(trap '' TERM; exec sleep {token}) & sleep 300"
    )
    spec = TaskSpec(
        command=command,
        cwd=str(workspace),
        workspace=str(workspace),
        policy=TaskPolicy(sandbox=True).to_json(),
    )
    task = store.submit([spec])[0]
    poke(offload_home)
    try:
        wait_until(lambda: len(sleepers()) == 2, timeout=20, what="two sleepers")
        store.request_cancel(task.id)
        poke(offload_home)
        done = wait_until(lambda: (t := store.get(task.id)).is_final and t, timeout=20)
        assert done.state is State.CANCELLED
        assert sleepers() == []
    finally:
        for proc in sleepers():
            proc.kill()
