"""How a main process's wait status becomes a task's final state."""

from __future__ import annotations

import os
import signal

from offload.queue.models import State

__all__ = ["from_status"]


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def from_status(status: int) -> tuple[State, int | None, int | None, str | None]:
    """Maps a raw wait status to (state, exit_code, signal, error).

    Exit 0 is completed; a non-zero exit or a death by signal is failed, with the code or
    the signal recorded and a one-line error a person understands.
    """
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return State.COMPLETED, 0, None, None
    if code > 0:
        return State.FAILED, code, None, f"exited with code {code}"
    return State.FAILED, None, -code, f"killed by {_signal_name(-code)}"
