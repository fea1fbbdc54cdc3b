"""`offload supervisor [run|status|stop]`: run one in the foreground, inspect it, stop it."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from offload.clock import now_ms
from offload.config import Settings
from offload.errors import OffloadError, SupervisorRunning
from offload.queue.models import State
from offload.queue.store import Store
from offload.supervisor.wake import poke, supervisor_pid

__all__ = ["run"]

_POLL_SECONDS = 0.05


def _run(settings: Settings, store: Store, detached: bool) -> int:
    from offload.logging import configure_logging
    from offload.supervisor.daemon import Supervisor

    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    configure_logging(settings.home / "supervisor.log" if detached else None, json=detached)
    supervisor = Supervisor(settings, store, detached=detached)
    try:
        return supervisor.run()
    except SupervisorRunning:
        if detached:
            return 0  # another front end started one a moment earlier: that one serves
        raise


def _status(settings: Settings, store: Store, as_json: bool) -> int:
    from offload.supervisor.liveness import supervisor_state

    found = supervisor_state(settings.home, store)
    info = store.supervisor_info() or {}
    by_state = store.stats(now_ms(), days=1).counts  # one GROUP BY, however many tasks
    counts = {s.value: by_state.get(s.value, 0) for s in (State.PENDING, State.RUNNING)}
    if as_json:
        from offload.cli.render import print_json

        print_json(
            {
                "running": found.state == "running",
                "state": found.state,
                "pid": found.pid if found.alive else None,
                "heartbeat_ms": info.get("at"),
                **counts,
            }
        )
    elif found.alive:
        what = "running" if found.state == "running" else "stopped (SIGSTOP: it runs nothing)"
        sys.stdout.write(
            f"supervisor {what} (pid {found.pid}); {counts['running']} running, "
            f"{counts['pending']} pending\n"
        )
        if found.state == "stopped":
            sys.stdout.write(f"`kill -CONT {found.pid}` resumes it\n")
    else:
        dead = f" (pid {found.pid} died)" if found.state == "dead" else ""
        sys.stdout.write(f"no supervisor running for {settings.home}{dead}\n")
    return 0 if found.state == "running" else 3


def _stop(settings: Settings, drain: bool, timeout: float) -> int:
    pid = supervisor_pid(settings.home)
    if not poke(settings.home) or pid is None:
        sys.stdout.write("no supervisor running\n")
        return 0
    try:
        os.kill(pid, signal.SIGUSR1 if drain else signal.SIGTERM)
        os.kill(pid, signal.SIGCONT)  # a stopped (SIGSTOP) supervisor acts on it only now
    except ProcessLookupError:
        sys.stdout.write("no supervisor running\n")
        return 0
    deadline = time.monotonic() + timeout
    while poke(settings.home):
        if time.monotonic() >= deadline:
            raise OffloadError(
                f"the supervisor (pid {pid}) is still running after {timeout:g} s; "
                "running tasks may still be finishing (try again, or stop without --drain)"
            )
        time.sleep(_POLL_SECONDS)  # waiting for the FIFO reader to go away
    sys.stdout.write(f"supervisor (pid {pid}) stopped\n")
    return 0


def run(settings: Settings, store: Store, args: argparse.Namespace) -> int:
    """Dispatches the `supervisor` sub-command."""
    if args.action == "status":
        return _status(settings, store, args.json)
    if args.action == "stop":
        return _stop(settings, args.drain, args.timeout)
    return _run(settings, store, args.detached)
