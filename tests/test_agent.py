"""Agent tasks in process: the real loop, Store and SDK clients against the loopback fakes
scripted to call tools. Success and apply, turn limit, provider errors, conflicts,
fallback, cut-off and refused replies, and the transcript."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakes import Reply, Request
from fakes.agent import AgentRun, bedrock_results, openai_results, submit_agent
from fakes.environment import LlmEnv
from offload.errors import OffloadError
from offload.queue.sqlite import SqliteStore
from offload.workers.agent import format_turns, load_turns
from offload.workers.agent.apply import ApplyConflict
from offload.workers.providers import ProviderError

pytest_plugins = ["fakes.fixtures"]

SONNET = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"  # the default: a profile


def _mini(tokens_in: int, tokens_out: int) -> float:
    return (tokens_in * 0.15 + tokens_out * 0.60) / 1_000_000


# -- success ----------------------------------------------------------------------------------
def test_five_turns_write_two_files_applied_at_once_and_billed_per_turn(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    (workspace / "src").mkdir()
    (workspace / "src/util.py").write_text("def half(x):\n    return x / 2\n")
    fake = llm_env.openai
    usage = [(1000, 50), (1200, 80), (1400, 90), (1600, 40), (1800, 30)]
    fake.reply_tool_calls(
        [("list_dir", {"path": "src"}), ("read_file", {"path": "src/util.py"})],
        prompt_tokens=usage[0][0],
        completion_tokens=usage[0][1],
    )
    typed = "def half(x: float) -> float:\n    return x / 2\n"
    fake.reply_tool_calls(
        [("write_file", {"path": "src/util.py", "content": typed})],
        prompt_tokens=usage[1][0],
        completion_tokens=usage[1][1],
        text="Adding hints.",
    )
    test = "from src.util import half\n\n\ndef test_half():\n    assert half(4) == 2\n"
    fake.reply_tool_calls(
        [("write_file", {"path": "tests/test_util.py", "content": test})],
        prompt_tokens=usage[2][0],
        completion_tokens=usage[2][1],
    )
    fake.reply_tool_calls(
        [("run_command", {"command": "cat src/util.py tests/test_util.py"})],
        prompt_tokens=usage[3][0],
        completion_tokens=usage[3][1],
    )
    fake.reply_text(
        "Typed half() and added a test.", prompt_tokens=usage[4][0], completion_tokens=usage[4][1]
    )
    task = submit_agent(store, workspace, "add type hints to src/util.py and a test")
    run = AgentRun(store)
    outcome = run(task)

    assert (workspace / "src/util.py").read_text() == typed
    assert (workspace / "tests/test_util.py").read_text() == test
    assert outcome.files_written == [
        str(workspace / "src/util.py"),
        str(workspace / "tests/test_util.py"),
    ]
    assert outcome.result == (
        "Typed half() and added a test.\n\napplied src/util.py, tests/test_util.py"
    )
    assert not run.staging(task).exists()  # applied, so no longer needed
    # What the model got back, turn by turn.
    bodies = fake.bodies()
    assert len(bodies) == 5
    assert {t["function"]["name"] for t in bodies[0]["tools"]} == {
        "read_file",
        "list_dir",
        "search_text",
        "write_file",
        "run_command",
        "submit_task",
    }
    listing, content = openai_results(bodies[1])
    assert listing == "util.py  (30 bytes)" and content == "def half(x):\n    return x / 2\n"
    assert openai_results(bodies[2]) == [
        f"staged src/util.py ({len(typed)} bytes); the workspace gets it when the task succeeds"
    ]
    [ran] = openai_results(bodies[4])
    assert ran.startswith("ran in the staging copy: exit code 0 after")
    assert typed + test in ran  # the command saw the staged files
    assert bodies[1]["messages"][2]["tool_calls"][1]["function"]["name"] == "read_file"
    # Cost = sum of the turns; one usage event per turn; the transcript has them all.
    done = store.get(task.id)
    turns = load_turns(done, run.settings)
    assert [t["index"] for t in turns] == [1, 2, 3, 4, 5]
    assert [t["cost_usd"] for t in turns] == [pytest.approx(_mini(*u)) for u in usage]
    assert done.cost_usd == pytest.approx(sum(t["cost_usd"] for t in turns))
    assert done.cost_usd == pytest.approx(sum(_mini(*u) for u in usage))
    assert (done.tokens_in, done.tokens_out) == (7000, 290)
    assert len([e for e in store.events_since(0) if e.kind == "usage"]) == 5
    assert turns[1]["text"] == "Adding hints."
    assert turns[1]["tool_calls"][0]["arguments"] == {"path": "src/util.py", "content": typed}
    assert turns[4]["tool_calls"] == [] and turns[4]["stop"] == "end"
    shown = format_turns(turns)
    assert "turn 2 · openai gpt-4o-mini · 1200 in / 80 out · $" in shown
    assert '  → write_file {"path": "src/util.py"' in shown
    assert shown.rstrip().endswith(f"5 turn(s) · 7000 in / 290 out · ${done.cost_usd:.6f}")
    assert "[5/20] turn 5" in run.log.getvalue()


def test_bedrock_tool_use_round_trip_and_steering(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    (workspace / "CLAUDE.md").write_text("RULE-77: write docstrings.\n")
    fake = llm_env.bedrock
    fake.reply_tool_uses(
        [("write_file", {"path": "a.py", "content": '"""A."""\n'}), ("read_file", {"path": "a.py"})]
    )
    fake.reply_text("Done.")
    task = submit_agent(store, workspace)
    outcome = AgentRun(store)(task)
    assert (workspace / "a.py").read_text() == '"""A."""\n'
    assert outcome.result == "Done.\n\napplied a.py"
    first, second = fake.bodies()
    assert first["system"][0]["text"].startswith("Project rules")
    assert "RULE-77" in first["system"][0]["text"]
    names = [t["toolSpec"]["name"] for t in first["toolConfig"]["tools"] if "toolSpec" in t]
    assert "run_command" in names
    assert first["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["type"] == "object"
    assistant = second["messages"][1]
    assert assistant["role"] == "assistant"
    assert [b["toolUse"]["name"] for b in assistant["content"]] == ["write_file", "read_file"]
    wrote, read = bedrock_results(second)
    assert wrote["status"] == "success" and read["content"] == [{"text": '"""A."""\n'}]
    assert read["toolUseId"] == assistant["content"][1]["toolUse"]["toolUseId"]
    done = store.get(task.id)
    assert done.model_used == SONNET and done.cost_usd == pytest.approx(2 * (13 * 3 + 5 * 15) / 1e6)


# -- failure leaves the workspace alone -------------------------------------------------------
def test_turn_limit_fails_with_workspace_untouched_and_transcript_complete(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    (workspace / "a.py").write_text("A = 1\n")
    fake = llm_env.openai
    fake.reply_tool_calls([("write_file", {"path": "a.py", "content": "A = 2\n"})])
    fake.reply_tool_calls([("write_file", {"path": "b.py", "content": "B = 1\n"})])
    fake.reply_tool_calls([("run_command", {"command": "touch never-run"})])
    task = submit_agent(store, workspace, max_turns=3)
    run = AgentRun(store)
    with pytest.raises(OffloadError, match=r"turn limit reached: 3 turn\(s\) used"):
        run(task)
    assert (workspace / "a.py").read_text() == "A = 1\n" and not (workspace / "b.py").exists()
    assert sorted(p.name for p in workspace.iterdir()) == ["a.py"]
    staged = run.staging(task)
    assert (staged / "a.py").read_text() == "A = 2\n" and (staged / "b.py").read_text() == "B = 1\n"
    assert not (staged / "never-run").exists()
    turns = load_turns(store.get(task.id), run.settings)
    assert [t["index"] for t in turns] == [1, 2, 3]
    [last] = turns[2]["tool_calls"]
    assert last["is_error"] and last["result"] == "not run: the turn limit (3) was reached"
    assert f"staged files kept in {staged}" in run.log.getvalue()


def test_provider_error_mid_loop_is_recorded_as_the_last_turn(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    llm_env.openai.reply_tool_calls([("write_file", {"path": "x.txt", "content": "x"})])
    llm_env.openai.reply_error(400, "context_length_exceeded")
    task = submit_agent(store, workspace)
    run = AgentRun(store)
    with pytest.raises(ProviderError, match="openai 400"):
        run(task)
    assert not (workspace / "x.txt").exists()
    turns = load_turns(store.get(task.id), run.settings)
    assert len(turns) == 2 and "context_length_exceeded" in (turns[1]["error"] or "")
    assert "  error: openai 400" in format_turns(turns)


def test_conflicting_workspace_edit_refuses_the_apply(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    (workspace / "a.py").write_text("A = 1\n")
    (workspace / "b.py").write_text("B = 1\n")
    fake = llm_env.openai
    fake.reply_tool_calls([("read_file", {"path": "a.py"}), ("read_file", {"path": "b.py"})])
    fake.reply_tool_calls(
        [
            ("write_file", {"path": "a.py", "content": "A = 2\n"}),
            ("write_file", {"path": "b.py", "content": "B = 2\n"}),
        ]
    )

    def person_edits_a(request: Request) -> Reply:
        (workspace / "a.py").write_text("A = 'mine'\n")
        return fake.text("Both bumped.")

    fake.push(person_edits_a)
    task = submit_agent(store, workspace)
    run = AgentRun(store)
    with pytest.raises(
        ApplyConflict, match="changed in the workspace since the agent read it: a.py;"
    ):
        run(task)
    assert (workspace / "a.py").read_text() == "A = 'mine'\n"
    assert (workspace / "b.py").read_text() == "B = 1\n"  # all or nothing
    assert (run.staging(task) / "a.py").read_text() == "A = 2\n"


def test_a_cut_off_reply_is_nudged_on_and_a_refusal_fails(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    fake = llm_env.openai
    fake.reply_text("Here is a very long", finish_reason="length")
    fake.reply_text("I will not do that.", finish_reason="content_filter")
    task = submit_agent(store, workspace)
    run = AgentRun(store)
    with pytest.raises(OffloadError, match="the model declined to go on: I will not do that."):
        run(task)
    nudge = fake.bodies()[1]["messages"][-1]
    assert nudge["role"] == "user" and "cut off at the output-token limit" in nudge["content"]
    turns = load_turns(store.get(task.id), run.settings)
    assert [t["stop"] for t in turns] == ["max_tokens", "refused"]


def test_auto_falls_back_to_openai_for_the_rest_of_the_conversation(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    (workspace / "ctx.md").write_text("context!\n")
    llm_env.bedrock.reply_error(403, "AccessDeniedException", "no model access")
    llm_env.openai.reply_tool_calls([("write_file", {"path": "ctx.md", "content": "new\n"})])
    llm_env.openai.reply_text("Done.")
    task = submit_agent(store, workspace, context_files=["ctx.md"])
    run = AgentRun(store)
    run(task)
    assert len(llm_env.bedrock.requests) == 1 and len(llm_env.openai.requests) == 2
    assert (
        '<context path="ctx.md">\ncontext!\n\n</context>'
        in (llm_env.openai.bodies()[0]["messages"][1]["content"])
    )
    assert "falling back to openai:gpt-4o-mini" in run.log.getvalue()
    assert (workspace / "ctx.md").read_text() == "new\n"
    assert [t["provider"] for t in load_turns(store.get(task.id), run.settings)] == [
        "openai",
        "openai",
    ]


def test_a_context_file_changed_before_the_write_conflicts(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    (workspace / "ctx.md").write_text("v1\n")

    def person_edits(request: Request) -> Reply:
        (workspace / "ctx.md").write_text("v2 by a person\n")
        return llm_env.openai.tool_calls([("write_file", {"path": "ctx.md", "content": "v3\n"})])

    llm_env.openai.push(person_edits)
    llm_env.openai.reply_text("Done.")
    task = submit_agent(store, workspace, context_files=["ctx.md"])
    with pytest.raises(ApplyConflict, match="ctx.md"):
        AgentRun(store)(task)
    assert (workspace / "ctx.md").read_text() == "v2 by a person\n"
