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

__all__ = ["CSP", "SecurityMiddleware"]

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
        body = json.dumps({"detail": verdict.detail}).encode()
        response_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if verdict.status == 401:
            response_headers.append((b"www-authenticate", b'Bearer realm="offload"'))
        await send_with_headers(
            {"type": "http.response.start", "status": verdict.status, "headers": response_headers}
        )
        await send_with_headers({"type": "http.response.body", "body": body})
