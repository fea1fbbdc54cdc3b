"""`get_task(turns=true)`: an agent task's transcript through the MCP tool, hard-capped.

The transcript is written the way the agent writes it (`Transcript.append`, one line when
the model answers and one when its tool calls have run), so no model runs here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client

from offload.config import Settings, load_settings
from offload.mcp_server.turns import MAX_BYTES, MAX_TURNS, RESULT_MAX_CHARS, cap_turns
from offload.queue.models import Task, TaskSpec
from offload.workers.agent.transcript import Transcript, transcript_path
from test_mcp_support import call, make_server, store_of, wire_size

TOOLS_LIST_MAX_BYTES = 4500
RESULT_SLACK_CHARS = 60  # the "[... N more characters not shown]" label after a cut


def _submit(settings: Settings, workspace: Path, task_type: str) -> Task:
    here = str(workspace.resolve())
    if task_type == "agent":
        spec = TaskSpec(type="agent", spec="fix the failing test", cwd=here, workspace=here)
    else:
        spec = TaskSpec(command="true", cwd=here, workspace=here)
    store = store_of(settings)
    try:
        return store.submit([spec])[0]
    finally:
        store.close()


def _turn(index: int, calls: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    turn = {
        "index": index,
        "attempt": 1,
        "at": 1_700_000_000_000 + index,
        "provider": "openai",
        "model": "gpt-test",
        "text": f"turn {index}: looking around",
        "stop": "tool_use",
        "tool_calls": calls,
        "tokens_in": 100 * index,
        "tokens_out": 10 * index,
        "tokens_cached": 0,
        "cost_usd": 0.001 * index,
        "error": None,
    }
    turn.update(extra)
    return turn


def _write(transcript: Transcript, turn: dict[str, Any], results: list[str]) -> None:
    """As the agent does: the turn once answered, then again with its calls' results."""
    transcript.append(turn)
    pairs = zip(turn["tool_calls"], results, strict=True)
    calls = [{**c, "result": r, "is_error": False} for c, r in pairs]
    transcript.append({**turn, "tool_calls": calls})


def _get(workspace: Path, task_id: str, **arguments: Any) -> dict[str, Any]:
    async def scenario() -> dict[str, Any]:
        async with Client(make_server(workspace, wake=lambda: None)) as client:
            return await call(client, "get_task", task_id=task_id, **arguments)

    return anyio.run(scenario)


def test_an_agent_tasks_turns_come_back_with_tool_calls_and_costs(workspace: Path) -> None:
    settings = load_settings()
    task = _submit(settings, workspace, "agent")
    transcript = Transcript(transcript_path(settings, task.id))
    read = {"id": "c1", "name": "read_file", "arguments": {"path": "tests/test_x.py"}}
    run = {"id": "c2", "name": "run_command", "arguments": {"command": "pytest -q"}}
    _write(transcript, _turn(1, [read]), ["def test_x(): assert f() == 2"])
    transcript.append(_turn(2, [run]))  # the task ended while pytest ran

    plain = _get(workspace, task.id)
    assert "turns" not in plain

    answer = _get(workspace, task.id, turns=True)
    first, second = answer["turns"]
    assert "turns_truncated" not in answer and "turns_omitted" not in answer
    assert first["index"] == 1 and first["model"] == "gpt-test"
    assert first["cost_usd"] == pytest.approx(0.001)
    assert (first["tokens_in"], first["tokens_out"]) == (100, 10)
    [called] = first["tool_calls"]
    assert called["name"] == "read_file"
    assert called["arguments"] == {"path": "tests/test_x.py"}
    assert called["result"] == "def test_x(): assert f() == 2"
    assert called["finished"] is True and called["is_error"] is False
    [running] = second["tool_calls"]
    assert running["name"] == "run_command" and running["finished"] is False
    assert second["cost_usd"] == pytest.approx(0.002)


def test_a_long_transcript_is_capped_and_says_so(workspace: Path) -> None:
    settings = load_settings()
    task = _submit(settings, workspace, "agent")
    transcript = Transcript(transcript_path(settings, task.id))
    total = 50
    for index in range(1, total + 1):
        calls = [
            {"id": f"a{index}", "name": "run_command", "arguments": {"command": "x" * 5000}},
            {"id": f"b{index}", "name": "read_file", "arguments": {"path": f"f{index}.py"}},
        ]
        turn = _turn(index, calls, text="thinking " * 500)
        _write(transcript, turn, ["r" * 5000, "s" * 5000])

    answer = _get(workspace, task.id, turns=True)
    turns = answer["turns"]
    assert 0 < len(turns) <= MAX_TURNS
    assert turns[-1]["index"] == total
    assert [t["index"] for t in turns] == list(range(total - len(turns) + 1, total + 1))
    assert answer["turns_truncated"] is True
    assert answer["turns_omitted"] == total - len(turns)
    assert wire_size(turns) <= MAX_BYTES
    for turn in turns:
        for tool_call in turn["tool_calls"]:
            assert len(tool_call["result"]) <= RESULT_MAX_CHARS + RESULT_SLACK_CHARS
            assert "more characters not shown" in tool_call["result"]
            assert wire_size(tool_call["arguments"]) <= RESULT_MAX_CHARS + RESULT_SLACK_CHARS


def test_a_task_without_turns_answers_normally(workspace: Path) -> None:
    settings = load_settings()
    shell = _submit(settings, workspace, "shell")
    answer = _get(workspace, shell.id, turns=True)
    assert answer["state"] == "pending" and answer.get("turns", []) == []
    assert "turns_truncated" not in answer

    agent = _submit(settings, workspace, "agent")  # not started: no transcript yet
    assert _get(workspace, agent.id, turns=True).get("turns", []) == []


@pytest.mark.parametrize(
    ("turn_count", "calls_per_turn", "max_bytes", "kept", "calls_omitted"),
    [
        (3, 1, MAX_BYTES, 3, None),
        (30, 0, MAX_BYTES, MAX_TURNS, None),
        (5, 1, 1000, 2, None),
        (2, 40, 2000, 1, 33),
    ],
)
def test_cap_turns_keeps_the_newest_that_fit(
    turn_count: int, calls_per_turn: int, max_bytes: int, kept: int, calls_omitted: int | None
) -> None:
    call_ = {"id": "c", "name": "read_file", "arguments": {}, "result": "y" * 200}
    turns = [_turn(i, [call_] * calls_per_turn) for i in range(1, turn_count + 1)]
    capped = cap_turns(turns, max_bytes=max_bytes)
    assert len(capped.turns) == kept
    assert capped.omitted == turn_count - kept
    assert capped.turns[-1]["index"] == turn_count
    assert capped.truncated is (kept < turn_count or calls_omitted is not None)
    assert capped.turns[-1].get("calls_omitted") == calls_omitted
    assert wire_size(capped.turns) <= max_bytes


def test_tools_list_still_fits_with_the_turns_argument(workspace: Path) -> None:
    async def scenario() -> None:
        async with Client(make_server(workspace, wake=lambda: None)) as client:
            listed = await client.list_tools()
        tools = listed.model_dump(by_alias=True, mode="json", exclude_none=True)["tools"]
        get_task = next(t for t in tools if t["name"] == "get_task")
        assert get_task["inputSchema"]["properties"]["turns"]["type"] == "boolean"
        assert "turns" not in get_task["inputSchema"].get("required", [])
        assert wire_size({"tools": tools}) <= TOOLS_LIST_MAX_BYTES

    anyio.run(scenario)
