"""`offload supervisor [run|stop]`: run one in the foreground, or stop it.

`supervisor status` is rendered by the CLI (`offload.cli.status`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time

from offload.config import Settings
from offload.errors import OffloadError, SupervisorRunning
from offload.queue.store import Store
from offload.supervisor.wake import poke, request_stop

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
    """Stops the data dir's supervisor, and one that takes over while it stops.

    An on-demand supervisor started a moment after another one waits for its lock (see
    `SupervisorLock.acquire`). It finds the stop noted (`request_stop`) and exits once it
    has the lock; one that took over before it looked is stopped here too.
    """
    from offload.supervisor.liveness import lock_holders

    stopped: list[int] = []
    sig = signal.SIGUSR1 if drain else signal.SIGTERM
    with contextlib.suppress(OSError):  # the note is best effort; the signal is what stops
        request_stop(settings.home)
    deadline = time.monotonic() + timeout
    while poke(settings.home):
        for pid in lock_holders(settings.home):
            if pid in stopped:
                continue
            try:
                os.kill(pid, sig)
                os.kill(pid, signal.SIGCONT)  # a stopped (SIGSTOP) supervisor acts on it only now
            except ProcessLookupError:
                pass  # gone already; the loop looks again
            except PermissionError:
                raise OffloadError(
                    f"the supervisor (pid {pid}) runs as another user; stop it as that user "
                    f"(e.g. sudo offload supervisor stop, with OFFLOAD_HOME={settings.home})"
                ) from None
            stopped.append(pid)
        if time.monotonic() >= deadline:
            who = f"the supervisor (pid {stopped[-1]})" if stopped else "a supervisor"
            raise OffloadError(
                f"{who} is still running after {timeout:g} s; running tasks may still be "
                "finishing (try again, or stop without --drain)"
            )
        time.sleep(_POLL_SECONDS)  # waiting for the FIFO reader to go away
    if not stopped:
        sys.stdout.write("no supervisor running\n")
        return 0
    took_over = "".join(f", then pid {pid}, which took over" for pid in stopped[1:])
    sys.stdout.write(f"supervisor (pid {stopped[0]}{took_over}) stopped\n")
    return 0


def run(settings: Settings, store: Store, args: argparse.Namespace) -> int:
    """Dispatches the `supervisor` sub-command (run or stop)."""
    if args.action == "stop":
        return _stop(settings, args.drain, args.timeout)
    return _run(settings, store, args.detached)
