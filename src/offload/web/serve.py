"""Starting the HTTP server: checks the address, binds it, prints the URL, runs uvicorn.

The socket is bound here, before uvicorn starts, so a busy port is a clear one-line error
and port 0 (any free port) still prints the right URL.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from offload.config import Settings
from offload.errors import ConfigError, OffloadError

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

__all__ = ["Prepared", "ServerThread", "display_url", "make_server", "prepare", "run"]

GRACEFUL_SHUTDOWN_SECONDS = 2
_BACKLOG = 128
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


@dataclass
class Prepared:
    """A bound socket and the app that will answer on it."""

    app: FastAPI
    sock: socket.socket
    url: str
    token: str

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


def _local_names() -> set[str]:
    """This machine's names and interface addresses: what a Host header may say when bound to
    every interface."""
    import psutil

    names = {socket.gethostname(), socket.getfqdn()}
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                names.add(address.address.split("%")[0])
    return {n.lower() for n in names if n}


def prepare(settings: Settings, host: str, port: int, allow_remote: bool) -> Prepared:
    """Checks the address, loads the token, binds the socket and builds the app.

    Raises:
        ConfigError: ``host`` is beyond loopback without ``allow_remote``, or the token
            file cannot be used.
        StoreError: The queue database cannot be opened.
        OSError: The socket cannot be bound.
    """
    from offload.web.auth import AccessPolicy, is_loopback, load_token
    from offload.web.routes import create_app

    if not is_loopback(host) and not allow_remote:
        raise ConfigError(
            f"refusing to serve on {host or 'every interface'}: other machines could reach it; "
            "pass --allow-remote to do it anyway (every request then needs the token)"
        )
    token = load_token(settings.home)
    extra = _local_names() if host in _WILDCARDS else set()
    policy = AccessPolicy.for_bind(token, host, extra)
    sock = _bind(host, port)
    try:
        app = create_app(settings, policy)
    except BaseException:
        sock.close()
        raise
    bound_port = sock.getsockname()[1]
    return Prepared(app=app, sock=sock, url=display_url(host, bound_port, token), token=token)


def make_server(prepared: Prepared) -> uvicorn.Server:
    """A uvicorn server for ``prepared`` (run it with ``.run(sockets=[prepared.sock])``)."""
    import uvicorn

    config = uvicorn.Config(
        prepared.app,
        lifespan="on",
        ws="none",
        log_level="warning",
        access_log=False,  # request lines would carry the ?token= of the first visit
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    return uvicorn.Server(config)


def run(settings: Settings, host: str, port: int, allow_remote: bool) -> int:
    """Serves until Ctrl-C or SIGTERM; see ``offload.web.serve``."""
    from offload.web.auth import is_loopback

    try:
        prepared = prepare(settings, host, port, allow_remote)
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
    sys.stdout.write(prepared.url + "\n")
    sys.stdout.flush()
    sys.stderr.write("offload: dashboard and API up; Ctrl-C stops the server\n")
    server = make_server(prepared)
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
