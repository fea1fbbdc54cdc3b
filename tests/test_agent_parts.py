"""The agent's parts on their own: the providers' tool-calling wire formats, the staging
view, the all-or-nothing apply, command capture and kill, and the transcript readers."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import wait_until
from fakes import FakeBedrock
from fakes.agent import submit_agent
from fakes.environment import LlmEnv
from offload.config import Settings, load_settings
from offload.errors import PolicyRefused
from offload.queue.sqlite import SqliteStore
from offload.workers.__main__ import main as worker_main
from offload.workers.agent import format_turns, load_turns, transcript_path
from offload.workers.agent.apply import ApplyConflict, ApplyFailed, apply_changes
from offload.workers.agent.commands import run_shell
from offload.workers.agent.schemas import TOOLS
from offload.workers.agent.staging import Change, Staging, sha256_of
from offload.workers.agent.transcript import Transcript
from offload.workers.providers import Message, Provider, Stop, ToolCall, ToolResult, make_provider

pytest_plugins = ["fakes.fixtures"]

SONNET = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"  # the default: a profile
CONVERSATION = [
    Message.user("fix it"),
    Message.assistant("Looking.", (ToolCall("c1", "read_file", {"path": "a.py"}),)),
    Message.user(results=(ToolResult("c1", "no such file", is_error=True),)),
]


@pytest.fixture
def providers(llm_env: LlmEnv) -> Iterator[dict[str, Provider]]:
    built = {name: make_provider(name, Settings(), os.environ) for name in ("openai", "bedrock")}
    yield built
    for provider in built.values():
        provider.close()


# -- providers --------------------------------------------------------------------------------
def test_openai_converse_maps_tool_calls_and_results(
    llm_env: LlmEnv, providers: dict[str, Provider]
) -> None:
    llm_env.openai.reply_tool_calls(
        [("write_file", {"path": "a.py", "content": "A = 1\n"}), ("list_dir", "[1, 2]")],
        finish_reason="stop",  # some compatible servers say stop beside tool calls
        text="Writing.",
    )
    reply = providers["openai"].converse("gpt-4o", "sys", CONVERSATION, TOOLS, 512)
    assert reply.stop is Stop.TOOL_USE and reply.text == "Writing."
    write, listing = reply.tool_calls
    assert (write.name, write.arguments, write.invalid) == (
        "write_file",
        {"path": "a.py", "content": "A = 1\n"},
        None,
    )
    assert listing.invalid == "arguments must be a JSON object"
    [body] = llm_env.openai.bodies()
    assert body["max_completion_tokens"] == 512
    assert body["tools"][0]["function"]["name"] == "read_file"
    assert body["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "fix it"},
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "read_file", "arguments": '{"path": "a.py"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "error: no such file"},
    ]


@pytest.mark.parametrize(
    ("finish", "stop"),
    [("stop", Stop.END), ("length", Stop.MAX_TOKENS), ("content_filter", Stop.REFUSED)],
)
def test_openai_converse_stop_reasons(
    llm_env: LlmEnv, providers: dict[str, Provider], finish: str, stop: Stop
) -> None:
    llm_env.openai.reply_text("x", finish_reason=finish)
    assert providers["openai"].converse("m", "s", CONVERSATION[:1], TOOLS, 9).stop is stop


def test_bedrock_converse_maps_tool_use_and_results(
    llm_env: LlmEnv, providers: dict[str, Provider]
) -> None:
    llm_env.bedrock.push(
        FakeBedrock.tool_use("list_dir", {"path": "."}, tool_use_id="t9", text="Listing.")
    )
    empty = [*CONVERSATION, Message.assistant(""), Message.user("go on")]
    reply = providers["bedrock"].converse(SONNET, "sys", empty, TOOLS, 256)
    assert reply.stop is Stop.TOOL_USE and reply.text == "Listing."
    assert reply.tool_calls == (ToolCall("t9", "list_dir", {"path": "."}),)
    assert reply.usage.tokens_in == 13
    [body] = llm_env.bedrock.bodies()
    assert body["toolConfig"]["tools"][3]["toolSpec"]["name"] == "write_file"
    assert body["messages"][1]["content"] == [
        {"text": "Looking."},
        {"toolUse": {"toolUseId": "c1", "name": "read_file", "input": {"path": "a.py"}}},
    ]
    assert body["messages"][2]["content"] == [
        {
            "toolResult": {
                "toolUseId": "c1",
                "content": [{"text": "no such file"}],
                "status": "error",
            }
        }
    ]
    assert body["messages"][3]["content"] == [{"text": "(empty)"}]


@pytest.mark.parametrize(
    ("reason", "stop"),
    [
        ("end_turn", Stop.END),
        ("max_tokens", Stop.MAX_TOKENS),
        ("guardrail_intervened", Stop.REFUSED),
    ],
)
def test_bedrock_converse_stop_reasons(
    llm_env: LlmEnv, providers: dict[str, Provider], reason: str, stop: Stop
) -> None:
    llm_env.bedrock.reply_text("x", stop_reason=reason)
    assert providers["bedrock"].converse(SONNET, "s", CONVERSATION[:1], TOOLS, 9).stop is stop


def test_tool_schemas_are_closed_objects() -> None:
    for tool in TOOLS:
        assert tool.parameters["type"] == "object"
        assert tool.parameters["additionalProperties"] is False
        assert set(tool.parameters["required"]) <= set(tool.parameters["properties"])
    json.dumps([dataclasses.asdict(t) for t in TOOLS])


# -- staging ----------------------------------------------------------------------------------
def _staging(workspace: Path, tmp_path: Path, **kw: Any) -> Staging:
    return Staging.fresh(workspace, tmp_path / "staging", (".venv",), **kw)


def test_staging_keeps_offload_data_and_outside_links_out(workspace: Path, tmp_path: Path) -> None:
    home = workspace / ".offload"
    home.mkdir()
    (home / "queue.db").write_text("db")
    (workspace / "a.py").write_text("A\n")
    view = Staging.fresh(workspace, home / "logs" / "t.staging", private=home)
    with pytest.raises(PolicyRefused, match="offload's own data"):
        view.confine(".offload/queue.db")
    assert [e.name for e in view.list_dir(".")] == ["a.py"]
    root = view.materialize()
    assert sorted(p.name for p in root.iterdir()) == ["a.py"]  # no copy of itself
    assert view.confine(str(root / "a.py")) == "a.py"  # staging paths mean the workspace
    (root / "out").symlink_to(tmp_path)
    with pytest.raises(PolicyRefused, match="leads outside the workspace"):
        view.locate("out")


def test_writes_through_linked_directories_are_refused(workspace: Path, tmp_path: Path) -> None:
    (workspace / ".venv").mkdir()
    view = _staging(workspace, tmp_path)
    view.materialize()
    assert (view.root / ".venv").is_symlink()
    with pytest.raises(PolicyRefused, match="linked directory"):
        view.write(".venv/lib/x.py", b"x")
    assert not (workspace / ".venv/lib").exists()


# -- apply ------------------------------------------------------------------------------------
def test_apply_refuses_a_file_created_meanwhile_and_names_every_conflict(
    workspace: Path, tmp_path: Path
) -> None:
    (workspace / "a.py").write_text("A\n")
    view = _staging(workspace, tmp_path)
    view.read_bytes("a.py", 100)
    view.write("a.py", b"A2\n")
    view.write("new.py", b"N\n")
    (workspace / "a.py").write_text("theirs\n")
    (workspace / "new.py").write_text("also theirs\n")
    changes, _ = view.changes()
    with pytest.raises(ApplyConflict) as caught:
        apply_changes(changes, workspace)
    assert caught.value.names == ["a.py", "new.py"]
    assert (workspace / "a.py").read_text() == "theirs\n"


def test_apply_rolls_back_when_a_rename_fails(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workspace / "a.py").write_text("A\n")
    changes = [
        Change("a.py", b"A2\n", sha256_of(workspace / "a.py")),
        Change("pkg/b.py", b"B\n", None),
    ]
    real_replace = os.replace

    def failing(src: Any, dst: Any) -> None:
        if str(dst).endswith("b.py"):
            raise OSError(28, "No space left on device", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(ApplyFailed, match="No space left on device"):
        apply_changes(changes, workspace)
    assert (workspace / "a.py").read_text() == "A\n"
    assert sorted(p.name for p in workspace.iterdir()) == ["a.py"]


# -- commands ---------------------------------------------------------------------------------
def test_a_background_child_does_not_hold_the_command_open(tmp_path: Path) -> None:
    run = run_shell(
        "sleep 30 & echo $! > bg.pid; echo started",
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        timeout_seconds=20,
        cap_bytes=1000,
    )
    assert run.exit_code == 0 and run.head == b"started\n" and run.seconds < 10
    pid = int((tmp_path / "bg.pid").read_text())
    try:
        child = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return  # already ended: a command's leftovers are killed when it finishes
    wait_until(lambda: _dead(child), what="the command's leftover child to be killed")


def _dead(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_timeout_kills_the_commands_whole_tree(tmp_path: Path) -> None:
    script = "sh -c 'echo $$ > inner.pid; exec sleep 30' & wait"
    run = run_shell(
        script,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        timeout_seconds=1.0,
        cap_bytes=1000,
    )
    assert run.timed_out and run.exit_code is None
    pid = int((tmp_path / "inner.pid").read_text())
    try:
        assert _dead(psutil.Process(pid))  # killed before run_shell returned
    except psutil.NoSuchProcess:
        pass  # killed and already reaped


# -- transcript and the worker entry point --------------------------------------------------
def test_load_turns_skips_a_cut_line_and_formats_attempts(
    store: SqliteStore, workspace: Path
) -> None:
    task = submit_agent(store, workspace)
    settings = load_settings()
    log = Transcript(transcript_path(settings, task.id))
    call = {"id": "c", "name": "run_command", "arguments": {"command": "make"}}
    log.append(
        {"index": 1, "attempt": 1, "cost_usd": 0.5, "tool_calls": [call | {"result": "x" * 50}]}
    )
    log.append({"index": 1, "attempt": 2, "cost_usd": None, "text": "Done.", "tokens_in": 7})
    with transcript_path(settings, task.id).open("a") as handle:
        handle.write('{"index": 2, "attem')  # killed mid-write
    turns = load_turns(task, settings, result_chars=10)
    assert [(t["attempt"], t["index"]) for t in turns] == [(1, 1), (2, 1)]
    assert turns[0]["tool_calls"][0]["result"] == "x" * 10 + "\n[... 40 more characters not shown]"
    shown = format_turns(turns)
    assert "== attempt 1 ==" in shown and "== attempt 2 ==" in shown
    assert "turn 1 · 7 in / 0 out · cost unknown\n  model: Done." in shown
    assert shown.endswith("2 turn(s) · 7 in / 0 out · $0.500000 (some turns unpriced)\n")


def test_worker_entry_point_runs_an_agent_and_records_its_failure(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    llm_env.openai.reply_text("Nothing to do.")
    ok = submit_agent(store, workspace)
    assert worker_main([ok.id]) == 0
    assert store.get(ok.id).result == "Nothing to do.\n\nno files changed"
    llm_env.openai.reply_tool_calls([("list_dir", {})])
    limited = submit_agent(store, workspace, max_turns=1)
    assert worker_main([limited.id]) == 1
    assert (store.get(limited.id).error or "").startswith("turn limit reached: 1 turn(s) used")
