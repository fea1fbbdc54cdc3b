"""MCP over Streamable HTTP at `/mcp`: the same server as stdio, behind the HTTP guards.

`McpMount` is an ASGI app that answers `/mcp` with the SDK's Streamable HTTP session
manager (spec 2025-11-25 with `Mcp-Session-Id` sessions, and 2026-07-28's sessionless
requests) and hands every other path to the app behind it (the HTTP API and dashboard
under `offload serve`; nothing under `offload mcp --http`).

Before the SDK sees a request it must pass `check_mcp_request`: a Host this server answers
to, no foreign Origin (DNS rebinding), and `Authorization: Bearer <token>`. The request then
carries a principal derived from the token, so the SDK binds each session to the token that
opened it: after a token rotation an old session id is refused even with the new token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from offload.web.auth import AccessPolicy, check_mcp_request
from offload.web.middleware import refuse

__all__ = ["MAX_BODY_BYTES", "MAX_SESSIONS", "MCP_PATH", "SESSION_IDLE_SECONDS", "McpMount"]

MCP_PATH = "/mcp"
MAX_BODY_BYTES = 1024 * 1024
MAX_SESSIONS = 256
SESSION_IDLE_SECONDS = 30 * 60.0

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _principal(token: str) -> AuthenticatedUser:
    """The identity a session is bound to: a fingerprint of the token, never the token."""
    fingerprint = hashlib.sha256(token.encode()).hexdigest()[:32]
    return AuthenticatedUser(AccessToken(token=fingerprint, client_id=fingerprint, scopes=[]))


class McpMount:
    """Serves MCP at `/mcp` and passes everything else to `fallback` (404 without one)."""

    def __init__(
        self,
        server: MCPServer[Any],
        policy: AccessPolicy,
        fallback: ASGIApp | None = None,
        *,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self.policy = policy
        self.fallback = fallback
        self.manager = StreamableHTTPSessionManager(
            app=server._lowlevel_server,  # the SDK's own apps mount it the same way
            security_settings=None,  # Host and Origin are checked here, before the SDK
            max_request_body_size=MAX_BODY_BYTES,
            session_idle_timeout=SESSION_IDLE_SECONDS,
            max_sessions=max_sessions,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handles one ASGI connection (http or lifespan)."""
        if scope["type"] == "lifespan":
            async with self.manager.run():
                if self.fallback is not None:
                    await self.fallback(scope, receive, send)
                else:
                    await _lifespan(receive, send)
            return
        if scope["type"] == "http" and scope["path"].rstrip("/") == MCP_PATH:
            await self._mcp(scope, receive, send)
            return
        if self.fallback is not None:
            await self.fallback(scope, receive, send)
        elif scope["type"] == "http":
            await refuse(send, 404, f"nothing here; the MCP endpoint is {MCP_PATH}")

    async def _mcp(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        verdict = check_mcp_request(self.policy, headers)
        if verdict is not None:
            await refuse(send, verdict.status, verdict.detail)
            return
        scope = {**scope, "user": _principal(self.policy.current_token())}
        await self.manager.handle_request(scope, receive, send)


async def _lifespan(receive: Receive, send: Send) -> None:
    """The ASGI lifespan protocol for an app with nothing of its own to start."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
