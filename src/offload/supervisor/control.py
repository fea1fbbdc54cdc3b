"""`offload supervisor [run|stop]`: run one in the foreground, or stop it.

`supervisor status` is rendered by the CLI (`offload.cli.status`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from offload.config import Settings
from offload.errors import OffloadError, SupervisorRunning
from offload.queue.store import Store
from offload.supervisor.wake import poke, supervisor_pid

__all__ = ["run"]

_POLL_SECONDS = 0.05


def _run(settings: Settings, store: Store, detached: bool) -> int:
    from offload.logging import configure_logging, get_logger
    from offload.supervisor.daemon import Supervisor
    from offload.supervisor.keys import make_undumpable, take_keys

    # Before anything else: the keys leave our environment (and the block /proc shows),
    # and no peer process may read our memory.
    keys = take_keys()
    undumpable = make_undumpable()
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    configure_logging(settings.home / "supervisor.log" if detached else None, json=detached)
    get_logger("supervisor").info("keys_held", keys=len(keys), undumpable=undumpable)
    supervisor = Supervisor(settings, store, detached=detached, keys=keys)
    try:
        return supervisor.run()
    except SupervisorRunning:
        if detached:
            return 0  # another front end started one a moment earlier: that one serves
        raise


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
    """Dispatches the `supervisor` sub-command (run or stop)."""
    if args.action == "stop":
        return _stop(settings, args.drain, args.timeout)
    return _run(settings, store, args.detached)
