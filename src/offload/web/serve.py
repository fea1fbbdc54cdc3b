"""Starting the HTTP server: checks the address, binds it, prints the URL, runs uvicorn.

The socket is bound here, before uvicorn starts, so a busy port is a clear one-line error
and port 0 (any free port) still prints the right URL. `offload serve` answers the API,
the dashboard and MCP at `/mcp`; `offload mcp --http` answers MCP alone. Both run behind the
same guards: the access policy, per-client connection and stream caps, a header deadline
(see `offload.web.limits`).
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offload.collector import resume
from offload.config import Settings
from offload.errors import ConfigError, OffloadError
from offload.web.limits import Limits

if TYPE_CHECKING:
    import uvicorn

__all__ = [
    "Limits",
    "Prepared",
    "ServerThread",
    "client_setup",
    "display_url",
    "make_server",
    "prepare",
    "run",
]

GRACEFUL_SHUTDOWN_SECONDS = 2
_BACKLOG = 128
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


@dataclass
class Prepared:
    """A bound socket and the app that will answer on it."""

    app: Any
    sock: socket.socket
    url: str
    token: str
    limits: Limits = field(default_factory=Limits)

    @property
    def port(self) -> int:
        """The TCP port actually bound."""
        return int(self.sock.getsockname()[1])


def display_url(host: str, port: int, token: str) -> str:
    """The dashboard URL a person opens (a wildcard address is shown as loopback)."""
    shown = "127.0.0.1" if host in _WILDCARDS else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/?token={token}"


def mcp_url(prepared: Prepared) -> str:
    """The URL of the MCP endpoint of ``prepared``."""
    return prepared.url.split("/?", 1)[0] + "/mcp"


def client_setup(url: str, token: str) -> str:
    """How to point an MCP client at ``url``: Claude Code's command and the generic JSON."""
    import json

    server = {"type": "http", "url": url, "headers": {"Authorization": f"Bearer {token}"}}
    generic = json.dumps({"mcpServers": {"offload": server}}, indent=2)
    return (
        f"MCP over HTTP: {url}\n"
        "Claude Code:\n"
        f"  claude mcp add --transport http offload {url} \\\n"
        f'      --header "Authorization: Bearer {token}"\n'
        f"Other clients (JSON config):\n{generic}\n"
    )


def _bind(host: str, port: int) -> socket.socket:
    """Binds and listens on ``host``:``port``.

    Raises:
        OSError: The address is unknown, in use or not ours.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(_BACKLOG)  # connections queue from now on, before uvicorn is up
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def prepare(
    settings: Settings,
    host: str,
    port: int,
    allow_remote: bool,
    *,
    workspace: Path | None = None,
    allowed_hosts: tuple[str, ...] = (),
    mcp_only: bool = False,
    limits: Limits | None = None,
) -> Prepared:
    """Checks the address, loads the token, binds the socket and builds the app.

    Args:
        settings: offload's settings; the data dir holds the queue and the token.
        host: The address to bind.
        port: The TCP port; 0 picks a free one.
        allow_remote: Permit binding an address other machines can reach.
        workspace: The MCP endpoint's workspace (default: the current directory).
        allowed_hosts: Host names clients may use beyond loopback and ``host`` itself;
            needed to bind every interface.
        mcp_only: Serve MCP at `/mcp` and nothing else (`offload mcp --http`).
        limits: Connection and stream caps (the defaults of `Limits` otherwise).

    Raises:
        ConfigError: ``host`` is beyond loopback without ``allow_remote``, every interface
            without ``allowed_hosts``, or the token file cannot be used.
        StoreError: The queue database cannot be opened.
        OSError: The socket cannot be bound.
    """
    from offload.web.auth import AccessPolicy, TokenKeeper, is_loopback

    if not is_loopback(host) and not allow_remote:
        raise ConfigError(
            f"refusing to serve on {host or 'every interface'}: other machines could reach it; "
            "pass --allow-remote to do it anyway (every request then needs the token)"
        )
    if host in _WILDCARDS and not allowed_hosts:
        raise ConfigError(
            "serving on every interface needs the names clients will use: add --allowed-host "
            "NAME (repeat it) so requests for other names (DNS rebinding) are refused"
        )
    limits = limits or Limits()
    keeper = TokenKeeper(settings.home)
    token = keeper.current()
    policy = AccessPolicy.for_bind(token, host, allowed_hosts, keeper)
    sock = _bind(host, port)
    try:
        app = _build_app(
            settings, policy, workspace or Path.cwd(), mcp_only, limits.streams_per_client
        )
    except BaseException:
        sock.close()
        raise
    bound_port = sock.getsockname()[1]
    return Prepared(
        app=app,
        sock=sock,
        url=display_url(host, bound_port, token),
        token=token,
        limits=limits,
    )


def _build_app(
    settings: Settings, policy: Any, workspace: Path, mcp_only: bool, streams_per_client: int
) -> Any:
    """The API and dashboard (unless ``mcp_only``) with MCP at `/mcp`, behind the caps."""
    from offload.mcp_server.http import McpMount
    from offload.mcp_server.server import build_server
    from offload.web.middleware import StreamLimit

    fallback = None
    if not mcp_only:
        from offload.web.routes import create_app

        fallback = create_app(settings, policy)
    mount = McpMount(build_server(settings, workspace), policy, fallback)
    return StreamLimit(mount, streams_per_client)


def make_server(prepared: Prepared) -> uvicorn.Server:
    """A uvicorn server for ``prepared`` (run it with ``.run(sockets=[prepared.sock])``)."""
    import uvicorn

    from offload.web.limits import guarded_protocol

    limits = prepared.limits
    config = uvicorn.Config(
        prepared.app,
        lifespan="on",
        http=guarded_protocol(limits),
        ws="none",
        log_level="warning",
        access_log=False,  # request lines would carry the ?token= of the first visit
        proxy_headers=False,
        server_header=False,
        limit_concurrency=limits.concurrency,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    return uvicorn.Server(config)


def run(
    settings: Settings,
    host: str,
    port: int,
    allow_remote: bool,
    *,
    workspace: Path | None = None,
    allowed_hosts: tuple[str, ...] = (),
    mcp_only: bool = False,
) -> int:
    """Serves until Ctrl-C or SIGTERM; see ``offload.web.serve``."""
    from offload.web.auth import is_loopback

    try:
        prepared = prepare(
            settings,
            host,
            port,
            allow_remote,
            workspace=workspace,
            allowed_hosts=allowed_hosts,
            mcp_only=mcp_only,
        )
    except ConfigError as exc:
        sys.stderr.write(f"offload: {exc}\n")
        return 2 if "--allow-remote" in str(exc) else 1
    except OffloadError as exc:
        sys.stderr.write(f"offload: {exc}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"offload: cannot listen on {host}:{port}: {exc}; try another --port\n")
        return 1
    if not is_loopback(host):
        sys.stderr.write(
            f"offload: warning: serving on {host or '*'}:{prepared.sock.getsockname()[1]}, "
            "reachable from other machines. Anyone with the token can cancel, retry and purge; "
            "traffic is plain HTTP, so prefer an SSH tunnel or a TLS proxy.\n"
        )
    if not mcp_only:
        sys.stdout.write(prepared.url + "\n")
    sys.stdout.write(client_setup(mcp_url(prepared), prepared.token))
    sys.stdout.flush()
    what = "MCP" if mcp_only else "dashboard, API and MCP"
    sys.stderr.write(f"offload: {what} up; Ctrl-C stops the server\n")
    server = make_server(prepared)
    resume(collect_first=True)
    try:
        server.run(sockets=[prepared.sock])
    except KeyboardInterrupt:
        pass
    finally:
        prepared.sock.close()
    return 0


class ServerThread:
    """Runs a prepared server on a background thread, for tests and for embedding.

    Use as a context manager: the server is up when the ``with`` body starts, and stopped
    (open streams cut after the graceful-shutdown timeout) and its socket closed when it
    ends.
    """

    def __init__(self, prepared: Prepared) -> None:
        self.prepared = prepared
        self.server = make_server(prepared)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [prepared.sock]}, daemon=True
        )

    def start(self, timeout: float = 15.0) -> None:
        """Starts the thread and waits until the server accepts connections.

        Raises:
            RuntimeError: The server did not come up within ``timeout`` seconds.
        """
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.01)

    def stop(self, timeout: float = 15.0) -> None:
        """Asks the server to exit, waits for its thread, and closes the socket."""
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.prepared.sock.close()

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
