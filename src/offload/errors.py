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
    "LeaseLost",
    "NotFound",
    "OffloadError",
    "PolicyRefused",
    "StoreError",
    "SupervisorRunning",
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


class LeaseLost(IllegalTransition):
    """A supervisor's write about a task was refused: it no longer owns the task (fencing)."""
