"""Streamed model output shown live in the task's log (so `offload logs -f` follows it).

Text arrives in pieces; it is written a whole line at a time, so the secret masking sees
whole lines, and each line is indented under a `| ` mark, so nothing a model writes can
pass for one of offload's own progress lines (`[2/3] ...`).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["LiveText"]

PREFIX = "  | "


class LiveText:
    """Collects streamed pieces and hands `say` each finished line, prefixed."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say
        self._pending = ""

    def __call__(self, piece: str) -> None:
        """Takes one piece of streamed text."""
        self._pending += piece
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._say(PREFIX + line)

    def flush(self) -> None:
        """Writes what is left of an unfinished last line."""
        if self._pending:
            self._say(PREFIX + self._pending)
            self._pending = ""
