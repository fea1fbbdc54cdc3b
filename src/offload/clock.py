"""The wall clock as offload records it: UTC milliseconds since the epoch.

One function, so every backend, front end and the supervisor stamp time the same way and
tests can pass their own clock wherever time is an input.
"""

from __future__ import annotations

import time

__all__ = ["now_ms"]


def now_ms() -> int:
    """The current time in whole milliseconds since the Unix epoch (UTC)."""
    return time.time_ns() // 1_000_000
