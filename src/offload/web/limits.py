"""Connection limits for the HTTP server: per-client connection caps and a header deadline.

uvicorn caps the requests in flight (`limit_concurrency`, answered 503) but lets a client
open connections without end and take forever to send its headers: a thousand half-sent
requests were once held for minutes. `guarded_protocol` returns uvicorn's h11 protocol
with two more rules:

- a client address holding `connections_per_client` connections has the next one closed
  at once, with a 503 that says why;
- a connection must finish sending a request's headers within `header_timeout_seconds` of
  connecting (or of its previous response); otherwise it is closed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["GuardedH11Protocol", "Limits", "guarded_protocol"]


@dataclass(frozen=True)
class Limits:
    """What one HTTP server allows.

    Attributes:
        header_timeout_seconds: Time a connection has to send a request's headers.
        connections_per_client: Open connections one client address may hold.
        streams_per_client: Open event streams (SSE) one client address may hold.
        concurrency: Connections and requests in flight across all clients (then 503).
    """

    header_timeout_seconds: float = 10.0
    connections_per_client: int = 128
    streams_per_client: int = 16
    concurrency: int = 512


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s"
)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a per-client connection cap and a header deadline."""

    limits: Limits = Limits()
    per_client: dict[str, int] = {}
    _header_timer: asyncio.TimerHandle | None = None
    _counted: str | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        client = self.client[0] if self.client else "?"
        cap = self.limits.connections_per_client
        if self.per_client.get(client, 0) >= cap:
            text = (
                f"this client already holds {cap} connections, the most offload allows; "
                "close idle ones and retry\n"
            ).encode()
            transport.write(_BUSY % (len(text), text))
            transport.close()
            return
        self.per_client[client] = self.per_client.get(client, 0) + 1
        self._counted = client
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted is not None:
            left = self.per_client.get(self._counted, 1) - 1
            if left > 0:
                self.per_client[self._counted] = left
            else:
                self.per_client.pop(self._counted, None)
            self._counted = None
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the headers are in: the body and the answer have no deadline

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(
            self.limits.header_timeout_seconds, self._headers_late
        )

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def guarded_protocol(limits: Limits) -> type[H11Protocol]:
    """A protocol class for one server: its own `limits` and its own per-client counts."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits, "per_client": {}})
