"""Tasks run with their submitter's environment (scrubbed), and Python output streams.

The supervisor in these tests is always started first, from the test's own environment,
so a task that finds the submitter's `mytool` proves the environment travelled with the
task instead of being inherited from whoever started the supervisor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

from conftest import SupervisorProc, wait_until
from offload.policies.submitter_env import capture_environ, is_sensitive_name, task_base_env
from offload.queue.models import State
from offload.queue.sqlite import SqliteStore
from test_mcp_support import call

Start = Callable[..., SupervisorProc]
Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        ("PATH", True),
        ("VIRTUAL_ENV", True),
        ("LANG", True),
        ("LC_MESSAGES", True),
        ("GOPATH", True),
        ("CARGO_HOME", True),
        ("JAVA_HOME", True),
        ("CC", True),
        ("AWS_SECRET_ACCESS_KEY", False),
        ("OPENAI_API_KEY", False),
        ("GITHUB_TOKEN", False),
        ("OFFLOAD_ALLOW", False),
        ("LD_PRELOAD", False),
        ("BASH_ENV", False),
        ("SOME_RANDOM_NAME", False),
    ],
)
def test_capture_keeps_tool_chain_names_and_drops_secrets(name: str, kept: bool) -> None:
    assert (name in capture_environ({name: "value"})) is kept


def test_capture_extra_names_never_let_a_secret_through() -> None:
    environ = {"MY_TOOL_HOME": "/opt/t", "MY_API_KEY": "sk-1", "BAD": "a\0b"}
    got = capture_environ(environ, extra=["MY_TOOL_HOME", "MY_API_KEY", "BAD"])
    assert got == {"MY_TOOL_HOME": "/opt/t"}


def test_base_env_is_rescrubbed_and_unbuffered_by_default() -> None:
    stored = {"PATH": "/x", "AWS_SECRET_ACCESS_KEY": "leak"}  # a row written by hand
    assert task_base_env(stored, {}) == {"PATH": "/x", "PYTHONUNBUFFERED": "1"}
    assert task_base_env({}, {"PATH": "/sup"}, unbuffered=False) == {"PATH": "/sup"}
    assert is_sensitive_name("MY_AUTH_HEADER") and not is_sensitive_name("PATH")


def _tool_dir(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "mybin"
    bin_dir.mkdir()
    tool = bin_dir / "mytool"
    tool.write_text("#!/bin/sh\necho mytool ran\n")
    tool.chmod(0o755)
    return bin_dir


@pytest.mark.slow
def test_cli_task_runs_with_the_submitters_path_and_venv(
    cli: Cli, start_supervisor: Start, tmp_path: Path
) -> None:
    start_supervisor()  # started from another environment than the submit below
    path = f"{_tool_dir(tmp_path)}:{os.environ['PATH']}"
    result = cli(
        "submit",
        "--wait",
        "--",
        'mytool; echo "venv=$VIRTUAL_ENV"',
        PATH=path,
        VIRTUAL_ENV="/some/venv",
        AWS_SECRET_ACCESS_KEY="never-stored",
    )
    assert result.returncode == 0, result.stderr
    assert "mytool ran" in result.stdout and "venv=/some/venv" in result.stdout
    task_id = result.stderr.split()[2]  # "offload: task ID submitted" (--wait: id on stderr)
    shown = json.loads(cli("show", "--json", task_id).stdout)
    assert shown["environ"]["PATH"] == path
    assert "AWS_SECRET_ACCESS_KEY" not in shown["environ"]


@pytest.mark.slow
def test_show_lists_the_variables_with_sensitive_values_masked(
    cli: Cli, start_supervisor: Start
) -> None:
    start_supervisor()
    submitted = cli(
        "submit",
        "--env",
        "SESSION_ID=abc123",
        "--",
        "true",
        MY_AUTH_HEADER="hunter2",
        OFFLOAD_ENV_ALLOW="MY_AUTH_HEADER",
    )
    assert submitted.returncode == 0, submitted.stderr
    shown = cli("show", submitted.stdout.strip())
    assert "MY_AUTH_HEADER=***" in shown.stdout and "SESSION_ID=***" in shown.stdout
    assert "hunter2" not in shown.stdout and "abc123" not in shown.stdout
    assert "PATH=" in shown.stdout


@pytest.mark.slow
def test_mcp_task_runs_with_the_mcp_servers_environment(
    offload_home: Path, workspace: Path, start_supervisor: Start, tmp_path: Path
) -> None:
    start_supervisor()
    env = {
        "OFFLOAD_HOME": str(offload_home),
        "PATH": f"{_tool_dir(tmp_path)}:{os.environ['PATH']}",
        "VIRTUAL_ENV": "/mcp/venv",
        # The tool lives under /tmp, which a sandboxed task sees as its own private /tmp.
        "OFFLOAD_SANDBOX": "off",
    }
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "offload.mcp_server"], cwd=workspace, env=env
    )

    async def scenario() -> dict[str, Any]:
        async with Client(params) as client:
            sub = await call(client, "submit_task", command='mytool; echo "venv=$VIRTUAL_ENV"')
            return await call(client, "wait_for_tasks", task_ids=[sub["task_id"]])

    waited = anyio.run(scenario)
    task = waited["tasks"][0]
    assert task["state"] == "completed", task
    assert "mytool ran" in task["tail"] and "venv=/mcp/venv" in task["tail"]


@pytest.mark.slow
def test_python_progress_is_visible_while_the_script_runs(
    store: SqliteStore, start_supervisor: Start, cli: Cli, tmp_path: Path
) -> None:
    gate = tmp_path / "go"
    script = tmp_path / "steps.py"
    script.write_text(
        "import os, time\n"
        "print('[1/3] loading')\n"
        f"while not os.path.exists({str(gate)!r}):\n"
        "    time.sleep(0.02)\n"
        "print('[3/3] done')\n"
        "for i in range(40):\n"
        "    print('summary line', i)\n"
    )
    start_supervisor()
    task_id = cli("submit", "--", sys.executable, str(script)).stdout.strip()
    running = wait_until(
        lambda: (t := store.get(task_id)).progress is not None and t, timeout=15, what="progress"
    )
    assert running.state is State.RUNNING and running.progress == pytest.approx(1 / 3)
    gate.touch()
    done = wait_until(lambda: (t := store.get(task_id)).is_final and t, what="the task to end")
    assert done.state is State.COMPLETED
    # the last marker of the whole log, though 40 lines of summary follow it
    assert done.progress == 1.0 and done.progress_message == "[3/3] done"


@pytest.mark.slow
def test_unbuffered_output_can_be_turned_off(cli: Cli, start_supervisor: Start) -> None:
    start_supervisor(python_unbuffered="false")
    result = cli("submit", "--wait", "--", 'echo "u=${PYTHONUNBUFFERED-unset}"')
    assert "u=unset" in result.stdout


def test_judging_huge_env_names_pins_no_memory() -> None:
    """A submitter's env names have no length limit; the verdicts the supervisor keeps
    must not hold on to them (4,096 names of 100 KB once pinned 400 MB)."""
    import tracemalloc

    from offload.policies.environment import is_secret_name

    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for i in range(200):
            assert is_secret_name(f"N{i}_" + "X" * 100_000) is False
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 1_000_000, f"{after - before} bytes kept"
