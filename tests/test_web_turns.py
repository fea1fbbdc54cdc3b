"""`GET /api/tasks/{id}/turns` against a real uvicorn: an agent task's transcript as JSON.

The transcript is written by the agent's own writer (`Transcript`), so the endpoint reads
exactly what a real agent task leaves behind; no model runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from offload.config import Settings, load_settings
from offload.queue.models import State, Task, TaskSpec
from offload.queue.sqlite import SqliteStore
from offload.web.auth import COOKIE_NAME
from offload.web.serve import ServerThread, prepare
from offload.workers.agent.transcript import Transcript, transcript_path
from test_web import Api

SCRIPT = "<script>alert(1)</script>"
LONG_RESULT = "x" * 5_000


@pytest.fixture
def api(offload_home: Path) -> Iterator[Api]:
    """The real server on 127.0.0.1:<free port>, as test_web.py runs it."""
    prepared = prepare(load_settings(), "127.0.0.1", 0, False)
    with (
        ServerThread(prepared),
        httpx.Client(base_url=f"http://127.0.0.1:{prepared.port}", timeout=20) as client,
    ):
        client.cookies.set(COOKIE_NAME, prepared.token)  # reads need it; writes need the header
        yield Api(client, prepared.token, prepared.port)


def _agent_task(store: SqliteStore, settings: Settings) -> Task:
    """A finished agent task, as the supervisor would have left it (minus the model)."""
    here = str(Path.cwd())
    [task] = store.submit([TaskSpec(type="agent", spec="add a greeting", cwd=here, workspace=here)])
    store.claim(1, "test", {})
    store.mark_started(
        task.id,
        pid=os.getpid(),
        pgid=os.getpgid(0),
        proc_start=None,
        cgroup=None,
        log_path=str(settings.logs_dir / f"{task.id}.log"),
    )
    store.finish(task.id, State.COMPLETED, exit_code=0)
    return task


def _turn(index: int, **fields: Any) -> dict[str, Any]:
    turn: dict[str, Any] = {
        "index": index,
        "attempt": 1,
        "at": 1_700_000_000_000 + index,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "text": "",
        "stop": "tool_use",
        "tool_calls": [],
        "tokens_in": 1000 * index,
        "tokens_out": 100 * index,
        "tokens_cached": 0,
        "cost_usd": 0.0005 * index,
        "error": None,
    }
    turn.update(fields)
    return turn


def _write_transcript(settings: Settings, task: Task) -> None:
    transcript = Transcript(transcript_path(settings, task.id))
    asked = [
        {"id": "c1", "name": "read_file", "arguments": {"path": "README.md"}, "result": None},
        {"id": "c2", "name": "run_command", "arguments": {"command": "cat big"}, "result": None},
    ]
    ran = [
        {**asked[0], "result": f"# Title\n{SCRIPT}\n", "is_error": False},
        {**asked[1], "result": LONG_RESULT, "is_error": True},
    ]
    transcript.append(_turn(1, text="Let me look.", tool_calls=asked))  # before the calls ran
    transcript.append(_turn(1, text="Let me look.", tool_calls=ran))  # completes turn 1
    transcript.append(_turn(2, text="Done: added a greeting.", stop="end_turn"))


def test_turns_of_an_agent_task_come_back_as_json(api: Api, store: SqliteStore) -> None:
    settings = load_settings()
    task = _agent_task(store, settings)
    _write_transcript(settings, task)

    response = api.client.get(f"/api/tasks/{task.id[:8]}/turns")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    turns = response.json()
    assert [(t["attempt"], t["index"]) for t in turns] == [(1, 1), (1, 2)]
    first, last = turns
    assert first["model"] == "gpt-4o-mini" and first["provider"] == "openai"
    assert first["tokens_in"] == 1000 and first["tokens_out"] == 100
    assert first["cost_usd"] == 0.0005 and first["error"] is None
    read, run = first["tool_calls"]
    assert read == {
        "id": "c1",
        "name": "read_file",
        "arguments": {"path": "README.md"},
        "result": f"# Title\n{SCRIPT}\n",
        "is_error": False,
        "finished": True,
    }
    assert SCRIPT in response.text  # plain JSON text: nothing escaped into HTML, nothing run
    assert run["is_error"] and run["arguments"] == {"command": "cat big"}
    assert run["result"].startswith("x" * 2_000) and "3000 more characters" in run["result"]
    assert len(run["result"]) < 2_100
    assert last["text"] == "Done: added a greeting." and last["tool_calls"] == []
    assert last["stop"] == "end_turn" and last["cost_usd"] == 0.001


def test_turns_are_capped_and_refused_for_unknown_ids(api: Api, store: SqliteStore) -> None:
    settings = load_settings()
    task = _agent_task(store, settings)
    transcript = Transcript(transcript_path(settings, task.id))
    for index in range(1, 106):
        transcript.append(_turn(index, text=f"turn {index}", cost_usd=None))
    url = f"/api/tasks/{task.id}/turns"

    turns = api.client.get(url).json()
    assert len(turns) == 100 and turns[0]["index"] == 6 and turns[-1]["index"] == 105
    assert turns[0]["cost_usd"] is None
    assert [t["index"] for t in api.client.get(url, params={"limit": 2}).json()] == [104, 105]
    assert len(api.client.get(url, params={"limit": 500}).json()) == 105
    for bad in (0, 501, "many"):
        assert api.client.get(url, params={"limit": bad}).status_code == 422

    missing = api.client.get("/api/tasks/abcdef0123/turns")
    assert missing.status_code == 404 and "no task matches" in missing.json()["detail"]
    assert api.client.get("/api/tasks/xyz/turns").status_code == 422


def test_other_tasks_and_agent_tasks_without_a_transcript_have_no_turns(
    api: Api,
    store: SqliteStore,
) -> None:
    settings = load_settings()
    here = str(Path.cwd())
    [shell] = store.submit([TaskSpec(command="true", cwd=here, workspace=here)])
    # A stray file under a shell task's name is not read: only agent tasks have turns.
    Transcript(transcript_path(settings, shell.id)).append(_turn(1, text="stray"))
    assert api.client.get(f"/api/tasks/{shell.id}/turns").json() == []
    [agent] = store.submit([TaskSpec(type="agent", spec="wait", cwd=here, workspace=here)])
    assert api.client.get(f"/api/tasks/{agent.id}/turns").json() == []


def test_turns_are_a_read_and_in_the_schema(api: Api, store: SqliteStore) -> None:
    settings = load_settings()
    task = _agent_task(store, settings)
    _write_transcript(settings, task)
    url = f"/api/tasks/{task.id}/turns"
    assert api.client.get(url, headers={"Origin": "http://attacker.example"}).status_code == 403
    assert api.client.post(url, headers=api.auth).status_code == 405

    schema = api.client.get("/openapi.json").json()
    get = schema["paths"]["/api/tasks/{task_id}/turns"]["get"]
    assert get["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/TurnOut"},
        "title": "Response Get Turns",
    }
    assert "404" in get["responses"]
    turn = schema["components"]["schemas"]["TurnOut"]["properties"]
    assert turn["tool_calls"]["items"] == {"$ref": "#/components/schemas/ToolCallOut"}
