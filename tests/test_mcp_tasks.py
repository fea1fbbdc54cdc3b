"""The io.modelcontextprotocol/tasks extension end to end, with the SDK's client extension API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import anyio
import mcp_types as types
import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, METHOD_NOT_FOUND, MISSING_REQUIRED_CLIENT_CAPABILITY

from conftest import SupervisorProc, marked_processes
from offload.config import load_settings
from offload.mcp_server.tasks_ext import TASKS_EXTENSION, TaskIdParams, TaskUpdateParams
from offload.queue.models import State
from test_mcp_support import (
    DetailedTask,
    TaskCancelRequest,
    TaskGetRequest,
    TaskHandle,
    TasksClient,
    data,
    make_server,
    store_of,
    until,
)

Start = Callable[..., SupervisorProc]


class TaskUpdateRequest(types.Request[TaskUpdateParams, Literal["tasks/update"]]):
    method: Literal["tasks/update"] = "tasks/update"
    params: TaskUpdateParams
    name_param = "taskId"


async def task_get(client: Client, task_id: str) -> DetailedTask:
    return await client.session.send_request(
        TaskGetRequest(params=TaskIdParams(task_id=task_id)), DetailedTask
    )


async def task_cancel(client: Client, task_id: str) -> types.EmptyResult:
    return await client.session.send_request(
        TaskCancelRequest(params=TaskIdParams(task_id=task_id)), types.EmptyResult
    )


async def handle_for(client: Client, command: str) -> TaskHandle:
    handle = await client.session.call_tool("submit_task", {"command": command}, allow_claimed=True)
    assert isinstance(handle, TaskHandle), handle
    return handle


def test_server_advertises_the_extension(workspace: Path) -> None:
    async def scenario() -> None:
        async with Client(make_server(workspace, wake=lambda: None)) as client:
            assert client.server_capabilities.extensions == {TASKS_EXTENSION: {}}

    anyio.run(scenario)


def test_handle_then_polling_then_result(workspace: Path, start_supervisor: Start) -> None:
    start_supervisor()

    async def scenario() -> None:
        async with Client(make_server(workspace), extensions=[TasksClient()]) as client:
            handle = await handle_for(client, "sleep 0.3; echo built")
            assert handle.status == "working" and len(handle.task_id) == 32
            assert handle.ttl_ms is None and handle.poll_interval_ms
            first = await task_get(client, handle.task_id)  # durable before the handle came back
            assert first.task_id == handle.task_id and first.status in ("working", "completed")
            done = await until(lambda: _final(client, handle.task_id), what="completed")
            assert done.status == "completed" and done.result is not None
            result = types.CallToolResult.model_validate(done.result)
            assert result.is_error is False
            view = data(result)
            assert (view["task_id"], view["state"], view["exit_code"]) == (
                handle.task_id,
                "completed",
                0,
            )
            assert view["tail"] == "built\n"
            assert done.status_message == "exit 0"
            shown = data(await client.call_tool("get_task", {"task_id": handle.task_id}))
            assert shown["state"] == "completed"  # the same task through the plain tools

    anyio.run(scenario)


async def _final(client: Client, task_id: str) -> DetailedTask | None:
    task = await task_get(client, task_id)
    return task if task.status in ("completed", "failed", "cancelled") else None


def test_client_extension_resolves_handles_transparently(
    workspace: Path, start_supervisor: Start
) -> None:
    start_supervisor()
    extension = TasksClient()

    async def scenario() -> None:
        async with Client(make_server(workspace), extensions=[extension]) as client:
            ok = await client.call_tool("submit_task", {"command": "echo fine"})
            assert data(ok)["state"] == "completed" and data(ok)["tail"] == "fine\n"
            result = await client.call_tool("submit_task", {"command": "echo out; exit 4"})
            assert result.is_error is True  # a failed run is a completed task with isError
            view = data(result.model_copy(update={"is_error": False}))
            assert (view["state"], view["exit_code"], view["tail"]) == ("failed", 4, "out\n")
            assert len(extension.handles) == 2 and extension.polls >= 2
            other = await client.call_tool("list_tasks", {})  # other tools answer plainly
            assert data(other)["tasks"][0]["id"] == extension.handles[-1].task_id

    anyio.run(scenario)


def test_tasks_cancel_kills_the_tree(workspace: Path, start_supervisor: Start) -> None:
    start_supervisor()

    async def scenario() -> None:
        async with Client(make_server(workspace), extensions=[TasksClient()]) as client:
            handle = await handle_for(client, "sleep 300 & sleep 300 & wait")
            await until(
                lambda: anyio.to_thread.run_sync(
                    lambda: len(marked_processes(handle.task_id)) >= 3
                ),
                what="the tree is up",
            )
            running = await task_get(client, handle.task_id)
            assert running.status == "working" and running.status_message
            ack = await task_cancel(client, handle.task_id)
            assert ack.model_dump(exclude_none=True, exclude={"meta"}) == {
                "result_type": "complete"
            }
            done = await until(lambda: _final(client, handle.task_id), what="cancelled")
            assert done.status == "cancelled"
            assert marked_processes(handle.task_id) == []
            await task_cancel(client, handle.task_id)  # a finished task still gets the ack

    anyio.run(scenario)


def test_status_message_carries_progress_and_update_is_acknowledged(
    workspace: Path, start_supervisor: Start
) -> None:
    start_supervisor()

    async def scenario() -> None:
        async with Client(make_server(workspace), extensions=[TasksClient()]) as client:
            handle = await handle_for(client, "echo '[3/10] compiling'; sleep 300")
            task = await until(
                lambda: _with_message(client, handle.task_id, "[3/10] compiling"),
                what="progress in statusMessage",
            )
            assert task.status == "working"
            update = TaskUpdateRequest(
                params=TaskUpdateParams(task_id=handle.task_id, input_responses={})
            )
            ack = await client.session.send_request(update, types.EmptyResult)
            assert ack.result_type == "complete"
            await task_cancel(client, handle.task_id)
            assert (await until(lambda: _final(client, handle.task_id))).status == "cancelled"

    anyio.run(scenario)


async def _with_message(client: Client, task_id: str, message: str) -> DetailedTask | None:
    task = await task_get(client, task_id)
    return task if task.status_message == message else None


def test_interrupted_task_is_failed_with_the_reason(workspace: Path) -> None:
    async def scenario() -> None:
        async with Client(
            make_server(workspace, wake=lambda: None), extensions=[TasksClient()]
        ) as client:
            handle = await handle_for(client, "sleep 1")
            store = store_of(load_settings())
            try:
                claimed = store.claim(1, "test-supervisor", {})
                store.finish(
                    claimed[0].id, State.INTERRUPTED, error="the supervisor died while it ran"
                )
            finally:
                store.close()
            task = await task_get(client, handle.task_id)
            assert task.status == "failed" and task.result is None
            assert task.error is not None and "supervisor died" in task.error["message"]
            assert "retry_task" in task.error["message"]

    anyio.run(scenario)


def test_clients_without_the_extension_get_plain_results(workspace: Path) -> None:
    async def scenario() -> None:
        server = make_server(workspace, wake=lambda: None)
        async with Client(server) as client:
            result = await client.session.call_tool(
                "submit_task", {"command": "true"}, allow_claimed=True
            )
            assert isinstance(result, types.CallToolResult)
            task_id = data(result)["task_id"]
            with pytest.raises(MCPError) as refused:
                await task_get(client, task_id)
            assert refused.value.code == MISSING_REQUIRED_CLIENT_CAPABILITY
        async with Client(server, mode="legacy", extensions=[TasksClient()]) as client:
            result = await client.session.call_tool(
                "submit_task", {"command": "true"}, allow_claimed=True
            )
            assert isinstance(result, types.CallToolResult)  # no handles on a legacy wire
            with pytest.raises(MCPError) as missing:
                await task_get(client, task_id)
            assert missing.value.code == METHOD_NOT_FOUND

    anyio.run(scenario)


def test_unknown_and_foreign_task_ids_are_invalid_params(workspace: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()

    async def scenario() -> None:
        async with Client(make_server(other, wake=lambda: None)) as client:
            foreign = data(await client.call_tool("submit_task", {"command": "true"}))["task_id"]
        async with Client(
            make_server(workspace, wake=lambda: None), extensions=[TasksClient()]
        ) as client:
            refusal = await client.session.call_tool(
                "submit_task", {"command": ""}, allow_claimed=True
            )
            assert isinstance(refusal, types.CallToolResult) and refusal.is_error  # no handle
            for task_id in ("f" * 32, foreign, "not-an-id"):
                for send in (task_get, task_cancel):
                    with pytest.raises(MCPError) as refused:
                        await send(client, task_id)
                    assert refused.value.code == INVALID_PARAMS
                    message = refused.value.error.message
                    assert message.startswith("Failed to retrieve task: ")
                    assert "in this workspace" in message or "is not a task id" in message

    anyio.run(scenario)
