"""Resource limits and the range checks on a task's scheduling fields.

:class:`Limits` says what a task process may use (address space, CPU seconds, open files,
no core dumps) and how nicely it yields to the person at the keyboard;
:func:`apply_limits` puts them in place inside the freshly forked child, before exec.
The ``check_*`` functions validate what a submitter sets, with messages that say the
allowed range.
"""

from __future__ import annotations

import math
import os
import re

from offload.errors import ConfigError, InvalidInput
from offload.records import record

__all__ = [
    "GROUP_RE",
    "MAX_NICE",
    "MAX_PRIORITY",
    "MAX_TIMEOUT_SECONDS",
    "MIN_PRIORITY",
    "Limits",
    "apply_limits",
    "apply_limits_to",
    "check_group",
    "check_priority",
    "check_timeout",
    "inheritable_soft_limits",
    "nice_for_tasks",
]

MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
MIN_PRIORITY = 1
MAX_PRIORITY = 10
MAX_NICE = 19
GROUP_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

# `resource` is imported where limits are put in place, not here: `offload submit` checks
# timeouts and groups through this module, and loading the extension costs it ~1 ms.


@record
class Limits:
    """What one task process may use; ``None`` leaves a limit as the supervisor has it.

    Attributes:
        address_space_bytes: ``RLIMIT_AS``: virtual memory, so a runaway task fails to
            allocate instead of pushing the machine into swap.
        cpu_seconds: ``RLIMIT_CPU``: CPU time before the kernel sends SIGXCPU, then SIGKILL.
        open_files: ``RLIMIT_NOFILE``.
        core_bytes: ``RLIMIT_CORE``; 0 so a crash does not leave a core file in the workspace.
        nice: Added to the task's nice value (0-19) so background work yields.

    Raises:
        ConfigError: A limit is not a positive integer (``core_bytes`` may be 0), or ``nice``
            is outside 0-19.
    """

    address_space_bytes: int | None = None
    cpu_seconds: int | None = None
    open_files: int | None = 4096
    core_bytes: int = 0
    nice: int = 5

    def __post_init__(self) -> None:
        for name in ("address_space_bytes", "cpu_seconds", "open_files"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ConfigError(f"limit {name} must be a positive integer or None, not {value!r}")
        if not _is_int(self.core_bytes) or self.core_bytes < 0:
            raise ConfigError(f"limit core_bytes must be 0 or more, not {self.core_bytes!r}")
        if not _is_int(self.nice) or not 0 <= self.nice <= MAX_NICE:
            raise ConfigError(f"nice must be 0-{MAX_NICE}, not {self.nice!r}")

    def rlimits(self) -> list[tuple[int, tuple[int, int]]]:
        """The ``(resource.RLIMIT_*, (soft, hard))`` pairs to set; unset limits are left out.

        Pure: the wanted values, before :func:`apply_limits` clamps them to the limits the
        process already has (a hard limit can only be lowered).
        """
        import resource

        wanted = [
            # RLIMIT_AS is missing on some platforms; a limit that cannot be expressed is skipped
            (getattr(resource, "RLIMIT_AS", None), self.address_space_bytes),
            (resource.RLIMIT_CPU, self.cpu_seconds),
            (resource.RLIMIT_NOFILE, self.open_files),
            (resource.RLIMIT_CORE, self.core_bytes),
        ]
        return [
            (res, (value, value)) for res, value in wanted if res is not None and value is not None
        ]


def apply_limits(limits: Limits) -> None:
    """Put ``limits`` in place in the current process; meant for a forked child before exec.

    Each limit is clamped to the current hard limit (which is never raised), then the nice
    value is increased. Kept to a few system calls: it runs between fork and exec.

    Raises:
        OSError: The kernel refused a limit or the nice value (reported by subprocess as a
            failure to start the task).
    """
    import resource

    for res, (soft, hard) in limits.rlimits():
        _, current_hard = resource.getrlimit(res)
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
            soft = min(soft, hard)
        resource.setrlimit(res, (soft, hard))
    if limits.nice > 0:
        os.nice(limits.nice)


def check_timeout(value: float | None) -> float | None:
    """Validate ``timeout_seconds``: ``None`` (no timeout) or more than 0 and at most 7 days.

    Raises:
        InvalidInput: Not a number, not finite, or out of range; the message gives the range.
    """
    if value is None:
        return None
    problem = f"timeout_seconds must be more than 0 and at most {MAX_TIMEOUT_SECONDS} (7 days)"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{problem}, got {value!r}")
    try:
        seconds = float(value)
    except OverflowError:
        raise InvalidInput(f"{problem}, got {value!r}") from None
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT_SECONDS):
        raise InvalidInput(f"{problem}, got {value!r}")
    return seconds


def check_priority(value: int) -> int:
    """Validate a priority: an integer 1-10, where 1 runs first.

    Raises:
        InvalidInput: Not an integer in range.
    """
    if not _is_int(value) or not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise InvalidInput(
            f"priority must be {MIN_PRIORITY}-{MAX_PRIORITY} (1 runs first), got {value!r}"
        )
    return value


def check_group(name: str | None) -> str | None:
    """Validate a concurrency group name; ``None`` means no group.

    Raises:
        InvalidInput: The name breaks :data:`GROUP_RE` (1-64 characters, letters, digits,
            ``.``, ``_`` or ``-``, starting with a letter or digit).
    """
    if name is None:
        return None
    if not isinstance(name, str) or not re.fullmatch(GROUP_RE, name):
        raise InvalidInput(
            f"group {name!r} is invalid: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def apply_limits_to(pid: int, limits: Limits) -> None:
    """Put the rlimits of ``limits`` on an already started process.

    The supervisor spawns without running Python in the child (so the fork is a fast
    vfork). A task with its own PID namespace has an init that sets its rlimits before
    the command starts, and needs none of this; otherwise they are applied from outside.
    Limits that would only matter for processes the task forks in its first microseconds
    are also set on the supervisor itself (see ``inheritable_soft_limits``), and tasks are
    born with their nice value (see ``nice_for_tasks``).

    Raises:
        OSError: The kernel refused a limit (the process may already be gone).
    """
    import resource

    for res, (soft, hard) in limits.rlimits():
        _, current_hard = resource.prlimit(pid, res)
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
            soft = min(soft, hard)
        resource.prlimit(pid, res, (soft, hard))


def nice_for_tasks(limits: Limits) -> int:
    """Gives the calling thread the tasks' nice value, unless its own is higher; returns it.

    A child is born with the nice value of the thread that forks it, so every task the
    supervisor's loop starts is born niced, with nothing done per task: a `setpriority` on
    each task from outside waits while bwrap sets up a sandbox (~1.2 ms), and lowering the
    loop's own priority around each fork gave the CPU away in the middle of a spawn. The
    loop runs at its tasks' priority, as the background work it is. Raising one's own nice
    value needs no privilege.
    """
    own = os.getpriority(os.PRIO_PROCESS, 0)
    if own < limits.nice:
        os.setpriority(os.PRIO_PROCESS, 0, limits.nice)
        own = limits.nice
    return own


def inheritable_soft_limits(limits: Limits) -> None:
    """Lowers this process's own soft limits for open files and core size.

    Children inherit them at fork, so a task can never start above them; the hard limits
    stay, so the supervisor could raise them again. CPU and address-space limits are not
    set here: they would apply to the supervisor's own long life.
    """
    import resource

    for res, value in ((resource.RLIMIT_NOFILE, limits.open_files), (resource.RLIMIT_CORE, 0)):
        if value is None:
            continue
        _, hard = resource.getrlimit(res)
        soft = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(res, (soft, hard))
