"""Shared helpers of the MCP tests: a server per test, a Tasks-aware client, async waits.

Holds no tests itself; the test_mcp*.py modules import it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
import mcp_types as types
from mcp.client import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp_types import CallToolResult, TextContent

from offload.config import Settings, load_settings
from offload.mcp_server.server import OffloadServer, build_server
from offload.mcp_server.tasks_ext import TASKS_EXTENSION, TaskIdParams
from offload.queue.sqlite import SqliteStore

__all__ = [
    "DetailedTask",
    "TaskCancelRequest",
    "TaskGetRequest",
    "TaskHandle",
    "TasksClient",
    "call",
    "data",
    "make_server",
    "until",
]

_T = TypeVar("_T")


def make_server(
    workspace: Path,
    settings: Settings | None = None,
    *,
    wake: Callable[[], object] | None = None,
    **overrides: Any,
) -> OffloadServer:
    """A server for `workspace` on the test's OFFLOAD_HOME (with setting overrides)."""
    settings = settings or load_settings(overrides=overrides or None)
    return build_server(settings, workspace, wake=wake)


def data(result: CallToolResult) -> dict[str, Any]:
    """The structured content of a successful tool result (fails loudly on an error)."""
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """Calls a tool that must succeed and returns its structured content."""
    return data(await client.call_tool(tool, arguments))


def error_text(result: CallToolResult) -> str:
    """The text of an error result."""
    assert result.is_error, result.structured_content
    return " ".join(c.text for c in result.content if isinstance(c, TextContent))


async def until(
    condition: Callable[[], Awaitable[_T]], timeout: float = 20.0, what: str = ""
) -> _T:
    """Awaits `condition()` until it is truthy; fails at the deadline (no bare sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        await anyio.sleep(0.02)


def wire_size(value: Any) -> int:
    """Bytes of `value` as compact JSON, as it travels."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


# -- the Tasks extension, client side -----------------------------------------------------
class TaskHandle(types.Result):
    """What a task-answered tools/call returns (`resultType: "task"`)."""

    result_type: Literal["task"] = "task"
    task_id: str
    status: str
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None = None
    poll_interval_ms: int | None = None


class DetailedTask(types.Result):
    """What tasks/get answers."""

    result_type: str = "complete"
    task_id: str
    status: str
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None = None
    poll_interval_ms: int | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class TaskGetRequest(types.Request[TaskIdParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskIdParams
    name_param = "taskId"


class TaskCancelRequest(types.Request[TaskIdParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskIdParams
    name_param = "taskId"


class TasksClient(ClientExtension):
    """Declares the Tasks extension and resolves task handles by polling tasks/get."""

    identifier = TASKS_EXTENSION
    poll_cap_seconds = 0.05

    def __init__(self) -> None:
        self.handles: list[TaskHandle] = []
        self.polls = 0

    def claims(self) -> list[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=TaskHandle, resolve=self._resolve)]

    async def _resolve(self, handle: TaskHandle, ctx: ClaimContext) -> CallToolResult:
        self.handles.append(handle)
        pause = min((handle.poll_interval_ms or 1000) / 1000, self.poll_cap_seconds)
        while True:
            task = await ctx.session.send_request(
                TaskGetRequest(params=TaskIdParams(task_id=handle.task_id)), DetailedTask
            )
            self.polls += 1
            if task.status == "completed":
                return CallToolResult.model_validate(task.result)
            if task.status in ("failed", "cancelled"):
                text = f"task {task.status}: {task.status_message} {task.error or ''}"
                return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)
            await anyio.sleep(pause)


def store_of(settings: Settings) -> SqliteStore:
    """A second connection to the test's queue, for looking behind the server's back."""
    return SqliteStore(settings.db_path)
