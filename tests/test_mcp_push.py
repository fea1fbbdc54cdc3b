"""Pushed task status (`notifications/tasks` on `subscriptions/listen`), real clients, real tasks.

A client that declared the Tasks extension asks for pushes with `subscriptions/listen`
`{notifications: {taskIds}}`; it learns the final status without one `tasks/get`. Over
stdio (the real `offload mcp` child) and over Streamable HTTP (uvicorn on a thread).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.client import Client
from mcp.client.extension import ClientExtension, NotificationBinding
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, MISSING_REQUIRED_CLIENT_CAPABILITY
from pydantic import ConfigDict

from conftest import SupervisorProc, marked_processes
from offload.config import load_settings
from offload.mcp_server.task_push import TASK_NOTIFICATION, TaskListen
from offload.mcp_server.tasks_ext import TASKS_EXTENSION
from offload.web.serve import Prepared, ServerThread, prepare
from test_mcp_http import connect
from test_mcp_support import TaskHandle, TasksClient, data, make_server, until

Start = Callable[..., SupervisorProc]


class PushedTask(types.NotificationParams):
    """What a `notifications/tasks` carries: the task as tasks/get would answer it."""

    model_config = ConfigDict(extra="allow")
    task_id: str
    status: str
    status_message: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class Pushes:
    """Collects every `notifications/tasks` and `subscriptions/acknowledged` a client gets."""

    def __init__(self) -> None:
        self.tasks: list[PushedTask] = []
        self.acks: list[types.SubscriptionFilter] = []

    async def on_task(self, note: PushedTask) -> None:
        self.tasks.append(note)

    async def on_message(self, message: Any) -> None:
        if isinstance(message, types.SubscriptionsAcknowledgedNotification):
            self.acks.append(message.params.notifications)

    def binding(self) -> NotificationBinding[PushedTask]:
        return NotificationBinding(
            method=TASK_NOTIFICATION, params_type=PushedTask, handler=self.on_task
        )

    async def final(self, task_id: str) -> PushedTask | None:
        done = [t for t in self.tasks if t.task_id == task_id and t.status != "working"]
        return done[-1] if done else None


class PushClient(TasksClient):
    """Declares the Tasks extension and observes the pushes."""

    def __init__(self, pushes: Pushes) -> None:
        super().__init__()
        self.pushes = pushes

    def notifications(self) -> list[NotificationBinding[Any]]:
        return [self.pushes.binding()]


class Spy(ClientExtension):
    """Observes `notifications/tasks` without declaring the Tasks extension."""

    identifier = "com.example/spy"

    def __init__(self, pushes: Pushes) -> None:
        self.pushes = pushes

    def notifications(self) -> list[NotificationBinding[Any]]:
        return [self.pushes.binding()]


def listen_request(task_ids: list[str]) -> types.SubscriptionsListenRequest:
    wanted = types.SubscriptionFilter.model_validate({"taskIds": task_ids})
    return types.SubscriptionsListenRequest(
        params=types.SubscriptionsListenRequestParams(notifications=wanted)
    )


async def listen(client: Client, task_ids: list[str]) -> types.SubscriptionsListenResult:
    """Streams the tasks' status; returns when the server ends the stream (all final)."""
    return await client.session.send_request(
        listen_request(task_ids), types.SubscriptionsListenResult
    )


async def handle_for(client: Client, command: str) -> TaskHandle:
    handle = await client.session.call_tool("submit_task", {"command": command}, allow_claimed=True)
    assert isinstance(handle, TaskHandle), handle
    return handle


async def pushed_until_final(client: Client, pushes: Pushes, command: str) -> PushedTask:
    """Submits `command`, listens, and returns the final pushed state (no tasks/get)."""
    extension = next(e for e in client.extensions or () if isinstance(e, PushClient))
    handle = await handle_for(client, command)
    with anyio.fail_after(20):
        await listen(client, [handle.task_id, "f" * 32])
    final = await until(lambda: pushes.final(handle.task_id), what="the final push")
    assert final is not None
    assert extension.polls == 0  # nobody polled tasks/get
    assert [a.model_extra for a in pushes.acks] == [{"taskIds": [handle.task_id]}]
    return final


def _check_completed(final: PushedTask, text: str) -> None:
    assert final.status == "completed" and final.status_message == "exit 0"
    result = types.CallToolResult.model_validate(final.result)
    assert result.is_error is False and data(result)["tail"] == text


@pytest.mark.slow
def test_stdio_client_gets_the_final_status_pushed(
    offload_home: Path, workspace: Path, start_supervisor: Start
) -> None:
    start_supervisor()
    pushes = Pushes()
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "offload.mcp_server"],
        cwd=workspace,
        env={"OFFLOAD_HOME": str(offload_home)},
    )

    async def scenario() -> None:
        async with Client(
            params, extensions=[PushClient(pushes)], message_handler=pushes.on_message
        ) as client:
            assert client.protocol_version == "2026-07-28"
            final = await pushed_until_final(client, pushes, "sleep 0.5; echo pushed")
            _check_completed(final, "pushed\n")

    anyio.run(scenario)


@pytest.fixture
def served(workspace: Path) -> Any:
    prepared = prepare(load_settings(), "127.0.0.1", 0, False, workspace=workspace)
    with ServerThread(prepared):
        yield prepared


def listen_handler(prepared: Prepared) -> TaskListen:
    """The server's subscriptions/listen handler, to see its open streams."""
    mount = prepared.app.app
    entry = mount.manager.app.get_request_handler("subscriptions/listen")
    assert entry is not None and isinstance(entry.handler, TaskListen)
    return entry.handler


@pytest.mark.slow
def test_http_client_gets_the_final_status_pushed(
    served: Prepared, start_supervisor: Start
) -> None:
    start_supervisor()
    pushes = Pushes()

    async def scenario() -> None:
        async with connect(
            served, extensions=[PushClient(pushes)], message_handler=pushes.on_message
        ) as client:
            assert client.protocol_version == "2026-07-28"
            final = await pushed_until_final(client, pushes, "sleep 0.5; echo over-sse")
            _check_completed(final, "over-sse\n")
            assert listen_handler(served).open_streams == 0  # ended with its last task

    anyio.run(scenario)


@pytest.mark.slow
def test_watcher_stops_when_the_http_client_leaves(
    served: Prepared, start_supervisor: Start
) -> None:
    start_supervisor()
    pushes = Pushes()
    handler = listen_handler(served)

    async def scenario() -> str:
        async with connect(
            served, extensions=[PushClient(pushes)], message_handler=pushes.on_message
        ) as client:
            handle = await handle_for(client, "sleep 300")
            async with anyio.create_task_group() as group:
                group.start_soon(listen, client, [handle.task_id])
                await until(lambda: _true(handler.open_streams == 1), what="the watcher")
                await until(lambda: _true(bool(pushes.tasks)), what="the first push")
                assert pushes.tasks[0].status == "working"
                group.cancel_scope.cancel()
        return handle.task_id

    task_id = anyio.run(scenario)

    async def gone() -> bool:
        return handler.open_streams == 0

    anyio.run(lambda: until(gone, what="the watcher to stop"))
    assert marked_processes(task_id)  # the task itself outlives the client, as promised
    anyio.run(_cancel, served, task_id)


async def _cancel(prepared: Prepared, task_id: str) -> None:
    async with connect(prepared) as client:
        assert not (await client.call_tool("cancel_task", {"task_id": task_id})).is_error


async def _true(value: bool) -> bool:
    return value


def test_a_client_without_the_extension_gets_no_pushes(workspace: Path) -> None:
    pushes = Pushes()
    server = make_server(workspace, wake=lambda: None)

    async def scenario() -> None:
        async with Client(server, extensions=[Spy(pushes)]) as client:
            plain = await client.session.call_tool(
                "submit_task", {"command": "true"}, allow_claimed=True
            )
            assert isinstance(plain, types.CallToolResult)  # no handle, so nothing to watch
            with pytest.raises(MCPError) as refused, anyio.fail_after(10):
                await listen(client, [data(plain)["task_id"]])
            assert refused.value.code == MISSING_REQUIRED_CLIENT_CAPABILITY
            assert TASKS_EXTENSION in str(refused.value.error.data)
        assert pushes.tasks == []

    anyio.run(scenario)


def test_listen_ignores_foreign_ids_and_refuses_a_flood(workspace: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    pushes = Pushes()

    async def scenario() -> None:
        async with Client(make_server(other, wake=lambda: None)) as client:
            foreign = data(await client.call_tool("submit_task", {"command": "true"}))["task_id"]
        async with Client(
            make_server(workspace, wake=lambda: None),
            extensions=[PushClient(pushes)],
            message_handler=pushes.on_message,
        ) as client:
            handle = await handle_for(client, "true")
            with anyio.fail_after(10):  # nothing honoured: the stream ends at once
                await listen(client, [foreign, handle.task_id[:8]])
            assert [a.model_extra for a in pushes.acks] == [{"taskIds": []}]
            with pytest.raises(MCPError) as flood, anyio.fail_after(10):
                await listen(client, [f"{i:032x}" for i in range(101)])
            assert flood.value.code == INVALID_PARAMS and "at most 100" in flood.value.error.message
        assert pushes.tasks == []

    anyio.run(scenario)


def test_task_streams_are_capped_and_end_with_the_client(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("offload.mcp_server.task_push.MAX_TASK_STREAMS", 1)
    pushes = Pushes()
    server = make_server(workspace, wake=lambda: None)  # no supervisor: the task stays pending
    entry = server._lowlevel_server.get_request_handler("subscriptions/listen")
    assert entry is not None and isinstance(entry.handler, TaskListen)
    handler = entry.handler

    async def scenario() -> None:
        async with Client(
            server, extensions=[PushClient(pushes)], message_handler=pushes.on_message
        ) as client:
            handle = await handle_for(client, "true")
            async with anyio.create_task_group() as group:
                group.start_soon(listen, client, [handle.task_id])
                await until(lambda: _true(handler.open_streams == 1), what="the watcher")
                with pytest.raises(MCPError) as full, anyio.fail_after(10):
                    await listen(client, [handle.task_id])
                assert "task subscriptions are open" in full.value.error.message
                group.cancel_scope.cancel()
            await until(lambda: _true(handler.open_streams == 0), what="the watcher to stop")
        assert [t.status for t in pushes.tasks] == ["working"]

    anyio.run(scenario)
