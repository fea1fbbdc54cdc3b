"""The HTTP server's caps: slow headers are dropped, connections and event streams per
client are limited and answered with a clear refusal."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from offload.config import load_settings
from offload.web.serve import Limits, Prepared, ServerThread, prepare


@pytest.fixture
def tight(workspace: Path) -> Iterator[Prepared]:
    limits = Limits(
        header_timeout_seconds=1.0, connections_per_client=40, streams_per_client=3, concurrency=100
    )
    prepared = prepare(load_settings(), "127.0.0.1", 0, False, workspace=workspace, limits=limits)
    with ServerThread(prepared):
        yield prepared


def _half_sent(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    return sock


def _auth(prepared: Prepared) -> dict[str, str]:
    return {"Authorization": f"Bearer {prepared.token}"}


def _closed(sock: socket.socket, deadline: float) -> bool:
    sock.settimeout(max(deadline - time.monotonic(), 0.01))
    try:
        return sock.recv(4096) == b""
    except (TimeoutError, ConnectionResetError):
        return False


@pytest.mark.slow
def test_half_sent_requests_are_dropped_after_the_header_timeout(tight: Prepared) -> None:
    socks = [_half_sent(tight.port) for _ in range(30)]
    try:
        deadline = time.monotonic() + 10
        assert all(_closed(s, deadline) for s in socks)
        answer = httpx.get(f"http://127.0.0.1:{tight.port}/api/stats", headers=_auth(tight))
        assert answer.status_code == 200
    finally:
        for s in socks:
            s.close()


@pytest.mark.slow
def test_connections_past_the_per_client_cap_are_refused_at_once(tight: Prepared) -> None:
    held = [_half_sent(tight.port) for _ in range(40)]
    try:
        extra = socket.create_connection(("127.0.0.1", tight.port), timeout=5)
        with extra:
            answer = extra.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503") and b"40 connections" in answer
    finally:
        for s in held:
            s.close()


@pytest.mark.slow
def test_event_streams_past_the_cap_get_429(tight: Prepared) -> None:
    base = f"http://127.0.0.1:{tight.port}"
    with httpx.Client(base_url=base, timeout=10, headers=_auth(tight)) as client:
        streams = [client.stream("GET", "/api/events") for _ in range(3)]
        opened = [s.__enter__() for s in streams]
        try:
            assert all(r.status_code == 200 for r in opened)
            refused = client.get("/api/events")
            assert refused.status_code == 429
            assert "3 open event streams" in refused.json()["detail"]
            assert refused.headers["retry-after"] == "5"
            assert client.get("/api/stats").status_code == 200  # other requests unaffected
        finally:
            for s in streams:
                s.__exit__(None, None, None)
        assert client.get("/api/stats").status_code == 200
