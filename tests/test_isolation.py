"""A workspace is untrusted: nothing in it may shadow a module offload's own processes
import (the supervisor holds, and LLM workers use, the provider secrets)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import wait_until
from fakes.environment import LlmEnv
from offload.policies.task_policy import TaskPolicy
from offload.queue.models import State, TaskSpec
from offload.queue.sqlite import SqliteStore
from offload.supervisor.sandbox import probe_sandbox
from offload.supervisor.wake import poke

pytest_plugins = ["fakes.fixtures"]

HIJACK = "import os, sys\nprint('HIJACKED', os.environ.get('OPENAI_API_KEY'))\nsys.exit(7)\n"


def plant(workspace: Path) -> None:
    for name in ("json.py", "secrets.py", "logging.py", "selectors.py"):
        (workspace / name).write_text(HIJACK)


def test_on_demand_supervisor_ignores_modules_in_the_workspace(
    workspace: Path, offload_home: Path, monkeypatch: Any
) -> None:
    plant(workspace)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-123")
    offload = str(Path(sys.executable).parent / "offload")
    result = subprocess.run(
        [offload, "submit", "--wait", "--", "echo", "ok"],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"  # with --wait the id goes to stderr
    out = offload_home / "supervisor.out"
    assert "HIJACKED" not in (out.read_text() if out.exists() else "")


def test_llm_worker_ignores_modules_in_the_workspace(
    llm_env: LlmEnv,
    workspace: Path,
    store: SqliteStore,
    start_supervisor: Callable[..., Any],
    cli: Callable[..., Any],
) -> None:
    llm_env.without_aws()
    llm_env.openai.respond_with(lambda request: llm_env.openai.text("# Notes\n"))
    plant(workspace)
    start_supervisor()
    task_id = cli("submit", "--type", "docs", "--spec", "notes", "--output", "NOTES.md").stdout
    task = wait_until(lambda: (t := store.get(task_id.strip())).is_final and t, timeout=60)
    log = Path(task.log_path or "").read_text()
    assert "HIJACKED" not in log and "sk-" not in log
    assert task.state is State.COMPLETED, task.error
    assert (workspace / "NOTES.md").read_text().startswith("# Notes")


# -- the escape suite: no process of a task outlives it ----------------------------------
#
# Each escapee leaves everything it can: its cgroup (to the cgroup2 root, or to a new
# sibling cgroup), its session (setsid), its marker (env -u OFFLOAD_TASK_ID) and its parent
# (double fork). Only the PID namespace holds it.

_DOUBLE_FORK = (
    "import os, sys\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        os.execvp('sleep', ['sleep', sys.argv[1]])\n"
    "    os._exit(0)\n"
    "os.wait()\n"
)


def _cgroup2_root() -> Path | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            root = Path(left.split()[4])
            if os.access(root / "cgroup.procs", os.W_OK):
                return root
    return None


def _escapees(token: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.info["cmdline"] == ["sleep", token] and proc.status() != "zombie":
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def escape(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """(command that starts 3 escapees and then runs on, their token, sibling cgroup)."""
    root = _cgroup2_root()
    if root is None or os.geteuid() != 0:
        pytest.skip("needs root and a writable cgroup2 root to try leaving the cgroup")
    token = str(3000 + random.randrange(1, 10**6) / 10**6)
    sibling = root / f"offload-escape-{os.getpid()}-{token.replace('.', '')}"
    script = tmp_path / "double_fork.py"
    script.write_text(_DOUBLE_FORK)
    leave = "exec setsid env -u OFFLOAD_TASK_ID sleep " + token
    command = (
        f"sh -c 'echo $$ > {root}/cgroup.procs; {leave}' & "
        f"mkdir -p {sibling} && sh -c 'echo $$ > {sibling}/cgroup.procs; {leave}' & "
        f"env -u OFFLOAD_TASK_ID {sys.executable} {script} {token}; "
        f"while [ ! -e {tmp_path / 'go'} ]; do sleep 0.02; done"
    )
    yield command, token, sibling
    for proc in _escapees(token):  # a failing test must not leave them behind either
        proc.kill()
    wait_until(lambda: not _escapees(token), what="escapees gone")
    if sibling.exists():
        sibling.rmdir()


ENDS = ["exit", "cancel", "timeout", "kill -9 of the supervisor"]


def test_a_reaped_namespace_init_means_its_tree_is_gone_without_a_scan() -> None:
    """An init's exit waits until the kernel ended its namespace, and nothing leaves a PID
    namespace: once the init is reaped the tree is gone, without listing our adopted
    children (the costly look every task's end paid). Without a namespace, it is looked
    for as before."""
    from offload.supervisor.tree import TaskTree

    def no_scan() -> list[psutil.Process]:
        raise AssertionError("adopted children listed for a reaped namespace")

    sleeper = subprocess.Popen(["sleep", "30"], env={**os.environ, "OFFLOAD_TASK_ID": "t1"})
    try:
        namespaced = TaskTree("t1", pgid=None, cgroup=None, init_pid=12345)
        namespaced.init_pid = None  # as the tracker leaves it once the init is reaped
        assert not namespaced.alive(no_scan)
        plain = TaskTree("t1", pgid=None, cgroup=None)  # no namespace: the marker net
        assert plain.alive(lambda: [psutil.Process(sleeper.pid)])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_reaped_namespace_init_frees_its_group_id_for_good(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The init's pid was also the task's process group id; once the init is reaped every
    member is dead and the id may be a stranger's group. A sweep of leftovers (a cgroup
    that kept a process) went on sending SIGKILL to that id."""
    from offload.supervisor import tree as tree_module
    from offload.supervisor.tree import TaskTree

    sent: list[int] = []
    monkeypatch.setattr(tree_module.os, "killpg", lambda pgid, sig: sent.append(pgid))
    tree = TaskTree("t1", pgid=4242, cgroup=None, init_pid=4242)
    tree.init_reaped()
    tree.signal(signal.SIGKILL, [])
    assert tree.pgid is None and sent == []
    plain = TaskTree("t2", pgid=4343, cgroup=None)  # no namespace: its group may live on
    plain.init_reaped()
    plain.signal(signal.SIGKILL, [])
    assert sent == [4343]


def test_a_group_once_found_empty_is_never_signalled_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a PID namespace a tree's group id outlives its leader. Once the group is
    empty the id is free: a process that later gets that pid and starts its own session
    is a stranger, and a sweep of the tree's leftovers (a process stuck in a cgroup)
    SIGKILLed it, once a second for as long as the leftover lived."""
    from offload.supervisor import tree as tree_module
    from offload.supervisor.tree import TaskTree

    gone = subprocess.Popen(["true"], start_new_session=True)
    gone.wait()  # its group, with it, is empty and its id free
    tree = TaskTree("t1", pgid=gone.pid, cgroup=None)
    assert not tree.alive()
    stranger_groups = {gone.pid}  # the id taken again by a stranger's new session
    sent: list[int] = []

    def killpg(pgid: int, sig: int) -> None:
        if pgid not in stranger_groups:
            raise ProcessLookupError
        sent.append(pgid)

    monkeypatch.setattr(tree_module.os, "killpg", killpg)
    assert not tree.alive()
    tree.signal(signal.SIGKILL, [])
    assert sent == [] and tree.pgid is None


def test_leftovers_that_survive_sigkill_are_swept_each_second_not_on_the_fast_poll(
    tmp_path: Path,
) -> None:
    """A process stuck in the kernel (a dead NFS server) outlives every SIGKILL: the loop
    swept it on its 10 ms poll for as long as it lived. After the give-up time it is swept
    once a second, and the loop may sleep."""
    from offload.supervisor.tracker import UNKILLABLE_GIVE_UP_SECONDS, Tracker
    from offload.supervisor.tree import TaskTree

    tracker = Tracker(SqliteStore(tmp_path / "q.db"), 1.0, None)
    tracker._reap = lambda: None  # type: ignore[method-assign]  # no children of ours here
    tree = TaskTree("t1", pgid=None, cgroup=None)
    kills: list[float] = []
    now = [0.0]
    tree.alive = lambda candidates=list: True  # type: ignore[method-assign]
    tree.signal = lambda sig, candidates: kills.append(now[0])  # type: ignore[method-assign]
    tracker.lingering.append(tree)
    busy = []
    while now[0] < UNKILLABLE_GIVE_UP_SECONDS + 20:
        tracker.step(now[0])
        busy.append((now[0], tracker.busy))
        now[0] = round(now[0] + 0.01, 2)
    early = [t for t in kills if t < UNKILLABLE_GIVE_UP_SECONDS]
    late = [t for t in kills if t >= UNKILLABLE_GIVE_UP_SECONDS]
    assert len(early) >= 900 and 15 <= len(late) <= 25, (len(early), len(late))
    assert all(b for t, b in busy if t < UNKILLABLE_GIVE_UP_SECONDS)
    assert not any(b for t, b in busy if t >= UNKILLABLE_GIVE_UP_SECONDS)
    assert tracker.lingering == [tree]  # never forgotten: still swept


def test_each_attempt_of_a_task_has_a_cgroup_of_its_own(
    store: SqliteStore,
    offload_home: Path,
    workspace: Path,
    start_supervisor: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """A retry keeps the task's id: sharing the cgroup path, the last attempt's leftovers
    (and the sweep that kills them) reached the new attempt. A directory already there is
    refused, never shared."""
    from offload.supervisor.cgroups import CgroupRoot

    root = CgroupRoot(tmp_path / "root", tmp_path)
    (tmp_path / "root").mkdir()
    assert root.create("x.1") is not None and root.create("x.1") is None
    start_supervisor()
    spec = TaskSpec(command="exit 3", cwd=str(workspace), workspace=str(workspace))
    task = store.submit([spec])[0]
    poke(offload_home)
    first = wait_until(lambda: (t := store.get(task.id)).is_final and t, timeout=20)
    if first.cgroup is None:
        pytest.skip(f"no task cgroups here: {first.containment}")
    store.retry(task.id)
    poke(offload_home)
    second = wait_until(lambda: (t := store.get(task.id)).is_final and t, timeout=20)
    assert second.attempt == first.attempt + 1 and second.exit_code == 3, second
    assert second.cgroup != first.cgroup and second.cgroup.endswith(f"{task.id}.{second.attempt}")


@pytest.mark.slow
@pytest.mark.parametrize("end", ENDS)
def test_no_escapee_survives_its_task(
    end: str,
    escape: tuple[str, str, Path],
    store: SqliteStore,
    offload_home: Path,
    workspace: Path,
    start_supervisor: Callable[..., Any],
    tmp_path: Path,
) -> None:
    command, token, _ = escape
    sup = start_supervisor(grace_seconds="0.5")
    timeout = 3.0 if end == "timeout" else None
    spec = TaskSpec(
        command=command, cwd=str(workspace), workspace=str(workspace), timeout_seconds=timeout
    )
    task = store.submit([spec])[0]
    poke(offload_home)
    wait_until(lambda: len(_escapees(token)) == 3, timeout=20, what="three escapees")
    started = store.get(task.id)
    assert (started.containment or "").startswith("pid-namespace"), started.containment
    if end == "exit":
        (tmp_path / "go").touch()
    elif end == "cancel":
        store.request_cancel(task.id)
        poke(offload_home)
    elif end == "kill -9 of the supervisor":
        sup.stop(signal.SIGKILL)
        assert len(_escapees(token)) == 3  # nothing killed them yet
        start_supervisor(grace_seconds="0.5")
    done = wait_until(lambda: (t := store.get(task.id)).is_final and t, timeout=30)
    expected = {
        "exit": State.COMPLETED,
        "cancel": State.CANCELLED,
        "timeout": State.TIMED_OUT,
        "kill -9 of the supervisor": State.INTERRUPTED,
    }[end]
    assert done.state is expected, done.error
    wait_until(lambda: not _escapees(token), timeout=5, what="no escapee left")


@pytest.mark.slow
@pytest.mark.parametrize("sandbox", [False, True])
@pytest.mark.parametrize("end", ["exit", "cancel"])
def test_nothing_of_a_namespaced_task_is_left_when_its_end_is_written(
    sandbox: bool,
    end: str,
    store: SqliteStore,
    offload_home: Path,
    workspace: Path,
    start_supervisor: Callable[..., Any],
) -> None:
    """A task's end is written once its tree is gone; in a PID namespace, once its init is
    reaped. Escapees that double-fork, leave the session, the marker and the cgroup, or
    try to enter another PID namespace are gone at that moment, sandboxed or not."""
    root = _cgroup2_root()
    if root is None or os.geteuid() != 0:
        pytest.skip("needs root and a writable cgroup2 root to try leaving the cgroup")
    if sandbox and not probe_sandbox().available:
        pytest.skip(f"no sandbox here: {probe_sandbox().reason}")
    token = str(3000 + random.randrange(1, 10**6) / 10**6)
    outside = subprocess.Popen(["sleep", "60"])  # a PID namespace to try to enter
    leave = "exec setsid env -u OFFLOAD_TASK_ID sleep " + token
    # Shell only: the sandbox shows neither this test's interpreter nor its /tmp.
    command = (
        f"sh -c 'echo $$ > {root}/cgroup.procs; {leave}' & "
        f"(sh -c '{leave}' &); "  # double fork: its parent exits at once
        f"(nsenter -t {outside.pid} -p -- sleep {token} >/dev/null 2>&1 &); "
        f"while [ ! -e go ]; do sleep 0.02; done"
    )
    try:
        start_supervisor(grace_seconds="0.5")
        policy = TaskPolicy(sandbox=sandbox, roots=(str(workspace),)).to_json()
        spec = TaskSpec(
            command=command, cwd=str(workspace), workspace=str(workspace), policy=policy
        )
        task = store.submit([spec])[0]
        poke(offload_home)
        wait_until(lambda: len(_escapees(token)) >= 2, timeout=20, what="escapees")
        started = store.get(task.id)
        assert (started.containment or "").startswith("pid-namespace"), started.containment
        assert ("sandbox" in started.containment) is sandbox, started.containment
        if end == "exit":
            (workspace / "go").touch()
        else:
            store.request_cancel(task.id)
            poke(offload_home)
        done = wait_until(lambda: (t := store.get(task.id)).is_final and t, timeout=30)
        assert done.state is (State.COMPLETED if end == "exit" else State.CANCELLED)
        assert _escapees(token) == []  # gone when the end was written, not later
    finally:
        outside.kill()
        outside.wait()
        for proc in _escapees(token):
            proc.kill()


def test_a_process_put_into_a_task_s_cgroup_from_outside_ends_with_the_task(
    store: SqliteStore,
    offload_home: Path,
    workspace: Path,
    start_supervisor: Callable[..., Any],
) -> None:
    """It is not the task's tree (a reaped namespace init means that is gone), but it is in
    the task's cgroup: it is killed and the cgroup removed, as they were before the end
    of a namespaced tree stopped reading the cgroup. Unkilled, it kept the cgroup."""
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        start_supervisor()
        flag = workspace / "go"
        spec = TaskSpec(
            command=f"while [ ! -e {flag} ]; do sleep 0.02; done",
            cwd=str(workspace),
            workspace=str(workspace),
        )
        task = store.submit([spec])[0]
        poke(offload_home)
        running = wait_until(lambda: (t := store.get(task.id)).pid and t, timeout=20)
        if running.cgroup is None or not (running.containment or "").startswith("pid-namespace"):
            pytest.skip(f"needs a task cgroup and a PID namespace: {running.containment}")
        Path(running.cgroup, "cgroup.procs").write_text(str(stranger.pid))
        flag.touch()
        done = wait_until(lambda: (t := store.get(task.id)).is_final and t, timeout=20)
        assert done.state is State.COMPLETED
        wait_until(lambda: stranger.poll() is not None, timeout=10, what="the stranger killed")
        wait_until(lambda: not Path(running.cgroup).exists(), timeout=10, what="cgroup gone")
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.slow
def test_without_pid_namespaces_the_fallback_is_said_once(
    store: SqliteStore,
    offload_home: Path,
    workspace: Path,
    start_supervisor: Callable[..., Any],
    cli: Callable[..., Any],
) -> None:
    start_supervisor(pid_namespaces="false")
    task = store.submit([TaskSpec(command="true", cwd=str(workspace), workspace=str(workspace))])
    poke(offload_home)
    done = wait_until(lambda: (t := store.get(task[0].id)).is_final and t)
    assert done.containment and done.containment.startswith("process-group")
    assert "no PID namespace: turned off" in done.containment
    log = (offload_home.parent / "supervisor-0.err").read_text()
    assert log.count("no_pid_namespaces") == 1
    status = cli("supervisor", "status")
    assert "pid namespace: no (turned off (pid_namespaces = false))" in status.stdout
    assert f"containment  {done.containment}" in cli("show", done.id, COLUMNS="400").stdout


def _as_user_namespace_root(code: str) -> subprocess.CompletedProcess[str]:
    """Runs Python `code` as root of a new user namespace (skips where there is none)."""
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", sys.executable, "-P", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0 and "unshare failed" in done.stderr:
        pytest.skip(f"no user namespaces here: {done.stderr.strip()}")
    return done


def test_a_namespace_probe_that_cannot_come_back_leaves_the_supervisor_able_to_fork() -> None:
    """Root of a user namespace may unshare a PID namespace but not setns back; tried in the
    supervisor itself, that left its next child the init of a dying namespace and every
    fork after it failed (ENOMEM)."""
    code = (
        "import subprocess; from offload.supervisor.pidns import probe_pid_namespaces; "
        "found = probe_pid_namespaces(); "
        "codes = [subprocess.run(['true']).returncode for _ in range(3)]; "
        "print(found.available, max(codes), found.reason)"
    )
    done = _as_user_namespace_root(code)
    assert done.returncode == 0, done.stderr
    available, forked, reason = done.stdout.split(" ", 2)
    assert forked == "0"
    if available == "False":
        assert "setns" in reason or "not permitted" in reason, reason
