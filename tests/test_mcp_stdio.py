"""The MCP server as a client starts it: a real child process speaking JSON-RPC on stdio."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

from conftest import SupervisorProc
from offload.config import load_settings
from offload.queue.models import State
from test_mcp_support import TasksClient, call, data, store_of, until, wire_size

Start = Callable[..., SupervisorProc]

ENTRY_POINTS = {
    "module": ["-m", "offload.mcp_server"],
    "cli": ["-m", "offload", "mcp"],
}


def _cli_has_mcp() -> bool:
    probe = subprocess.run(
        [sys.executable, "-m", "offload", "mcp", "--help"], capture_output=True, timeout=60
    )
    return probe.returncode == 0


@pytest.fixture(params=sorted(ENTRY_POINTS))
def entry(request: pytest.FixtureRequest) -> list[str]:
    if request.param == "cli" and not _cli_has_mcp():
        pytest.skip("`offload mcp` is not wired into the CLI yet")
    return ENTRY_POINTS[request.param]


def stdio(offload_home: Path, workspace: Path, entry: list[str]) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=entry, cwd=workspace, env={"OFFLOAD_HOME": str(offload_home)}
    )


def test_an_agent_session_over_stdio(
    offload_home: Path, workspace: Path, start_supervisor: Start, entry: list[str]
) -> None:
    start_supervisor()
    params = stdio(offload_home, workspace, entry)

    async def scenario() -> None:
        async with Client(params, extensions=[TasksClient()]) as client:
            assert client.protocol_version == "2026-07-28"
            listed = await client.list_tools()
            tools = listed.model_dump(by_alias=True, mode="json", exclude_none=True)["tools"]
            assert len(tools) == 11 and wire_size({"tools": tools}) <= 4500
            batch = await call(
                client, "submit_batch", tasks=[{"command": f"echo task {i}"} for i in range(3)]
            )
            waited = await call(client, "wait_for_tasks", task_ids=batch["task_ids"])
            assert waited["met"] and {t["state"] for t in waited["tasks"]} == {"completed"}
            assert [t["tail"] for t in waited["tasks"]] == [f"task {i}\n" for i in range(3)]
            out = await call(client, "task_output", task_id=batch["task_ids"][1])
            assert out["text"] == "task 1\n"
            resolved = await client.call_tool("submit_task", {"command": "echo via a task handle"})
            assert data(resolved)["tail"] == "via a task handle\n"
            refused = await client.call_tool("submit_task", {"command": "true", "cwd": "/"})
            assert refused.is_error and "outside the workspace" in refused.content[0].text

    anyio.run(scenario)


def test_tasks_outlive_the_stdio_session(
    offload_home: Path, workspace: Path, start_supervisor: Start, entry: list[str]
) -> None:
    start_supervisor()
    params = stdio(offload_home, workspace, entry)

    async def scenario() -> str:
        async with Client(params) as client:
            task_id = str((await call(client, "submit_task", command="sleep 300"))["task_id"])
            await until(lambda: _running(client, task_id), what="running")
        return task_id

    task_id = anyio.run(scenario)
    store = store_of(load_settings())
    try:
        assert store.get(task_id).state is State.RUNNING
    finally:
        store.close()

    async def next_session() -> None:
        async with Client(params) as client:
            listed = await call(client, "list_tasks", state="running")
            assert [t["id"] for t in listed["tasks"]] == [task_id]
            assert (await call(client, "cancel_task", task_id=task_id))["state"] == "cancelled"

    anyio.run(next_session)


async def _running(client: Client, task_id: str) -> bool:
    return bool((await call(client, "get_task", task_id=task_id))["state"] == "running")


def test_bad_policy_fails_at_start_with_the_pattern_named(
    offload_home: Path, workspace: Path
) -> None:
    done = subprocess.run(
        [sys.executable, *ENTRY_POINTS["module"]],
        cwd=workspace,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        env={"OFFLOAD_HOME": str(offload_home), "OFFLOAD_DENY": "rm (", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert "rm (" in done.stderr
