"""Malformed MCP input: every bad line on the real `offload mcp` stdio gets an error reply,
and unknown tool arguments are refused with the names of the known ones."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client

from test_mcp_support import error_text, make_server

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "probe", "version": "1"},
    },
}


class Wire:
    """The real `python -m offload mcp` process, spoken to line by line."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self._buffer = b""

    def send(self, line: str | bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((line.encode() if isinstance(line, str) else line) + b"\n")
        self.proc.stdin.flush()

    def receive(self, timeout: float = 15.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not ready:
                raise AssertionError(f"no reply within {timeout} s")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            assert chunk, "the server closed stdout"
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        return reply


@pytest.fixture
def wire(offload_home: Path, workspace: Path) -> Iterator[Wire]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "offload", "mcp"],
        cwd=workspace,
        env={**os.environ, "OFFLOAD_HOME": str(offload_home)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    wire = Wire(proc)
    try:
        wire.send(json.dumps(INIT))
        assert wire.receive(60)["id"] == 1
        wire.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        yield wire
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        finally:
            assert proc.stdout is not None
            proc.stdout.close()


MALFORMED: list[tuple[str | bytes, int, Any]] = [
    ("garbage", -32700, None),
    ("{", -32700, None),
    ("[" * 100_000 + "]" * 100_000, -32700, None),
    (json.dumps({"jsonrpc": "2.0", "id": 7}), -32600, 7),
    (json.dumps({"jsonrpc": "2.0", "id": "x", "params": {}}), -32600, "x"),
    (json.dumps({"id": 8, "method": "ping"}), -32600, 8),
    (json.dumps([1, 2]), -32600, None),
    (b"\xff\xfe not utf-8", -32700, None),
]


@pytest.mark.slow
def test_every_malformed_line_is_answered_and_the_server_lives_on(wire: Wire) -> None:
    for number, (line, code, reply_id) in enumerate(MALFORMED):
        wire.send(line)
        reply = wire.receive()
        assert reply["jsonrpc"] == "2.0" and reply["id"] == reply_id, (line[:40], reply)
        assert reply["error"]["code"] == code, (line[:40], reply)
        wire.send(json.dumps({"jsonrpc": "2.0", "id": 1000 + number, "method": "ping"}))
        assert wire.receive() == {"jsonrpc": "2.0", "id": 1000 + number, "result": {}}


def test_unknown_tool_arguments_are_refused_with_the_known_ones(workspace: Path) -> None:
    async def scenario() -> None:
        async with Client(make_server(workspace, wake=lambda: None)) as client:
            result = await client.call_tool("submit_task", {"command": "true", "timeout_secnds": 3})
            text = error_text(result)
            assert "unknown argument for submit_task: timeout_secnds" in text
            assert "timeout_seconds" in text and "command" in text
            assert "3" not in text.split("Fix")[0].replace("submit_task", "")
            listed = await client.call_tool("list_tasks", {"stat": "running"})
            assert "unknown argument for list_tasks: stat" in error_text(listed)
            ok = await client.call_tool("list_tasks", {"state": "running"})
            assert not ok.is_error

    anyio.run(scenario)
