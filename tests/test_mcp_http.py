"""MCP over Streamable HTTP: the real server (uvicorn on a thread), the real SDK client.

The same tools, resource and Tasks extension as stdio, behind the HTTP guards: the token,
Host and Origin checks, sessions bound to the token.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import mcp_types as types
import psutil
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from conftest import SupervisorProc, marked_processes
from offload.config import load_settings
from offload.mcp_server.tasks_ext import TaskIdParams
from offload.web.auth import TOKEN_FILE
from offload.web.serve import Prepared, ServerThread, prepare
from test_mcp_support import (
    DetailedTask,
    TaskGetRequest,
    TaskHandle,
    TasksClient,
    call,
    until,
)

Start = Callable[..., SupervisorProc]
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "probe", "version": "1"},
    },
}
ACCEPT = "application/json, text/event-stream"


@pytest.fixture
def served(workspace: Path) -> Iterator[Prepared]:
    """`offload serve` on 127.0.0.1:<free port>, MCP at /mcp for `workspace`."""
    prepared = prepare(load_settings(), "127.0.0.1", 0, False, workspace=workspace)
    with ServerThread(prepared):
        yield prepared


def mcp_url(prepared: Prepared) -> str:
    return f"http://127.0.0.1:{prepared.port}/mcp"


@asynccontextmanager
async def connect(
    prepared: Prepared, token: str | None = None, **client: Any
) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token or prepared.token}"}
    async with create_mcp_http_client(headers=headers) as http:
        transport = streamable_http_client(mcp_url(prepared), http_client=http)
        async with Client(transport, **client) as session:
            yield session


def post(prepared: Prepared, body: Any, **headers: str) -> httpx.Response:
    base = {"Accept": ACCEPT, "Content-Type": "application/json"}
    return httpx.post(mcp_url(prepared), content=json.dumps(body), headers={**base, **headers})


def auth(prepared: Prepared) -> dict[str, str]:
    return {"Authorization": f"Bearer {prepared.token}"}


@pytest.mark.slow
def test_tools_resource_and_a_task_over_http(
    served: Prepared, start_supervisor: Start, workspace: Path
) -> None:
    start_supervisor()

    async def scenario() -> None:
        async with connect(served) as client:
            tools = await client.list_tools()
            assert len(tools.tools) == 11
            ref = await call(client, "submit_task", command="echo over-http; pwd")
            waited = await call(client, "wait_for_tasks", task_ids=[ref["task_id"]])
            assert waited["met"] and waited["tasks"][0]["state"] == "completed"
            out = await call(client, "task_output", task_id=ref["task_id"])
            assert out["text"] == f"over-http\n{workspace}\n"
            read = await client.read_resource(f"offload://tasks/{ref['task_id']}/output")
            content = read.contents[0]
            assert isinstance(content, types.TextResourceContents)
            assert "over-http" in content.text

    anyio.run(scenario)


@pytest.mark.slow
def test_cancel_over_http_kills_the_tree(served: Prepared, start_supervisor: Start) -> None:
    start_supervisor()

    async def scenario() -> None:
        async with connect(served) as client:
            ref = await call(client, "submit_task", command="sleep 300 & sleep 300; wait")
            task_id = ref["task_id"]
            await until(
                lambda: anyio.to_thread.run_sync(lambda: len(marked_processes(task_id)) >= 3),
                what="the tree to start",
            )
            pids = [p.pid for p in marked_processes(task_id)]
            done = await call(client, "cancel_task", task_id=task_id)
            assert done["state"] == "cancelled"
            assert not [p for p in pids if psutil.pid_exists(p) and _alive(p)]

    anyio.run(scenario)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_tasks_extension_over_http(served: Prepared, start_supervisor: Start) -> None:
    start_supervisor()

    async def scenario() -> None:
        async with connect(served, extensions=[TasksClient()]) as client:
            handle = await client.session.call_tool(
                "submit_task", {"command": "echo handled"}, allow_claimed=True
            )
            assert isinstance(handle, TaskHandle), handle

            async def final() -> DetailedTask | None:
                got = await client.session.send_request(
                    TaskGetRequest(params=TaskIdParams(task_id=handle.task_id)), DetailedTask
                )
                return got if got.status == "completed" else None

            done = await until(final, what="the task to complete")
            assert done is not None and "handled" in json.dumps(done.result)

    anyio.run(scenario)


def test_no_token_is_401_with_a_clear_message(served: Prepared) -> None:
    answer = post(served, INIT)
    assert answer.status_code == 401
    assert "Authorization: Bearer" in answer.json()["detail"]
    assert answer.headers["www-authenticate"].startswith("Bearer")
    wrong = post(served, INIT, Authorization="Bearer not-the-token")
    assert wrong.status_code == 401
    via_query = httpx.post(
        mcp_url(served) + f"?token={served.token}",
        json=INIT,
        headers={"Accept": ACCEPT},
    )
    assert via_query.status_code == 401  # the MCP endpoint takes the header only


def test_foreign_origin_is_403(served: Prepared) -> None:
    answer = post(served, INIT, Origin="http://evil.example", **auth(served))
    assert answer.status_code == 403
    own = post(served, INIT, Origin=f"http://127.0.0.1:{served.port}", **auth(served))
    assert own.status_code == 200, own.text


def test_foreign_host_is_refused(served: Prepared) -> None:
    # DNS rebinding: a hostile name re-pointed at 127.0.0.1 still sends its own Host.
    answer = post(served, INIT, Host=f"evil.example:{served.port}", **auth(served))
    assert answer.status_code == 400
    assert "Host" in answer.json()["detail"]


def _open_session(prepared: Prepared) -> str:
    answer = post(prepared, INIT, **auth(prepared))
    assert answer.status_code == 200, answer.text
    session = answer.headers["mcp-session-id"]
    assert len(session) >= 32
    return session


def test_session_ids_are_unguessable_and_bound_to_the_token(
    served: Prepared, offload_home: Path
) -> None:
    first, second = _open_session(served), _open_session(served)
    assert first != second and int(first, 16) and int(second, 16)
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    version = {"MCP-Protocol-Version": "2025-11-25"}
    same = post(served, ping, **auth(served), **version, **{"Mcp-Session-Id": first})
    assert same.status_code == 200, same.text
    # Rotate the token: the running server takes the new one at once ...
    (offload_home / TOKEN_FILE).unlink()
    new_token = _token_after_rotation(served)
    headers = {"Authorization": f"Bearer {new_token}", **version, "Mcp-Session-Id": first}
    # ... and the session opened with the old token is not the new token's.
    stolen = post(served, ping, **headers)
    assert stolen.status_code == 404, stolen.text
    old = post(served, ping, **auth(served), **version, **{"Mcp-Session-Id": first})
    assert old.status_code == 401


def _token_after_rotation(prepared: Prepared) -> str:
    # The first request after the file went makes the server write a new token.
    assert post(prepared, INIT, **auth(prepared)).status_code == 401
    return (Path(load_settings().home) / TOKEN_FILE).read_text().strip()


def test_oversized_body_is_refused(served: Prepared) -> None:
    body = {**INIT, "params": {**INIT["params"], "pad": "x" * 2_000_000}}  # type: ignore[dict-item]
    answer = post(served, body, **auth(served))
    assert answer.status_code == 413


def test_unknown_session_is_404(served: Prepared) -> None:
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    answer = post(
        served,
        ping,
        **auth(served),
        **{"Mcp-Session-Id": "0" * 32, "MCP-Protocol-Version": "2025-11-25"},
    )
    assert answer.status_code == 404


def test_mcp_only_server_answers_nothing_else(workspace: Path) -> None:
    prepared = prepare(load_settings(), "127.0.0.1", 0, False, workspace=workspace, mcp_only=True)
    with ServerThread(prepared):
        assert httpx.get(f"http://127.0.0.1:{prepared.port}/api/stats").status_code == 404
        assert post(prepared, INIT, **auth(prepared)).status_code == 200


def test_modern_protocol_needs_the_token_too(served: Prepared) -> None:
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    discover = {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}}
    headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "server/discover"}
    assert post(served, discover, **headers).status_code == 401
    answer = post(served, discover, **headers, **auth(served))
    assert answer.status_code == 200, answer.text


_ = httpx2  # the SDK's HTTP client; imported so a missing extra fails here, clearly
