"""What the supervisor's loop sleeps on, and what wakes it.

One `select()` over: the wake FIFO (a front end on this host submitted or cancelled), the
signal pipe (SIGCHLD, SIGTERM, SIGINT, SIGUSR1 only set flags and write a byte there) and,
on a queue several hosts share, the queue's LISTEN socket, so a submit or a cancel on any
host wakes the supervisor at once. A LISTEN connection that breaks is dropped and opened
again later; the loop's poll covers the gap.
"""

from __future__ import annotations

import selectors
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offload.errors import OffloadError
from offload.queue.shared import SharedQueue
from offload.supervisor.signals import Flags, SignalPipe
from offload.supervisor.wake import WakeFifo

__all__ = ["CLAIM_KINDS", "Woken", "Wakeups"]

# Event kinds another host appends that may make a task claimable here.
CLAIM_KINDS = frozenset({"submitted", "retried", "finished"})
CANCEL_KIND = "cancel_requested"


@dataclass
class Woken:
    """What a wake-up may have brought: a claimable task, a cancel to carry out."""

    claim: bool = False
    cancel: bool = False

    def add(self, claim: bool, cancel: bool) -> None:
        self.claim = self.claim or claim
        self.cancel = self.cancel or cancel


class Wakeups:
    """The FIFO, the signal pipe and the queue's LISTEN socket, in one selector."""

    def __init__(self, home: Path, shared: SharedQueue | None, log: Any) -> None:
        self.home = home
        self.shared = shared
        self.log = log
        self.fifo: WakeFifo | None = None
        self._signals: SignalPipe | None = None
        self._listen_fd: int | None = None
        self._selector = selectors.DefaultSelector()

    def open(self, flags: Flags) -> None:
        """Installs the signal flags, opens the FIFO and starts listening to the queue."""
        self._signals = SignalPipe(flags)
        self._selector.register(self._signals.read_fd, selectors.EVENT_READ)
        self.open_fifo()
        self.listen()

    def open_fifo(self) -> None:
        """Opens the FIFO: from now on front ends find this supervisor running."""
        self.fifo = WakeFifo(self.home)
        self._selector.register(self.fifo.fd, selectors.EVENT_READ)

    def close_fifo(self) -> None:
        """Closes the FIFO: from now on front ends start a new supervisor."""
        if self.fifo is not None:
            self._selector.unregister(self.fifo.fd)
            self.fifo.close()
            self.fifo = None

    def listen(self) -> None:
        """Adds the queue's LISTEN socket to the select() (again, after it broke)."""
        if self.shared is None or self._listen_fd is not None:
            return
        try:
            self._listen_fd = self.shared.wake_fileno()
        except OffloadError as exc:  # the poll stands in until the next try
            self.log.error("listen_failed", error=str(exc))
            return
        self._selector.register(self._listen_fd, selectors.EVENT_READ)

    def wait(self, timeout: float) -> Woken:
        """Sleeps until poked, signalled, notified or `timeout` seconds pass.

        A poke (a front end here submitted or cancelled) may bring either; a notification
        says which: a submit, retry or finish anywhere, or a cancel asked for anywhere.
        """
        woken = Woken()
        for key, _ in self._selector.select(timeout):
            if self.fifo is not None and key.fd == self.fifo.fd:
                self.fifo.drain()
                woken.add(claim=True, cancel=True)
            elif key.fd == self._listen_fd:
                self._take_notifications(woken)
            elif self._signals is not None:
                self._signals.drain()
        return woken

    def _take_notifications(self, woken: Woken) -> None:
        assert self.shared is not None and self._listen_fd is not None
        try:
            kinds = self.shared.take_wakes()
        except OffloadError as exc:
            self.log.error("listen_lost", error=str(exc))
            self._selector.unregister(self._listen_fd)
            self._listen_fd = None
            woken.add(claim=True, cancel=True)  # something may have been missed: look
            return
        woken.add(claim=bool(kinds & CLAIM_KINDS), cancel=CANCEL_KIND in kinds)

    def restore(self) -> None:
        """Recreates a FIFO someone deleted and listens again after a broken connection."""
        if self.fifo is not None and self.fifo.replaced():
            self.log.error("fifo_restored", path=str(self.fifo.path))
            self.close_fifo()
            self.open_fifo()
        self.listen()

    def close(self) -> None:
        """Closes the FIFO, restores the signal handlers and drops the selector."""
        self.close_fifo()
        if self._signals is not None:
            self._signals.close()
            self._signals = None
        self._selector.close()
