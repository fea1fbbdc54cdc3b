"""Command lines that passed an allow list but ran something else, and a cwd swapped for a
link after submit. Each line is first run by the real /bin/sh, to show that it does what
the attack says; then the policy must refuse it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_until
from offload.config import load_settings
from offload.desk import open_desk
from offload.errors import PolicyRefused
from offload.policies.commands import check_command, compile_policy
from offload.policies.task_policy import TaskPolicy
from offload.queue.models import State, TaskSpec
from offload.queue.sqlite import SqliteStore
from offload.supervisor.wake import poke

# (allow list, command line): each runs `touch pwned`, or writes `pwned` outside, in effect.
BYPASSES = [
    # GNU getopt takes any unambiguous prefix of a long option: `--un` is `--unset`
    (["^env\\b", "^echo\\b"], "env --un echo touch pwned"),
    (["^env\\b", "^echo\\b"], "env --unse=x --u echo touch pwned"),
    (["^xargs\\b", "^echo\\b"], "xargs --arg echo touch pwned"),
    (["^sudo\\b", "^echo\\b"], "sudo --pro echo touch pwned"),
    # a shell's option values are not its script: the -c string runs
    (["^sh\\b", "^echo\\b"], "sh -o errexit -c 'touch pwned'"),
    (["^sh\\b", "^echo\\b"], "sh -eo errexit -c 'touch pwned'"),
    (["^bash\\b"], "bash -O extglob -c 'touch pwned'"),
    (["^bash\\b"], "bash --rcfile x -c 'touch pwned'"),
    # -S after the command is the command's own option (python: no site), not env's line
    (["^env\\b", "^ls\\b"], "env python3 -S ls"),
    (["^flock\\b", "^ls\\b"], "flock lock python3 -S ls"),
    # /proc/self/cwd is the checker's directory at submit and the shell's after a cd
    (["^cd\\b", "^echo\\b"], "cd ../outside && echo x > /proc/self/cwd/pwned"),
    (["^cd\\b", "^echo\\b"], "cd ../outside && echo x > {space}/here/pwned"),  # a link to it
    # dash's chdir changes directory as cd does
    (["^chdir\\b", "^echo\\b"], "chdir ../outside && echo x > pwned"),
]


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace with what the attacks lean on, next to a directory outside it."""
    space = tmp_path / "space"
    space.mkdir()
    (tmp_path / "outside").mkdir()
    (space / "echo").write_text("")  # xargs --arg-file reads it: no arguments
    (space / "ls").write_text("open('pwned', 'w').close()\n")  # a python script named ls
    (space / "here").symlink_to("/proc/self/cwd")
    monkeypatch.chdir(space)  # the checker's cwd is the workspace, as a front end's is
    return space


def _pwned(space: Path) -> bool:
    return (space / "pwned").exists() or (space.parent / "outside" / "pwned").exists()


@pytest.mark.parametrize(("allow", "command"), BYPASSES)
def test_a_line_that_runs_something_else_is_refused(
    scratch: Path, allow: list[str], command: str
) -> None:
    command = command.format(space=scratch)
    program = command.split()[0]
    if program != "cd" and program != "chdir" and shutil.which(program) is None:
        pytest.skip(f"{program} is not installed, so the attack cannot be shown running")
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    subprocess.run(["/bin/sh", "-c", command], cwd=scratch, env=env, capture_output=True)
    assert _pwned(scratch), f"the attack itself did not work here: {command}"
    policy = compile_policy(allow, [], roots=[scratch])
    decision = check_command(command, policy, cwd=scratch)
    assert not decision.allowed, command
    assert decision.reason


@pytest.mark.parametrize(
    ("allow", "command"),
    [
        (["^env\\b", "^echo\\b"], "env --unset=X echo hi"),
        (["^env\\b", "^echo\\b"], "env -u X echo hi"),
        (["^env\\b", "^echo\\b"], "env --split 'echo hi'"),
        (["^env\\b", "^echo\\b"], "env -iS 'echo hi'"),
        (["^sh\\b", "^echo\\b"], "sh -o errexit -c 'echo hi'"),
        (["^bash\\b", "^echo\\b"], "bash --norc -c 'echo hi'"),
        (["^flock\\b", "^echo\\b"], "flock -w 5 lock -c 'echo hi'"),
        (["^su\\b", "^echo\\b"], "su root -c 'echo hi'"),
        (["^echo\\b"], "echo hi > out.txt 2>/dev/null >/dev/fd/2"),
    ],
)
def test_the_same_wrappers_spelled_plainly_still_pass(
    scratch: Path, allow: list[str], command: str
) -> None:
    policy = compile_policy(allow, [], roots=[scratch])
    assert check_command(command, policy, cwd=scratch).allowed, command


def test_the_cli_refuses_an_abbreviated_option_with_its_reason(
    cli: Callable[..., Any],
) -> None:
    done = cli("submit", "--", "env", "--un", "echo", "id", OFFLOAD_ALLOW="^env\\b,^echo\\b")
    assert done.returncode != 0
    assert "'id' (run by env) is not allowed" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_cwd_swapped_for_a_link_after_submit_does_not_run(
    tmp_path: Path,
    workspace: Path,
    store: SqliteStore,
    offload_home: Path,
    start_supervisor: Callable[..., Any],
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    sub = workspace / "sub"
    sub.mkdir()
    policy = TaskPolicy(roots=(str(workspace),)).to_json()
    spec = TaskSpec(
        command="pwd; touch here", cwd=str(sub), workspace=str(workspace), policy=policy
    )
    [task] = store.submit([spec])  # checked: sub is inside the workspace
    sub.rmdir()
    sub.symlink_to(outside, target_is_directory=True)  # ...then swapped before it runs
    start_supervisor()
    poke(offload_home)
    done = wait_until(lambda: (t := store.get(task.id)).is_final and t, timeout=30)
    assert done.state is State.FAILED
    assert "a link replaced a directory" in (done.error or ""), done.error
    assert not (outside / "here").exists()


def test_the_cwd_check_by_name_agrees_with_full_resolution(tmp_path: Path) -> None:
    """At spawn a cwd that resolves to itself is judged by its name (no link on its way):
    every verdict must equal the full resolution's, a name-prefix sibling above all."""
    from offload.policies.enforce import check_cwd
    from offload.policies.paths import resolve_inside

    ws = tmp_path / "ws"
    (ws / "sub").mkdir(parents=True)
    (tmp_path / "ws2").mkdir()  # shares the workspace's name as a prefix
    (tmp_path / "link").symlink_to(ws, target_is_directory=True)
    (tmp_path / "out" / "x").mkdir(parents=True)
    (ws / "evil").symlink_to(tmp_path / "out" / "x", target_is_directory=True)
    cases = [
        (ws / "sub", ws / "evil" / "..", False),  # spelled inside ws, leads to out/
        (ws, ws, True),
        (ws / "sub", ws, True),
        (ws / "sub", f"{ws}/", True),
        (tmp_path / "ws2", ws, False),  # /x/ws2 is not inside /x/ws
        (tmp_path, ws, False),
        (ws / "sub", tmp_path / "link", True),  # a root that is a link: the full check
        (ws / "sub", "/", True),
        (Path("/proc/self"), "/", False),  # /proc is never judged by its name
        (Path("/proc"), "/proc", False),
    ]
    for cwd, root, expected in cases:
        policy = TaskPolicy(roots=(str(root),))
        verdict = check_cwd(str(cwd), policy, workspace=str(cwd)).allowed
        try:
            resolve_inside(str(cwd), [Path(root)])
            full = True
        except PolicyRefused:
            full = False
        assert verdict is full is expected, (cwd, root, verdict, full)


def test_an_agent_cannot_rerun_a_persons_unsandboxed_task(
    workspace: Path, store: SqliteStore
) -> None:
    (workspace / "Makefile").write_text("all:\n\tfalse\n")
    person = open_desk(
        load_settings(), workspace=workspace, confined=False, store=store, wake=lambda: None
    )
    [task] = person.submit([{"command": "make"}])  # the person's own: not sandboxed
    store.claim(1, "test", {})
    store.mark_started(task.id, pid=1, pgid=1, proc_start=None, cgroup=None, log_path="")
    store.finish(task.id, state=State.FAILED, exit_code=2)
    # an agent rewrites the Makefile (its sandbox may write the workspace) and asks again
    (workspace / "Makefile").write_text("all:\n\ttouch /tmp/pwned\n")
    agent = open_desk(
        load_settings(),
        workspace=workspace,
        confined=True,
        store=store,
        agent=True,
        wake=lambda: None,
    )
    with pytest.raises(PolicyRefused, match="ran without the sandbox"):
        agent.retry(task.id)
    assert store.get(task.id).state is State.FAILED
    assert person.retry(task.id).state is State.PENDING  # the person still may
