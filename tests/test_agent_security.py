"""Agent tools against hostile inputs: links out of the workspace, writes into `.git`,
non-finite numbers from the model, links in the staging copy, and double-forked children
a command leaves behind."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from conftest import wait_until
from offload.config import Settings
from offload.errors import PolicyRefused
from offload.policies.task_policy import TaskPolicy
from offload.workers.agent.apply import apply_changes
from offload.workers.agent.commands import run_shell
from offload.workers.agent.staging import Change, Staging
from offload.workers.agent.tools import ToolBox
from offload.workers.providers import ToolCall, ToolResult


def _box(tmp_path: Path, allow: tuple[str, ...] = ()) -> tuple[ToolBox, Path]:
    base = tmp_path.resolve()
    workspace, home = base / "agent-ws", base / "agent-home"
    workspace.mkdir()
    home.mkdir()
    settings = Settings(home=home, allow=allow)
    staging = Staging.fresh(workspace, home / "logs" / "t.staging", (), private=home)
    task: Any = SimpleNamespace(id="t1", cwd=".", env={}, workspace=str(workspace))
    box = ToolBox(
        task=task,
        settings=settings,
        staging=staging,
        policy=TaskPolicy(allow=(allow,) if allow else ()),
        store=None,  # type: ignore[arg-type]
        environ={"PATH": os.environ["PATH"]},
        wake=lambda: None,
    )
    return box, workspace


def _call(box: ToolBox, name: str, **arguments: Any) -> ToolResult:
    return box.run(ToolCall(id="1", name=name, arguments=arguments))


def test_search_and_list_do_not_follow_links_out_of_the_workspace(tmp_path: Path) -> None:
    box, workspace = _box(tmp_path)
    secret = tmp_path / "outside_secret.txt"
    secret.write_text("AWS_SECRET=hunter2\n")
    (tmp_path / "outside_dir").mkdir()
    (tmp_path / "outside_dir" / "key.txt").write_text("AWS_SECRET=hunter3\n")
    (workspace / "a.py").write_text("print(1)\n")
    (workspace / "docs").mkdir()
    (workspace / "docs" / "notes.txt").symlink_to(os.path.relpath(secret, workspace / "docs"))
    (workspace / "more").symlink_to(tmp_path / "outside_dir", target_is_directory=True)
    for path in (".", "docs"):
        found = _call(box, "search_text", pattern="SECRET", path=path)
        assert "hunter" not in found.content
    listing = _call(box, "list_dir", path="docs")
    assert "notes.txt" not in listing.content
    assert "more" not in _call(box, "list_dir", path=".").content
    box.staging.materialize()
    assert "hunter" not in _call(box, "search_text", pattern="SECRET", path=".").content


def test_write_file_refuses_the_git_database_and_it_is_never_applied(tmp_path: Path) -> None:
    box, workspace = _box(tmp_path)
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    before = (workspace / ".git" / "config").read_bytes()
    result = _call(box, "write_file", path=".git/config", content="[core]\n\tfsmonitor = x\n")
    assert result.is_error and "may not write" in result.content
    box.staging.written.add(".git/config")  # even if one slipped into the staging copy
    (box.staging.root / ".git").mkdir()
    (box.staging.root / ".git" / "config").write_text("[core]\n\tfsmonitor = x\n")
    changes, _ = box.staging.changes()
    assert changes == []
    with pytest.raises(PolicyRefused, match="never applied"):
        apply_changes([Change(".git/config", b"x", None)], workspace)
    assert (workspace / ".git" / "config").read_bytes() == before


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("read_file", '{"path": "a.py", "start_line": Infinity}'),
        ("read_file", '{"path": "a.py", "max_lines": NaN}'),
        ("run_command", '{"command": "true", "timeout_seconds": NaN}'),
        ("run_command", '{"command": "true", "timeout_seconds": -Infinity}'),
    ],
)
def test_non_finite_numbers_are_tool_errors(tmp_path: Path, name: str, text: str) -> None:
    box, workspace = _box(tmp_path, allow=(r"^true$",))
    (workspace / "a.py").write_text("x\n")
    result = box.run(ToolCall(id="1", name=name, arguments=json.loads(text)))
    assert result.is_error and "finite" in result.content


def test_staged_commands_cannot_write_the_workspace_through_copied_links(
    tmp_path: Path,
) -> None:
    box, workspace = _box(tmp_path, allow=(r"^echo\b",))
    outside = tmp_path / "outside.txt"
    outside.write_text("outside\n")
    (workspace / "real.py").write_text("original\n")
    (workspace / "alias.py").symlink_to(workspace / "real.py")
    (workspace / "away.txt").symlink_to(outside)
    for command in ("echo INJECTED > alias.py", "echo INJECTED > away.txt"):
        result = _call(box, "run_command", command=command)
        assert not result.is_error, result.content
    assert (workspace / "real.py").read_text() == "original\n"
    assert outside.read_text() == "outside\n"
    assert (box.staging.root / "real.py").read_text() == "INJECTED\n"


def test_write_does_not_follow_a_link_planted_at_the_temporary_name(tmp_path: Path) -> None:
    box, workspace = _box(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("safe\n")
    (box.staging.root / ".a.py.offload-tmp").symlink_to(victim)
    box.staging.write("a.py", b"staged\n")
    assert victim.read_text() == "safe\n"
    assert (box.staging.root / "a.py").read_text() == "staged\n"
    assert not (workspace / "a.py").exists()


def _sleepers(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.info["cmdline"] == ["sleep", marker]:
            found.append(proc)
    return found


def test_timeout_kills_double_forked_children(tmp_path: Path) -> None:
    marker = str(700 + os.getpid() % 97)  # a sleep length no other test uses
    env = {"PATH": os.environ["PATH"], "OFFLOAD_TASK_ID": "sec-test"}
    try:
        run = run_shell(
            f"(sleep {marker} &); sleep 60",
            cwd=tmp_path,
            env=env,
            timeout_seconds=1,
            cap_bytes=1000,
        )
        assert run.timed_out
        wait_until(lambda: not _sleepers(marker), what="the double-forked sleep to die")
    finally:
        for proc in _sleepers(marker):
            proc.kill()
