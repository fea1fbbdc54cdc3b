"""The supervisor's process-level plumbing: subreaper status and signal flags.

Signal handlers only set flags (and, through `set_wakeup_fd`, wake the `select()`); the
loop acts on them.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from types import FrameType
from typing import Any

__all__ = ["Flags", "SignalPipe", "become_subreaper"]

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Makes orphaned grandchildren re-parent to us instead of init (Linux only)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


@dataclass
class Flags:
    """What the signal handlers asked for."""

    stop: bool = False  # SIGTERM / SIGINT: interrupt running tasks and exit
    drain: bool = False  # SIGUSR1: stop claiming, exit when running tasks are done


class SignalPipe:
    """Installs the flag-setting handlers and a wake-up pipe; restores both on close."""

    def __init__(self, flags: Flags) -> None:
        self.read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)

        def on_child(signum: int, frame: FrameType | None) -> None:
            pass  # the wake-up byte is the point: the loop reaps

        def on_stop(signum: int, frame: FrameType | None) -> None:
            flags.stop = True

        def on_drain(signum: int, frame: FrameType | None) -> None:
            flags.drain = True

        handlers = {
            signal.SIGCHLD: on_child,
            signal.SIGTERM: on_stop,
            signal.SIGINT: on_stop,
            signal.SIGUSR1: on_drain,
        }
        self._old: dict[int, Any] = {sig: signal.signal(sig, fn) for sig, fn in handlers.items()}

    def drain(self) -> None:
        """Empties the pipe after a wake-up."""
        try:
            while os.read(self.read_fd, 512):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Puts the previous handlers back and closes the pipe."""
        for sig, old in self._old.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(-1)
        os.close(self.read_fd)
        os.close(self._write_fd)
