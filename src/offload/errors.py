"""The one exception family of offload.

Every message is a single line a person understands: what was wrong and how to fix it.
Driver and provider errors are translated into these at the boundary (the Store, a
provider), so front ends only ever catch ``OffloadError``.
"""

from __future__ import annotations

__all__ = [
    "AmbiguousId",
    "ConfigError",
    "IllegalTransition",
    "InvalidInput",
    "NotFound",
    "OffloadError",
    "PolicyRefused",
    "StoreError",
    "SupervisorRunning",
    "disk_full",
    "io_error_text",
]


class OffloadError(Exception):
    """Base of every error offload reports to a user."""


class InvalidInput(OffloadError):
    """A submitted value is malformed (empty command, priority out of range, ...)."""


class NotFound(OffloadError):
    """No task matches the given id or prefix."""


class AmbiguousId(OffloadError):
    """An id prefix matches more than one task."""


class IllegalTransition(OffloadError):
    """A state change was asked for from a state that does not allow it."""


class PolicyRefused(OffloadError):
    """A command, path or environment variable is refused by policy."""


class ConfigError(OffloadError):
    """The configuration (file or ``OFFLOAD_*`` environment) is invalid."""


class SupervisorRunning(OffloadError):
    """Another supervisor already holds this data directory."""


class StoreError(OffloadError):
    """The queue database failed (disk full, unreadable file, ...)."""


def disk_full(exc: BaseException) -> bool:
    """Whether an error (an OSError or a StoreError) comes from a full disk."""
    import errno

    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, StoreError) and "disk" in str(exc) and "full" in str(exc)


def io_error_text(exc: OSError) -> str:
    """One line for an I/O error a front end meets (no traceback): what failed and the fix."""
    where = f" ({exc.filename})" if exc.filename else ""
    if disk_full(exc):
        return f"the disk is full{where}; free some space and try again"
    return f"I/O error{where}: {exc.strerror or exc}"
