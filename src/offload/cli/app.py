"""What every `offload` command shares: exit codes, durations, and the App holding the desk."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from offload.errors import InvalidInput

TYPE_CHECKING = False  # typing costs ~3 ms of every CLI call; mypy reads this as True
if TYPE_CHECKING:
    from offload.config import Settings
    from offload.desk import Desk

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "App",
    "UsageError",
    "note",
    "parse_duration",
    "require_cwd",
]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


class UsageError(InvalidInput):
    """The command line itself is wrong (exit 2), as opposed to a refused request."""


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION_SECONDS = 1e12  # ~31,700 years: beyond it a duration is a typo


def parse_duration(text: str) -> float:
    """Seconds in `90`, `45s`, `30m`, `12h`, `7d` or `2w`; InvalidInput otherwise."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:], None)
    number = value[:-1] if unit else value
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise InvalidInput(
            f"'{text}' is not a duration; use e.g. 90, 45s, 30m, 12h or 7d"
        ) from None
    if not 0 <= seconds < MAX_DURATION_SECONDS:  # also refuses NaN and infinity
        raise InvalidInput(
            f"'{text}' is not a duration in range: it must be at least 0 and under "
            f"{MAX_DURATION_SECONDS:,.0f} seconds (~31,700 years)"
        )
    return seconds


def require_cwd() -> Path:
    """The current directory, or InvalidInput when it was deleted under the shell."""
    try:
        return Path.cwd()
    except FileNotFoundError:
        raise InvalidInput("the current directory no longer exists; cd somewhere else") from None


class App:
    """What every command needs: the settings and a desk that sees every workspace.

    The desk (and with it the store) opens on first use, so `--help`-like paths and
    commands that fail on their arguments never touch the database.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._desk: Desk | None = None

    @property
    def desk(self) -> Desk:
        """The service layer, submitting from the current directory."""
        if self._desk is None:
            from offload.desk import open_desk

            try:
                here: Path = Path.cwd()
            except FileNotFoundError:
                here = self.settings.home  # reads still work; submit refuses (see _cwd)
            self._desk = open_desk(
                self.settings, workspace=here, confined=False, environ=os.environ
            )
            self._desk.note = note
        return self._desk


def note(text: str) -> None:
    sys.stderr.write(f"offload: {text}\n")


# -- submit ---------------------------------------------------------------------------------
