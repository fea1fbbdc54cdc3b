"""A host cut off from the shared queue by the network, past its lease, then back.

One supervisor runs in a network namespace of its own, joined to the test's by a veth
pair with addresses of the test's making. PostgreSQL listens on 127.0.0.1 only, so a small
TCP relay in the test forwards the veth address to it. Setting the link down cuts that
host off exactly as a failed switch would: no RST, no FIN, packets just stop.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from conftest import marked_processes, wait_until
from hosts_cluster import cluster, elapsed_until, tree_gone
from offload.queue.models import State
from pg_server import REQUIRED, require_postgres

pytestmark = pytest.mark.slow

LEASE_SECONDS = 2.0


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def _unavailable() -> str | None:
    """Why a network namespace cannot be made here, or None."""
    if shutil.which("ip") is None or shutil.which("nsenter") is None:
        return "`ip` (iproute2) or `nsenter` (util-linux) is not installed"
    probe = "offload-probe-" + secrets.token_hex(3)
    made = _ip("netns", "add", probe)
    if made.returncode != 0:
        return f"`ip netns add` is not permitted here: {made.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


@dataclass
class Netns:
    """A network namespace joined to ours by a veth pair (`outside` is ours, on `host_ip`)."""

    name: str
    outside: str
    host_ip: str
    inside_ip: str

    @property
    def prefix(self) -> list[str]:
        """Runs a command inside (only the network namespace: /sys and cgroups stay ours)."""
        return ["nsenter", f"--net=/run/netns/{self.name}", "--"]

    def link(self, up: bool) -> None:
        done = _ip("link", "set", self.outside, "up" if up else "down")
        assert done.returncode == 0, done.stderr


@contextmanager
def netns() -> Iterator[Netns]:
    """A fresh namespace and veth pair on a random /30; both are deleted afterwards."""
    reason = _unavailable()
    if reason is not None:
        if REQUIRED:
            pytest.fail(f"the network-cut test must run in CI: {reason}")
        pytest.skip(reason)
    tag = secrets.token_hex(3)
    name, outside, inside = f"offload-{tag}", f"ofo{tag}", f"ofi{tag}"
    net = f"10.{secrets.randbelow(50) + 200}.{secrets.randbelow(256)}"
    ns = Netns(name, outside, f"{net}.1", f"{net}.2")
    try:
        for args in (
            ("netns", "add", name),
            ("link", "add", outside, "type", "veth", "peer", "name", inside),
            ("link", "set", inside, "netns", name),
            ("addr", "add", f"{ns.host_ip}/30", "dev", outside),
            ("link", "set", outside, "up"),
            ("-n", name, "addr", "add", f"{ns.inside_ip}/30", "dev", inside),
            ("-n", name, "link", "set", inside, "up"),
            ("-n", name, "link", "set", "lo", "up"),
        ):
            done = _ip(*args)
            assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr}"
        yield ns
    finally:
        _ip("netns", "del", name)  # takes the veth pair with it
        _ip("link", "del", outside)  # in case the pair outlived a half-made namespace


@dataclass
class Relay:
    """Forwards TCP connections from `listen` to `target`, a thread pair per connection."""

    listen: str
    target: tuple[str, int]
    port: int = 0
    _server: socket.socket | None = None
    _conns: list[socket.socket] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._server = socket.create_server((self.listen, 0))
        self.port = self._server.getsockname()[1]
        self._spawn(self._accept)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            self._spawn(self._pipe, client, upstream)
            self._spawn(self._pipe, upstream, client)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        if self._server is not None:
            with suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        for thread in self._threads:
            thread.join(10)


def _through(url: str, host: str, port: int) -> str:
    """`url` with its host and port replaced (the relay's)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def test_a_host_cut_off_past_its_lease_kills_its_trees_and_comes_back_fenced(
    tmp_path: Path,
) -> None:
    require_postgres()
    with netns() as ns, cluster(tmp_path, lease_seconds=LEASE_SECONDS) as c:
        pg = urlsplit(c.url)
        relay = Relay(ns.host_ip, (pg.hostname or "127.0.0.1", pg.port or 5432))
        relay.start()
        try:
            _run_the_cut(c, ns, _through(c.url, ns.host_ip, relay.port), tmp_path)
        finally:
            ns.link(up=True)
            c.close()  # every supervisor and task gone before the relay and the namespace
            relay.close()


def _run_the_cut(c: object, ns: Netns, relayed_url: str, tmp_path: Path) -> None:
    from hosts_cluster import Cluster

    assert isinstance(c, Cluster)
    c.start("b")
    cut = c.start("c", prefix=ns.prefix, labels="c", database_url=relayed_url)
    go = tmp_path / "go"
    (long,) = c.submit("sleep 300", run_on=("c",))
    (quick,) = c.submit(f"while [ ! -e {go} ]; do sleep 0.05; done", run_on=("c",))
    ids = [long.id, quick.id]
    c.wait_started(ids)
    old = c.live_member("c")
    assert old is not None
    ns.link(up=False)
    took = elapsed_until(
        lambda: all(t.state is State.INTERRUPTED for t in c.store.get_many(ids)),
        timeout=LEASE_SECONDS + 5,
        what="b to interrupt the cut host's tasks",
    )
    go.touch()  # the quick task ends while its host is cut off: its finish cannot land
    # cut off, c still knows by its own clock that its lease is gone: it kills its trees
    wait_until(
        lambda: all(tree_gone(i) for i in ids), timeout=15, what="c to kill its trees, cut off"
    )
    ns.link(up=True)
    joined = wait_until(lambda: c.live_member("c"), timeout=30, what="c to register again")
    assert joined.id != old.id
    print(f"cut host's tasks interrupted {took:.2f} s after the cut (lease {LEASE_SECONDS:g} s)")
    assert "lease_lost" in cut.log_text()
    for task in c.store.get_many(ids):
        assert task.state is State.INTERRUPTED
        assert task.error and task.error.startswith("host c stopped renewing its lease")
        assert c.finished_events(task.id) == ["interrupted"]  # nothing double-counted
    assert not marked_processes(long.id)
    (after,) = c.submit("true", run_on=("c",))
    assert c.wait_state([after.id], {State.COMPLETED})[0].supervisor_id == joined.id
    cut.signal(signal.SIGTERM)
    assert cut.proc is not None and cut.proc.wait(30) == 0
