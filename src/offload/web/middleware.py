"""The ASGI middleware that applies the access policy and the security headers.

A plain ASGI middleware (not Starlette's BaseHTTPMiddleware) so streamed answers, the
server-sent events above all, pass through untouched and unbuffered.
"""

from __future__ import annotations

import json
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from offload.web.auth import COOKIE_NAME, AccessPolicy, check_request

__all__ = ["CSP", "SecurityMiddleware", "StreamLimit", "refuse"]

# The page is one same-origin bundle: no inline script or style, no third party, no frames.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
_NO_STORE = (b"cache-control", b"no-store")

Scope = dict[str, Any]
Message = dict[str, Any]


def _cookie(header: str | None) -> str | None:
    if not header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(COOKIE_NAME)
    return morsel.value if morsel else None


def _query_token(query_string: bytes) -> str | None:
    values = parse_qs(query_string.decode("latin-1"), keep_blank_values=True).get("token")
    return values[0] if values else None


class SecurityMiddleware:
    """Refuses requests the policy does not allow and adds the security headers to all."""

    def __init__(self, app: Any, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """Handles one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        verdict = check_request(
            self.policy,
            method=scope["method"],
            path=scope["path"],
            headers=headers,
            query_token=_query_token(scope.get("query_string", b"")),
            cookie_token=_cookie(headers.get("cookie")),
        )
        extra = list(_HEADERS)
        if scope["path"].startswith("/api/") or scope["path"] == "/":
            extra.append(_NO_STORE)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        if verdict is None:
            await self.app(scope, receive, send_with_headers)
            return
        await refuse(send_with_headers, verdict.status, verdict.detail)


async def refuse(send: Any, status: int, detail: str, retry_after: int | None = None) -> None:
    """Answers one request with ``{"detail": ...}`` and ``status``, and nothing else."""
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="offload"'))
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _is_stream(scope: Scope) -> bool:
    """True for requests that may hold a response open for long: the event feed and the
    MCP endpoint's GET stream (its POSTs answer as streams too, but end with the call)."""
    path = scope["path"].rstrip("/")
    method = scope["method"].upper()
    return (path == "/api/events" and method == "GET") or (path == "/mcp" and method == "GET")


class StreamLimit:
    """Caps the long-lived streams (server-sent events) each client address holds open.

    Past the cap a client gets ``429 Too Many Requests`` with a sentence saying why and what
    to do, so one runaway client cannot hold the server's connections or slow the others.
    """

    def __init__(self, app: Any, per_client: int) -> None:
        self.app = app
        self.per_client = per_client
        self._open: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """Handles one ASGI connection."""
        if scope["type"] != "http" or not _is_stream(scope):
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("?", 0))[0]
        if self._open.get(client, 0) >= self.per_client:
            await refuse(
                send,
                429,
                f"this client already holds {self.per_client} open event streams, the most "
                "offload allows; close one (or reuse it) and try again",
                retry_after=5,
            )
            return
        self._open[client] = self._open.get(client, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            left = self._open[client] - 1
            if left:
                self._open[client] = left
            else:
                del self._open[client]
