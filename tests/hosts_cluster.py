"""Several hosts simulated on one machine: real supervisors sharing one PostgreSQL queue.

Each host is a real `python -m offload supervisor --foreground` process with its own data
dir (OFFLOAD_HOME) and host name (OFFLOAD_HOST_NAME), all pointed at one fresh schema
(OFFLOAD_DATABASE_URL). A `Cluster` starts them, hands the test its own connection to the
queue, and at the end stops every supervisor and kills every process a task of the
queue left behind, so no test leaves a process or a schema.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from conftest import MARKER, marked_processes, wait_until
from offload.queue.members import Member
from offload.queue.models import State, Task, TaskSpec
from offload.queue.postgres import PostgresStore
from offload.supervisor.wake import poke
from pg_server import fresh_schema

STOP_SECONDS = 30.0


@dataclass
class Host:
    """One simulated host: its data dir, name, settings and (while it runs) supervisor."""

    name: str
    home: Path
    env: dict[str, str]
    prefix: Sequence[str] = ()  # e.g. nsenter into a network namespace
    proc: subprocess.Popen[bytes] | None = None
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.home.parent / f"{self.name}.log"

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def start(self) -> None:
        """Starts the supervisor and waits until it listens on its FIFO."""
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-P", "-m", "offload", "supervisor", "--foreground"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self.started.append(self.proc)
        proc = self.proc
        wait_until(
            lambda: poke(self.home) or proc.poll() is not None,
            timeout=30,
            what=f"supervisor of {self.name} to start",
        )
        assert proc.poll() is None, f"{self.name} exited: {self.log_text()[-2000:]}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = STOP_SECONDS) -> int | None:
        """SIGTERM (after SIGCONT, in case it was stopped), then SIGKILL at the deadline."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


class Cluster:
    """Hosts sharing the queue at `url`, and the test's own connection to it."""

    def __init__(self, url: str, root: Path, **settings: object) -> None:
        self.url = url
        self.root = root
        self.settings = {k: str(v) for k, v in settings.items()}
        self.hosts: list[Host] = []
        self.closed = False
        self.store = PostgresStore(url, pool_size=2)
        self.workspace = root / "ws"
        self.workspace.mkdir(exist_ok=True)

    def host(self, name: str, prefix: Sequence[str] = (), **settings: object) -> Host:
        """A new host (not started) with its own data dir and these extra settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("OFFLOAD_")}
        merged = {**self.settings, **{k: str(v) for k, v in settings.items()}}
        home = self.root / name / "home"
        env.update(OFFLOAD_HOME=str(home), OFFLOAD_HOST_NAME=name, OFFLOAD_DATABASE_URL=self.url)
        env.update({f"OFFLOAD_{k.upper()}": v for k, v in merged.items()})
        host = Host(name, home, env, tuple(prefix))
        self.hosts.append(host)
        return host

    def start(self, name: str, prefix: Sequence[str] = (), **settings: object) -> Host:
        """A new host, started; returns once it is a live member of the queue."""
        host = self.host(name, prefix, **settings)
        host.start()
        known = host.env["OFFLOAD_HOST_NAME"]
        wait_until(lambda: self.live_member(known), timeout=30, what=f"{name} to join")
        return host

    def live_member(self, host: str) -> Member | None:
        """The live member registered by `host`, if any."""
        now = self.store.now_ms()
        found = [m for m in self.store.members() if m.host == host and m.alive_at(now)]
        return found[-1] if found else None

    def submit(self, command: str, n: int = 1, **fields: object) -> list[Task]:
        """Submits `n` shell tasks running `command` in the cluster's workspace."""
        ws = str(self.workspace)
        specs = [TaskSpec(command=command, cwd=ws, workspace=ws, **fields) for _ in range(n)]  # type: ignore[arg-type]
        return self.store.submit(specs)

    def wait_state(
        self, task_ids: Sequence[str], states: set[State], timeout: float = 30.0
    ) -> list[Task]:
        """Waits until every task is in one of `states`; returns them."""

        def reached() -> list[Task] | None:
            tasks = self.store.get_many(task_ids)
            return tasks if all(t.state in states for t in tasks) else None

        result: list[Task] = wait_until(reached, timeout=timeout, interval=0.05, what=states)
        return result

    def wait_drained(self, timeout: float) -> None:
        """Waits until no task is pending or running (one indexed probe per poll)."""
        active = [State.PENDING, State.RUNNING]
        wait_until(
            lambda: not self.store.list(active, limit=1),
            timeout=timeout,
            interval=0.2,
            what="the queue to drain",
        )

    def wait_started(self, task_ids: Sequence[str], timeout: float = 30.0) -> list[Task]:
        """Waits until the tasks run and their processes are recorded (pid set)."""

        def started() -> list[Task] | None:
            tasks = self.store.get_many(task_ids)
            return tasks if all(t.state is State.RUNNING and t.pid for t in tasks) else None

        result: list[Task] = wait_until(started, timeout=timeout, interval=0.02, what="started")
        return result

    def finished_events(self, task_id: str) -> list[str]:
        """The states of every `finished` event of the task (exactly one when nothing is
        double-counted)."""
        events = self.store.events_since(0, limit=10_000, task_ids=[task_id])
        return [str(e.detail.get("state")) for e in events if e.kind == "finished"]

    def close(self) -> None:
        """Stops every supervisor and kills whatever the queue's tasks left running (once)."""
        if self.closed:
            return
        self.closed = True
        for host in self.hosts:
            host.stop()
            for proc in host.started:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        try:
            ids = {t.id for t in self.store.list(limit=1_000_000)}
        finally:
            self.store.close()
        kill_task_processes(ids)


def kill_task_processes(task_ids: set[str]) -> None:
    """SIGKILLs every process on the machine carrying one of the tasks' markers."""
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER) in task_ids:
                proc.kill()
        except (psutil.Error, OSError):
            continue


def tree_gone(task_id: str) -> bool:
    """True when no live process carries the task's marker."""
    return not marked_processes(task_id)


@contextmanager
def cluster(tmp_path: Path, **settings: object) -> Iterator[Cluster]:
    """A Cluster on a fresh schema; everything it started is gone afterwards."""
    with fresh_schema() as url:
        group = Cluster(url, tmp_path, **settings)
        try:
            yield group
        finally:
            group.close()


def elapsed_until(condition: object, timeout: float, what: str) -> float:
    """Seconds until `condition()` holds (polled every 10 ms), failing at `timeout`."""
    began = time.monotonic()
    wait_until(condition, timeout=timeout, interval=0.01, what=what)  # type: ignore[arg-type]
    return time.monotonic() - began


__all__ = [
    "Cluster",
    "Host",
    "cluster",
    "elapsed_until",
    "kill_task_processes",
    "tree_gone",
]
