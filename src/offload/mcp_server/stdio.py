"""MCP on stdin/stdout that answers every malformed line instead of ignoring it.

The SDK's stdio transport drops a line it cannot parse (a garbage line, a request without
`method`, JSON nested 100,000 deep) after logging it, so the client waits forever for an
answer. Here each such line gets the JSON-RPC error the spec names: -32700 (parse error)
for text that is not JSON, -32600 (invalid request) for JSON that is not a JSON-RPC
message, with the request's `id` when one can be read. The server lives on.
"""

from __future__ import annotations

from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp_types import INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError
from pydantic import ValidationError

__all__ = ["reply_to_malformed", "serve_stdio"]


def reply_to_malformed(exc: Exception) -> JSONRPCError:
    """The error reply to a line the transport could not turn into a message."""
    errors = exc.errors() if isinstance(exc, ValidationError) else []
    if not errors or any(e["type"] in ("json_invalid", "recursion_loop") for e in errors):
        reason = next((str(e["msg"]) for e in errors), "not JSON")
        return JSONRPCError(
            jsonrpc="2.0",
            id=None,
            error=ErrorData(code=PARSE_ERROR, message=f"Parse error: {reason}"[:200]),
        )
    return JSONRPCError(
        jsonrpc="2.0",
        id=_request_id(errors),
        error=ErrorData(
            code=INVALID_REQUEST,
            message="Invalid Request: not a JSON-RPC 2.0 request, response or notification "
            '(each needs "jsonrpc": "2.0"; a request needs "method" and "id")',
        ),
    )


def _request_id(errors: list[Any]) -> str | int | None:
    for error in errors:
        value = error.get("input")
        if isinstance(value, dict):
            found = value.get("id")
            if isinstance(found, str | int) and not isinstance(found, bool):
                return found
    return None


async def serve_stdio(server: MCPServer[Any]) -> None:
    """Serves `server` on stdin/stdout until stdin closes."""
    lowlevel = server._lowlevel_server  # the SDK's own run_stdio_async drives it the same way
    async with stdio_server() as (inbound, outbound):
        to_server, from_filter = anyio.create_memory_object_stream[SessionMessage | Exception](0)

        async def sift() -> None:
            async with to_server:
                async for item in inbound:
                    if isinstance(item, Exception):
                        await outbound.send(SessionMessage(reply_to_malformed(item)))
                    else:
                        await to_server.send(item)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(sift)
            await lowlevel.run(from_filter, outbound, lowlevel.create_initialization_options())
            tasks.cancel_scope.cancel()
