"""Escapes tried from inside the bubblewrap sandbox, with real bwrap and real processes.

Each test is an attack that worked before its fix: renaming or re-pointing its way to hidden
credentials, talking to a daemon's socket in /run, reading the host's SysV shared memory.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_until
from offload.config import load_settings
from offload.desk import open_desk
from offload.policies.limits import Limits
from offload.policies.task_policy import TaskPolicy
from offload.queue.models import TaskSpec
from offload.queue.sqlite import SqliteStore
from offload.supervisor import sandbox as sandbox_module
from offload.supervisor.pidns import limits_prelude
from offload.supervisor.sandbox import Sandbox, command_sandbox, probe_sandbox
from offload.supervisor.wake import poke
from offload.workers.agent.commands import run_shell
from test_sandbox import _run  # a task with a sandboxing policy, run to its end

_PYTHON = os.path.realpath(sys.executable)  # a venv under /tmp is hidden by the private /tmp
IPC_CREAT, IPC_RMID = 0o1000, 0

pytestmark = pytest.mark.skipif(
    not probe_sandbox().available, reason=f"no sandbox here: {probe_sandbox().reason}"
)


def _box_words(cwd: Path, network: bool = False, hide: Sequence[Path] = ()) -> list[str]:
    """The bwrap words of the sandbox a task with workspace `cwd` gets."""
    box = Sandbox(probe_sandbox().path)
    return box.argv(workspace=str(cwd), cwd=str(cwd), network=network, hide=map(str, hide))


def _boxed(
    command: list[str], cwd: Path, network: bool = False, hide: Sequence[Path] = ()
) -> subprocess.CompletedProcess[str]:
    """Runs `command` in the sandbox a task gets, without a supervisor."""
    words = _box_words(cwd, network, hide)
    return subprocess.run([*words, *command], capture_output=True, text=True, timeout=30)


def test_renaming_or_relinking_in_the_workspace_does_not_unhide_credentials(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    store: SqliteStore,
    offload_home: Path,
    start_supervisor: Callable[..., Any],
) -> None:
    # The workspace is the home (an agent started from ~): hidden paths lie inside it.
    user = tmp_path / "user"
    (user / ".config" / "gh").mkdir(parents=True)
    (user / ".config" / "gh" / "hosts.yml").write_text("GH-PLANTED\n")
    (user / "dotfiles" / "aws").mkdir(parents=True)
    (user / "dotfiles" / "aws" / "credentials").write_text("AWS-PLANTED\n")
    (user / ".aws").symlink_to("dotfiles/aws", target_is_directory=True)  # as stow makes it
    monkeypatch.setenv("HOME", str(user))
    start_supervisor()
    _, log = _run(
        store,
        offload_home,
        user,
        "cat .config/gh/hosts.yml .aws/credentials; mv .config .c2 && echo moved; "
        "ln -sfn /nonexistent .aws && echo relinked",
    )
    assert "PLANTED" not in log
    assert "moved" not in log and (user / ".config" / "gh").is_dir()
    _, log = _run(
        store,
        offload_home,
        user,
        "cat .c2/gh/hosts.yml .config/gh/hosts.yml dotfiles/aws/credentials",
    )
    assert "PLANTED" not in log, log


def test_a_hidden_path_reached_through_a_removed_directory_stays_hidden(tmp_path: Path) -> None:
    """`~/.config` a task linked as `d/../.cfg`, then `d` removed: the kernel finds no
    `~/.config/gh`, but the secret written through the link sits in `.cfg/gh` and is hidden."""
    user = tmp_path / "user"
    (user / "d").mkdir(parents=True)
    (user / ".cfg" / "gh").mkdir(parents=True)
    (user / ".config").symlink_to(f"{user}/d/../.cfg")
    (user / ".config" / "gh" / "hosts.yml").write_text("GH-PLANTED\n")
    (user / "d").rmdir()
    assert not os.path.lexists(user / ".config" / "gh")  # as written, nothing is there
    hidden = [user / ".config" / "gh"]
    done = _boxed(["cat", str(user / ".cfg" / "gh" / "hosts.yml")], user, hide=hidden)
    assert "GH-PLANTED" not in done.stdout, done.stdout


def test_a_hidden_path_linked_to_dev_does_not_empty_dev_or_drop_the_limits(
    tmp_path: Path,
) -> None:
    """A task that may write the parent of a hidden path links `~/.ssh` to /dev: /dev is
    not hidden for the next task, and its limits are set all the same."""
    user = tmp_path / "user"
    user.mkdir()
    (user / ".ssh").symlink_to("/dev")
    words = _box_words(user, hide=[user / ".ssh"])
    assert "/dev" not in [words[i + 1] for i, w in enumerate(words) if w == "--tmpfs"]
    line = limits_prelude(Limits(open_files=300)) + "ulimit -Hn; echo x >/dev/null && echo ok"
    done = _boxed(["/bin/sh", "-c", line], user, hide=[user / ".ssh"])
    assert done.stdout.split() == ["300", "ok"], done.stderr


def test_the_limits_hold_even_where_dev_null_is_missing() -> None:
    """They were set with `2>/dev/null`: with /dev emptied, the shell skipped each one and
    ran the command without them."""

    bwrap = probe_sandbox().path or "bwrap"
    empty_dev = [bwrap, "--ro-bind", "/", "/", "--tmpfs", "/dev", "--remount-ro", "/dev"]
    prelude = limits_prelude(Limits(open_files=300, cpu_seconds=37))
    done = subprocess.run(
        [*empty_dev, "/bin/sh", "-c", prelude + "ulimit -Hn; ulimit -Ht"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout.split() == ["300", "37"], done.stderr


def test_a_link_planted_where_a_writable_path_would_be_does_not_widen_the_sandbox(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    store: SqliteStore,
    offload_home: Path,
    start_supervisor: Callable[..., Any],
) -> None:
    user = tmp_path / "user"  # the workspace is the home, which has no ~/.cache yet
    user.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.setenv("HOME", str(user))
    start_supervisor()
    cache = ("~/.cache",)  # the default sandbox_writable
    _, log = _run(store, offload_home, user, "ln -s / .cache && echo linked", writable=cache)
    assert "linked" in log
    _, log = _run(store, offload_home, user, f"touch {outside}/pwned", writable=cache)
    assert not (outside / "pwned").exists(), log


def test_a_workspace_swapped_for_a_link_before_it_runs_is_not_bound(
    tmp_path: Path, store: SqliteStore, offload_home: Path, start_supervisor: Callable[..., Any]
) -> None:
    outer = tmp_path / "outer"  # one agent's workspace holds another's
    inner = outer / "inner"
    inner.mkdir(parents=True)
    target = tmp_path / "target"
    target.mkdir()
    roots = (str(inner),)
    spec = TaskSpec(
        command="touch pwned",
        cwd=str(inner),
        workspace=str(inner),
        policy=TaskPolicy(sandbox=True, roots=roots).to_json(),
    )
    [task] = store.submit([spec])
    inner.rename(outer / "inner.real")  # what a task of the outer workspace may do
    inner.symlink_to(target, target_is_directory=True)
    start_supervisor()
    poke(offload_home)
    done = wait_until(lambda: (t := store.get(task.id)).is_final and t, timeout=30)
    assert not (target / "pwned").exists()
    assert "a link replaced a directory" in (done.error or ""), done.error


@pytest.fixture
def run_socket() -> Iterator[Path]:
    """A Unix socket listening in /run, as a daemon's (systemd, D-Bus, a database) does."""
    if not os.access("/run", os.W_OK):
        pytest.skip("needs a writable /run to plant a daemon's socket")
    path = Path("/run") / f"offload-test-{secrets.token_hex(6)}.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(4)
    os.chmod(path, 0o777)
    try:
        yield path
    finally:
        server.close()
        path.unlink(missing_ok=True)


@pytest.mark.parametrize("network", [True, False])
def test_a_daemon_socket_in_run_is_out_of_reach(
    run_socket: Path, workspace: Path, network: bool
) -> None:
    probe = f"import socket; socket.socket(socket.AF_UNIX).connect({str(run_socket)!r})"
    done = _boxed([_PYTHON, "-c", probe + "; print('connected')"], workspace, network)
    assert "connected" not in done.stdout
    assert "No such file" in done.stderr or "FileNotFoundError" in done.stderr


def test_the_resolver_configuration_in_run_stays_readable(
    tmp_path: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not os.access("/run", os.W_OK):
        pytest.skip("needs a writable /run to plant a resolver configuration")
    target = Path("/run") / f"offload-test-{secrets.token_hex(6)}.conf"
    link = tmp_path / "resolv.conf"
    link.symlink_to(target)
    monkeypatch.setattr(sandbox_module, "_RESOLVER", str(link))
    try:
        target.write_text("nameserver 192.0.2.53\n")
        done = _boxed(["/bin/sh", "-c", f"cat {target}; ls -A /run"], workspace, network=True)
    finally:
        target.unlink(missing_ok=True)
    assert done.stdout.splitlines() == ["nameserver 192.0.2.53", target.name], done.stderr


@pytest.fixture
def host_shared_memory() -> Iterator[int]:
    """A SysV shared memory segment of the host (mode 0600, the test's own user)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    key = secrets.randbelow(2**30) + 1
    shmid = libc.shmget(key, 4096, IPC_CREAT | 0o600)
    assert shmid >= 0, os.strerror(ctypes.get_errno())
    address = libc.shmat(shmid, None, 0)
    ctypes.memmove(address, b"SHM-PLANTED\0", 12)
    try:
        yield key
    finally:
        libc.shmdt(ctypes.c_void_p(address))
        libc.shmctl(shmid, IPC_RMID, None)


def test_the_hosts_sysv_shared_memory_is_out_of_reach(
    host_shared_memory: int, workspace: Path
) -> None:
    probe = (
        "import ctypes; libc = ctypes.CDLL(None); libc.shmat.restype = ctypes.c_void_p; "
        f"shmid = libc.shmget({host_shared_memory}, 0, 0); print('shmid', shmid); "
        "shmid >= 0 and print(ctypes.string_at(libc.shmat(shmid, None, 0o10000), 11))"
    )
    done = _boxed([_PYTHON, "-c", probe], workspace)
    assert "PLANTED" not in done.stdout
    assert "shmid -1" in done.stdout, done.stderr


def test_an_agent_task_a_person_queues_runs_its_commands_sandboxed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workspace: Path, store: SqliteStore
) -> None:
    user = tmp_path / "user"
    (user / ".ssh").mkdir(parents=True)
    (user / ".ssh" / "id_ed25519").write_text("KEY-PLANTED\n")
    monkeypatch.setenv("HOME", str(user))
    settings = load_settings()  # sandbox = auto
    desk = open_desk(settings, workspace=workspace, confined=False, store=store, wake=lambda: 0)
    [task, opted_out] = desk.submit(
        [{"type": "agent", "spec": "tidy up"}, {"type": "agent", "spec": "x", "sandbox": False}]
    )
    policy = TaskPolicy.from_json(store.get(task.id).policy)
    box = command_sandbox(policy, settings, workspace, workspace)
    assert box, "a model's commands must run sandboxed under sandbox = auto"
    run = run_shell(
        f"cat {user}/.ssh/id_ed25519; echo ran",
        cwd=workspace,
        env={"PATH": "/usr/bin:/bin"},
        timeout_seconds=20,
        cap_bytes=4096,
        sandbox=box,
    )
    shown = run.render(20, 4096)
    assert "ran" in shown and "PLANTED" not in shown
    assert not TaskPolicy.from_json(store.get(opted_out.id).policy).sandbox  # a person's call
