"""Agent tasks end to end: a real supervisor spawns `python -m offload.workers <id>`, whose
loop drives the real SDK clients against the loopback fakes and runs real commands. The
issue's example through the CLI (with real ruff and a sub-task), through MCP, and a cancel
in the middle of a command."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import psutil
from mcp.client import Client

from conftest import marked_processes, wait_until
from fakes import FakeBedrock
from fakes.agent import bedrock_results
from fakes.environment import LlmEnv
from offload.config import load_settings
from offload.queue.models import State
from offload.queue.sqlite import SqliteStore
from offload.workers.agent import format_turns, load_turns
from test_mcp_support import call, make_server

pytest_plugins = ["fakes.fixtures"]

DEADLINE_SECONDS = 60.0
# The project's own venv, as a user's checkout has one: the agent runs `.venv/bin/ruff`,
# which the staging copy links. (The runner's venv may sit where the sandbox hides it.)
RUFF = ".venv/bin/ruff"
EXAMPLE = "add type hints to src/util.py, run ruff on it, fix what it reports, repeat until clean"
UNTYPED = "def half(x):\n    return x / 2\n"
FIRST_TRY = "import os\n\n\ndef half(x: float) -> float:\n    return x / 2\n"
CLEAN = "def half(x: float) -> float:\n    return x / 2\n"


def _script_example(fake: FakeBedrock) -> None:
    """The model of the issue's example: type, lint, fix, lint again, queue a check, finish."""
    fake.reply_tool_use("read_file", {"path": "src/util.py"}, input_tokens=900, output_tokens=40)
    fake.reply_tool_uses(
        [
            ("write_file", {"path": "src/util.py", "content": FIRST_TRY}),
            ("run_command", {"command": f"{RUFF} check --no-cache src/util.py"}),
        ],
        input_tokens=1000,
        output_tokens=120,
    )
    fake.reply_tool_uses(
        [
            ("write_file", {"path": "src/util.py", "content": CLEAN}),
            ("run_command", {"command": f"{RUFF} check --no-cache src/util.py"}),
        ],
        input_tokens=1300,
        output_tokens=110,
    )
    fake.reply_tool_use(
        "submit_task",
        {"type": "shell", "command": "echo child-ran", "name": "after-agent"},
        input_tokens=1500,
        output_tokens=60,
    )
    fake.reply_text("Typed src/util.py; ruff is clean.", input_tokens=1600, output_tokens=20)


def _diagnose(waited: Any, store: SqliteStore, task_id: str) -> str:
    """Everything that says why a task did not finish in time."""
    task = store.get(task_id)
    home = load_settings().home
    parts = [waited.stdout, waited.stderr, repr(task)]
    for path in [Path(task.log_path or ""), *sorted(home.parent.glob("supervisor-*.err"))]:
        if path.is_file():
            parts.append(f"--- {path.name}\n{path.read_text()[-4000:]}")
    return "\n".join(parts)


def test_the_issue_example_through_the_cli(
    llm_env: LlmEnv,
    cli: Callable[..., Any],
    workspace: Path,
    store: SqliteStore,
    start_supervisor: Callable[..., Any],
) -> None:
    (workspace / "src").mkdir()
    (workspace / "src/util.py").write_text(UNTYPED)
    (workspace / ".venv/bin").mkdir(parents=True)
    shutil.copy2(Path(sys.executable).parent / "ruff", workspace / RUFF)
    _script_example(llm_env.bedrock)
    start_supervisor(max_concurrent="2", openai_base_url_is_openai="1")
    submitted = cli("submit", "--type", "agent", "--spec", EXAMPLE)
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()
    waited = cli("wait", task_id, "--timeout", str(DEADLINE_SECONDS), timeout=DEADLINE_SECONDS + 30)
    assert waited.returncode == 0, _diagnose(waited, store, task_id)
    shown = json.loads(cli("show", task_id, "--json").stdout)
    assert shown["state"] == "completed", shown
    assert (workspace / "src/util.py").read_text() == CLEAN
    assert shown["result"] == "Typed src/util.py; ruff is clean.\n\napplied src/util.py"
    # No ruff cache, no staging copy left behind.
    assert sorted(p.name for p in workspace.iterdir()) == [".venv", "src"]
    # The model saw ruff's real verdicts through the staging copy.
    bodies = llm_env.bedrock.bodies()
    assert len(bodies) == 5
    _, first_lint = bedrock_results(bodies[2])
    assert (
        "F401" in first_lint["content"][0]["text"]
        and "exit code 1" in (first_lint["content"][0]["text"])
    )
    _, second_lint = bedrock_results(bodies[3])
    assert "All checks passed!" in second_lint["content"][0]["text"]
    # The sub-task is the agent's child and ran.
    [child] = store.list(parent_id=task_id)
    assert child.name == "after-agent"
    wait_until(lambda: store.get(child.id).is_final, timeout=DEADLINE_SECONDS, what="child")
    assert store.get(child.id).state is State.COMPLETED
    # Every turn is readable; the task's cost is the sum of its turns.
    task = store.get(task_id)
    turns = load_turns(task, load_settings())
    assert [t["index"] for t in turns] == [1, 2, 3, 4, 5]
    assert task.cost_usd == sum(t["cost_usd"] for t in turns)
    assert "→ run_command" in format_turns(turns)
    shown_turns = cli("show", task_id[:8], "--turns")  # what a person reads
    assert shown_turns.returncode == 0 and shown_turns.stdout == format_turns(turns)
    assert json.loads(cli("show", task_id, "--turns", "--json").stdout) == json.loads(
        json.dumps(turns)
    )
    log = Path(task.log_path or "").read_text()
    assert "[5/20] turn 5" in log and "applying 1 staged file(s)" in log


def test_agent_task_through_mcp(
    llm_env: LlmEnv, workspace: Path, start_supervisor: Callable[..., Any]
) -> None:
    llm_env.without_aws()
    llm_env.openai.reply_tool_calls([("write_file", {"path": "notes.md", "content": "# N\n"})])
    llm_env.openai.reply_text("Wrote the notes.")
    start_supervisor(openai_base_url_is_openai="1")

    async def scenario() -> None:
        async with Client(make_server(workspace)) as client:
            submitted = await call(
                client, "submit_task", task_type="agent", spec="write notes", max_turns=2
            )
            result = await call(
                client,
                "wait_for_tasks",
                task_ids=[submitted["task_id"]],
                timeout_seconds=DEADLINE_SECONDS,
            )
            assert result["met"], result
            view = await call(client, "get_task", task_id=submitted["task_id"])
            assert view["state"] == "completed", view

    anyio.run(scenario)
    assert (workspace / "notes.md").read_text() == "# N\n"


def test_cancel_mid_loop_kills_the_task_and_its_command(
    llm_env: LlmEnv,
    cli: Callable[..., Any],
    workspace: Path,
    store: SqliteStore,
    start_supervisor: Callable[..., Any],
) -> None:
    llm_env.without_aws()
    (workspace / "a.py").write_text("A = 1\n")
    fake = llm_env.openai
    fake.reply_tool_calls([("write_file", {"path": "a.py", "content": "A = 2\n"})])
    fake.reply_tool_calls([("run_command", {"command": "sleep 60; echo never"})])
    start_supervisor(openai_base_url_is_openai="1")
    submitted = cli("submit", "--type", "agent", "--spec", "slow work")
    task_id = submitted.stdout.strip()

    def sleeping() -> bool:
        for proc in marked_processes(task_id):
            with contextlib.suppress(psutil.NoSuchProcess):  # one may end as we look
                if proc.name() == "sleep":
                    return True
        return False

    wait_until(sleeping, timeout=DEADLINE_SECONDS, what="the agent's command")
    started = time.monotonic()
    assert cli("cancel", task_id).returncode == 0
    wait_until(lambda: store.get(task_id).is_final, timeout=DEADLINE_SECONDS, what="cancel")
    task = store.get(task_id)
    assert task.state is State.CANCELLED
    assert time.monotonic() - started < 5.0
    assert marked_processes(task_id) == []
    assert (workspace / "a.py").read_text() == "A = 1\n"
    settings = load_settings()
    assert (settings.logs_dir / f"{task_id}.staging/a.py").read_text() == "A = 2\n"
    turns = load_turns(task, settings)
    assert [t["index"] for t in turns] == [1, 2]
    assert turns[1]["tool_calls"][0]["finished"] is False
    assert "… no result: the task ended while this call ran" in format_turns(turns)
