"""Building the offload MCP server and running it over stdio.

`build_server` wires one workspace's `Desk` into an `MCPServer`: the eleven tools, the
Tasks extension with its pushed status (`subscriptions/listen` with `taskIds`), and each
task's output as the resource `offload://tasks/{id}/output`.
`run` serves it on stdin/stdout until the client disconnects; the tasks it submitted keep
running under the supervisor.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver import server as sdk_server
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp_types import CallToolResult, InputRequiredResult, SubscriptionsListenRequestParams
from pydantic import ValidationError

from offload import __version__
from offload.collector import resume
from offload.config import Settings
from offload.desk import Desk, open_desk, wake_supervisor
from offload.errors import OffloadError
from offload.mcp_server.stdio import serve_stdio
from offload.mcp_server.task_push import TaskListen
from offload.mcp_server.tasks_ext import TasksExtension
from offload.mcp_server.tools import OUTPUT_MAX_BYTES, OUTPUT_MAX_LINES, ToolSet
from offload.queue import Store, open_store

__all__ = ["INSTRUCTIONS", "OUTPUT_URI", "OffloadServer", "build_server", "run"]

OUTPUT_URI = "offload://tasks/{task_id}/output"
INSTRUCTIONS = (
    "Background task queue. submit_task returns an id at once; keep working, then "
    "wait_for_tasks (≤55 s per call) or get_task. Tasks outlive this session."
)
_ARGUMENT_ERRORS_SHOWN = 5


def _plain_logging(
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO",
) -> None:
    """The SDK's own logging set-up, with a plain stderr handler.

    `MCPServer()` sets up logging with rich's handler whenever rich can be imported (other
    tools in the same environment often bring it): importing rich for it took about 20 ms
    of every start, a third of what offload's own start costs beyond the SDK's import.
    """
    logging.basicConfig(level=level, format="%(message)s", handlers=[logging.StreamHandler()])


sdk_server.configure_logging = _plain_logging  # what MCPServer.__init__ calls


class OffloadServer(MCPServer[Any]):
    """An MCPServer whose refusals read as one plain sentence: cause, then fix."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Any = None
    ) -> CallToolResult | InputRequiredResult:
        """Calls a tool; a schema violation becomes a one-line-per-field ToolError."""
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                known = self._known_arguments(name)
                raise ToolError(_explain(name, cause, known)) from cause
            if type(cause) is ToolError:  # our own refusal: drop the SDK's generic prefix
                raise ToolError(str(cause)) from cause.__cause__
            raise

    def _known_arguments(self, name: str) -> list[str]:
        tool = self._tool_manager.get_tool(name)
        properties = tool.parameters.get("properties", {}) if tool is not None else {}
        return sorted(properties)


def _explain(tool: str, error: ValidationError, known: list[str]) -> str:
    """`invalid arguments for X: field: problem; ...` without echoing the values sent."""
    unknown = [str(e["loc"][0]) for e in error.errors() if e["type"] == "extra_forbidden"]
    if unknown:
        return (
            f"unknown argument{'s' if len(unknown) > 1 else ''} for {tool}: "
            f"{', '.join(sorted(unknown))}. Fix: use only {', '.join(known)}"
        )
    problems = []
    for item in error.errors()[:_ARGUMENT_ERRORS_SHOWN]:
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        problems.append(f"{where}: {item['msg']}")
    more = error.error_count() - len(problems)
    if more > 0:
        problems.append(f"and {more} more")
    return (
        f"invalid arguments for {tool}: {'; '.join(problems)}. Fix: follow the tool's input schema"
    )


def build_server(
    settings: Settings,
    workspace: Path,
    *,
    store: Store | None = None,
    wake: Callable[[], object] | None = None,
) -> OffloadServer:
    """An MCP server for `workspace` on the queue of `settings.home`.

    Args:
        settings: The loaded settings (data dir, policy).
        workspace: The directory tasks run in and are confined to.
        store: The queue to use; by default the one the settings name.
        wake: Wakes (or starts) the supervisor; by default `wake_supervisor`.

    Raises:
        ConfigError: An allow/deny pattern is not a valid regex.
        StoreError: The queue database cannot be opened.
    """
    desk = open_desk(
        settings,
        workspace=workspace,
        confined=True,
        store=store,
        wake=wake,
        environ=os.environ,
        agent=True,
    )
    tasks = TasksExtension(desk)
    server = OffloadServer(
        "offload",
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=ToolSet(desk).tools(),
        extensions=[tasks],
        log_level="WARNING",
    )
    _add_output_resource(server, desk)
    _add_task_push(server, tasks)
    return server


def _add_task_push(server: MCPServer[Any], tasks: TasksExtension) -> None:
    """`subscriptions/listen` with `taskIds` streams task status; other listens as before."""
    lowlevel = server._lowlevel_server
    sdk = lowlevel.get_request_handler("subscriptions/listen")
    listen = TaskListen(tasks, sdk.handler if sdk is not None else None)
    lowlevel.add_request_handler("subscriptions/listen", SubscriptionsListenRequestParams, listen)


def _add_output_resource(server: MCPServer[Any], desk: Desk) -> None:
    @server.resource(
        OUTPUT_URI,
        name="task_output",
        mime_type="text/plain",
        description="The end of a task's output (64 KB at most)",
    )
    def task_output(task_id: str) -> str:
        try:
            task = desk.task(task_id)
            return desk.tail(task, OUTPUT_MAX_LINES, OUTPUT_MAX_BYTES).text
        except OffloadError as exc:
            raise ResourceNotFoundError(str(exc)) from None


def run(settings: Settings, workspace: Path) -> int:
    """Serves the MCP server on stdio until the client disconnects; returns the exit code."""
    store = open_store(settings)
    try:
        server = build_server(settings, workspace, store=store)
        wake_supervisor(settings)
        resume()
        anyio.run(serve_stdio, server)
    except KeyboardInterrupt:
        return 130
    finally:
        store.close()
    return 0
