"""A scriptable HTTP server on loopback for testing real SDK clients offline.

Each server answers from a queue of scripted replies (status, headers, JSON body, delay),
falling back to a default reply when the queue is empty, and records every request it
received. It runs a stdlib ThreadingHTTPServer on 127.0.0.1 and an OS-chosen port in a
daemon thread; `close()` also ends replies still waiting out a delay.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Reply", "Request", "ScriptedServer"]


@dataclass(frozen=True)
class Request:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON (None when empty)."""
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    """A scripted answer. `body` may be a callable of the request (to echo parts of it)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    def render(self, request: Request) -> bytes:
        body = self.body(request) if callable(self.body) else self.body
        if body is None:
            return b""
        if isinstance(body, bytes):
            return body
        if isinstance(body, str):
            return body.encode()
        return json.dumps(body).encode()


Script = Reply | Callable[[Request], Reply]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: ScriptedServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        return

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        reply = self.server.owner._next(request)
        if reply.delay and self.server.owner._stopping.wait(reply.delay):
            self.close_connection = True
            return
        data = reply.render(request)
        try:
            self.send_response(reply.status)
            headers = {"Content-Type": "application/json", **reply.headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True  # the client went away (killed, timed out)

    do_POST = _handle
    do_GET = _handle
    do_PUT = _handle
    do_DELETE = _handle


class ScriptedServer:
    """Base of the fake provider servers: a reply queue, a default, a request log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: deque[Script] = deque()
        self._requests: list[Request] = []
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.responder: Callable[[Request], Reply] | None = None
        """Answers when the queue is empty (before `default_reply`); lets concurrent
        tasks get answers chosen by what they sent rather than by arrival order."""

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> ScriptedServer:
        """Binds 127.0.0.1 on a free port and serves in a daemon thread."""
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stops serving and releases the port; delayed replies end at once."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT` (no trailing slash)."""
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # -- scripting -------------------------------------------------------------------
    def respond_with(self, responder: Callable[[Request], Reply] | None) -> None:
        """Sets the function that answers whenever the queue is empty."""
        self.responder = responder

    def push(self, *replies: Script) -> None:
        """Queues replies (or callables of the request returning one), answered in order."""
        with self._lock:
            self._script.extend(replies)

    def pending(self) -> int:
        """How many scripted replies are still queued."""
        with self._lock:
            return len(self._script)

    def default_reply(self, request: Request) -> Reply:
        """What to answer when the queue is empty; subclasses override."""
        return Reply(404, {"message": "no scripted reply"})

    def route(self, request: Request) -> Reply | None:
        """A reply for requests the queue must not answer (wrong path); None to go on."""
        return None

    def _next(self, request: Request) -> Reply:
        with self._lock:
            self._requests.append(request)
            early = self.route(request)
            if early is not None:
                return early
            script = self._script.popleft() if self._script else None
        if script is None:
            return self.responder(request) if self.responder else self.default_reply(request)
        return script(request) if callable(script) else script

    # -- inspecting ------------------------------------------------------------------
    @property
    def requests(self) -> list[Request]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[Request]:
        """Waits until at least `n` requests arrived; raises TimeoutError at the deadline."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < n:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(self.requests)} of {n} requests after {timeout} s")
            self._stopping.wait(0.01)
        return self.requests
