"""Agent tools in process, through the real loop and SDK clients against the fakes: refused
calls come back as errors and the loop goes on, sub-tasks, the budget per turn, commands
(policy, environment, timeout, output cap, the staging copy), search and listing over
staged files, and the transcript's masking."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fakes.agent import AgentRun, openai_results, submit_agent
from fakes.environment import LlmEnv
from offload import records
from offload.config import load_settings
from offload.queue.models import State
from offload.queue.sqlite import SqliteStore
from offload.submission import Submitter
from offload.workers.agent import format_turns, load_turns
from offload.workers.budget import BudgetExceeded
from offload.workers.redact import remember_secrets

pytest_plugins = ["fakes.fixtures"]


# -- refused calls go back to the model ----------------------------------------------------------
def test_path_escapes_and_refused_commands_are_tool_errors_and_the_loop_goes_on(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path, tmp_path: Path
) -> None:
    llm_env.without_aws()
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    (workspace / "link.txt").symlink_to(secret)
    fake = llm_env.openai
    fake.reply_tool_calls(
        [
            ("read_file", {"path": "../secret.txt"}),
            ("read_file", {"path": "link.txt"}),
            ("write_file", {"path": str(tmp_path / "evil.txt"), "content": "x"}),
            ("list_dir", {"path": "/"}),
            ("run_command", {"command": "echo ok && curl http://example.com"}),
            ("run_command", {"command": "rm -rf build"}),
            ("nuke", {}),
        ]
    )
    fake.reply_tool_calls([("read_file", "{not json")])
    fake.reply_tool_calls([("run_command", {"command": "echo fine"})])
    fake.reply_text("Gave up on the forbidden parts.")
    front_end = records.replace(load_settings(), allow=(r"^echo\b",), deny=(r"^rm\b",))
    task = submit_agent(store, workspace, settings=front_end)
    outcome = AgentRun(store)(task)  # the worker's own settings allow anything: not used
    assert outcome.result == "Gave up on the forbidden parts.\n\nno files changed"
    bodies = fake.bodies()
    results = openai_results(bodies[1])
    assert len(results) == 7
    assert all(r.startswith("error: ") for r in results)
    assert "read_file refused: path '../secret.txt' resolves to" in results[0]
    assert "outside the workspace" in results[1]
    assert "write_file refused" in results[2] and "list_dir refused" in results[3]
    assert "run_command refused" in results[4] and "curl" in results[4]
    assert "run_command refused" in results[5] and "rm -rf build" in results[5]
    assert results[6] == "error: unknown tool 'nuke'; use one of " + (
        "read_file, list_dir, search_text, write_file, run_command, submit_task"
    )
    assert "top secret" not in json.dumps(bodies)
    [bad_json] = openai_results(bodies[2])
    assert bad_json.startswith("error: read_file: arguments are not valid JSON")
    [fine] = openai_results(bodies[3])
    assert fine.startswith("ran in the staging copy: exit code 0") and fine.endswith("fine\n")
    assert not (tmp_path / "evil.txt").exists()


# -- sub-tasks, budget, commands -------------------------------------------------------------------
def test_submitted_task_is_queued_as_a_child(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    fake = llm_env.openai
    fake.reply_tool_calls(
        [
            ("submit_task", {"type": "shell", "command": "echo child", "name": "child"}),
            ("submit_task", {"type": "agent", "spec": "recurse"}),
            ("submit_task", {"type": "shell", "command": "echo", "cwd": "/"}),
            ("submit_task", {"type": "shell", "command": "echo second"}),
        ]
    )
    fake.reply_text("Queued.")
    task = submit_agent(store, workspace)
    AgentRun(store, agent_max_subtasks=1)(task)
    [child] = store.list(parent_id=task.id)
    assert (child.type, child.command, child.name, child.state) == (
        "shell",
        "echo child",
        "child",
        State.PENDING,
    )
    assert child.parent_id == task.id and child.workspace == str(workspace)
    queued, agent, unknown, capped = openai_results(fake.bodies()[1])
    assert "queued 1 tasks already; agent_max_subtasks is 1" in capped
    assert queued == f"queued shell task {child.id} (a child of this task); it runs on its own"
    assert "cannot queue another agent task" in agent and "unknown field(s) cwd" in unknown


def test_daily_budget_is_checked_before_every_turn(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    fake = llm_env.openai
    for _ in range(3):
        fake.reply_tool_calls(
            [("list_dir", {})], prompt_tokens=100_000, completion_tokens=10_000
        )  # $0.021 a turn
    task = submit_agent(store, workspace)
    run = AgentRun(store, max_daily_cost_usd=0.04)
    with pytest.raises(BudgetExceeded, match=r"\$0.0420 spent today .* counting this task"):
        run(task)
    assert len(fake.requests) == 2
    turns = load_turns(store.get(task.id), run.settings)
    assert len(turns) == 3 and turns[2]["error"].startswith("daily LLM budget reached")


def test_commands_get_no_secrets_a_timeout_and_a_capped_labelled_output(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    fake = llm_env.openai
    fake.reply_tool_calls(
        [
            ("run_command", {"command": "env"}),
            ("run_command", {"command": "sleep 30", "timeout_seconds": 0.2}),
            ("run_command", {"command": "seq 1 5000"}),
        ]
    )
    fake.reply_text("ok")
    task = submit_agent(store, workspace)
    AgentRun(store, agent_command_output_bytes=1000)(task)
    env, slept, long = openai_results(fake.bodies()[1])
    assert f"OFFLOAD_TASK_ID={task.id}" in env
    assert os.environ["OPENAI_API_KEY"] not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert slept.startswith("error: run_command failed: killed after the timeout of 0.2 s")
    assert "--- output (23893 bytes) ---\n1\n2\n3\n" in long
    assert "[... 22893 bytes omitted: the output was 23893 bytes, agent_command_output_bytes " in (
        long
    )
    assert long.endswith("4999\n5000\n")


def test_command_edits_to_existing_files_apply_but_created_files_do_not(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    (workspace / "fmt.py").write_text("x=1\n")
    (workspace / ".venv").mkdir()
    (workspace / ".venv/tool").write_text("linked\n")
    fake = llm_env.openai
    fake.reply_tool_calls(
        [
            ("run_command", {"command": "sed -i 's/x=1/x = 1/' fmt.py && echo made > new.txt"}),
            (
                "run_command",
                {"command": "cat .venv/tool; mkdir -p __pycache__; touch __pycache__/c"},
            ),
            ("write_file", {"path": ".venv/evil", "content": "x"}),
        ]
    )
    fake.reply_tool_calls([("read_file", {"path": "fmt.py"})])
    fake.reply_text("Formatted.")
    task = submit_agent(store, workspace)
    run = AgentRun(store)
    outcome = run(task)
    assert (workspace / "fmt.py").read_text() == "x = 1\n"
    assert not (workspace / "new.txt").exists() and not (workspace / "__pycache__").exists()
    assert outcome.files_written == [str(workspace / "fmt.py")]
    _, cat, evil = openai_results(fake.bodies()[1])
    assert cat.endswith("linked\n") and "linked directory" in evil
    assert openai_results(fake.bodies()[2]) == ["x = 1\n"]
    assert "not applied (created by commands, not by write_file): new.txt" in run.log.getvalue()
    assert not (workspace / ".venv/evil").exists()


def test_search_and_list_see_staged_files_over_the_workspace(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    (workspace / "pkg").mkdir()
    (workspace / "pkg/a.py").write_text("def alpha():\n    return 1\n")
    (workspace / ".git").mkdir()
    (workspace / ".git/config").write_text("def alpha_in_git\n")
    fake = llm_env.openai
    fake.reply_tool_calls(
        [("write_file", {"path": "pkg/b.py", "content": "from pkg.a import alpha\n"})]
    )
    fake.reply_tool_calls(
        [
            ("search_text", {"pattern": r"\balpha\b"}),
            ("search_text", {"pattern": "alpha", "glob": "b.py"}),
            ("search_text", {"pattern": "("}),
            ("list_dir", {"path": "pkg"}),
            ("read_file", {"path": "pkg/a.py", "start_line": 2, "max_lines": 1}),
        ]
    )
    fake.reply_text("ok")
    task = submit_agent(store, workspace)
    AgentRun(store, agent_run_commands_in="workspace")(task)
    found, only_b, bad, listing, part = openai_results(fake.bodies()[2])
    assert found == "pkg/b.py:1: from pkg.a import alpha\npkg/a.py:1: def alpha():"
    assert only_b == "pkg/b.py:1: from pkg.a import alpha"
    assert bad.startswith("error: search_text failed: invalid regular expression '('")
    assert listing == "a.py  (26 bytes)\nb.py  (24 bytes)"
    assert part == "    return 1\n\n[pkg/a.py: lines 2-2 of 2; ask for more with start_line]"


def test_transcript_masks_secrets_and_other_tasks_have_no_turns(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    key = os.environ["OPENAI_API_KEY"]
    remember_secrets(os.environ)  # what the worker entry point does at start
    llm_env.openai.reply_tool_calls([("write_file", {"path": "k.txt", "content": key})])
    llm_env.openai.reply_text(f"the key is {key}")
    task = submit_agent(store, workspace)
    run = AgentRun(store)
    run(task)
    path = run.settings.logs_dir / f"{task.id}.turns.jsonl"
    raw = path.read_text()
    assert key not in raw and "***" in raw
    assert path.stat().st_mode & 0o777 == 0o600
    [shell] = store.submit(
        [Submitter.for_workspace(run.settings, workspace).build({"command": "true"}, str)]
    )
    assert load_turns(shell, run.settings) == [] and format_turns([]) == "no turns recorded\n"
