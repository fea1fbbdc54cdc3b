"""Policies: pure decisions about what a task may run, touch, inherit and use.

Commands (allow/deny regexes over every simple command, split from a ``/bin/sh`` line by
:mod:`offload.policies.shell`), workspace paths (symlinks followed, confined to the roots),
task environments (allowlist, no secrets, a marker) and resource limits. None of these
modules does I/O beyond resolving paths and, in :func:`apply_limits`, setting the limits of
the calling process.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing costs ~3 ms of every CLI call; mypy reads this as True
if TYPE_CHECKING:
    from offload.policies.commands import (
        CommandPolicy,
        Decision,
        check_command,
        compile_policy,
        parse_pattern_list,
    )
    from offload.policies.environment import (
        DEFAULT_PATH,
        ENV_ALLOWLIST,
        MAX_ENV_ENTRIES,
        MAX_ENV_VALUE_BYTES,
        SECRET_PATTERNS,
        TASK_ID_VAR,
        build_task_env,
        check_task_env,
        is_secret_name,
    )
    from offload.policies.limits import (
        GROUP_RE,
        MAX_NICE,
        MAX_PRIORITY,
        MAX_TIMEOUT_SECONDS,
        MIN_PRIORITY,
        Limits,
        apply_limits,
        check_group,
        check_priority,
        check_timeout,
    )
    from offload.policies.paths import is_inside, resolve_inside
    from offload.policies.shell import split_simple_commands

# Each name is imported from its module on first use: `offload submit` needs a few of
# these modules, and importing the package must not load the shell parser for it.
_HOMES = {
    "CommandPolicy": "offload.policies.commands",
    "DEFAULT_PATH": "offload.policies.environment",
    "Decision": "offload.policies.commands",
    "ENV_ALLOWLIST": "offload.policies.environment",
    "GROUP_RE": "offload.policies.limits",
    "Limits": "offload.policies.limits",
    "MAX_ENV_ENTRIES": "offload.policies.environment",
    "MAX_ENV_VALUE_BYTES": "offload.policies.environment",
    "MAX_NICE": "offload.policies.limits",
    "MAX_PRIORITY": "offload.policies.limits",
    "MAX_TIMEOUT_SECONDS": "offload.policies.limits",
    "MIN_PRIORITY": "offload.policies.limits",
    "SECRET_PATTERNS": "offload.policies.environment",
    "TASK_ID_VAR": "offload.policies.environment",
    "apply_limits": "offload.policies.limits",
    "build_task_env": "offload.policies.environment",
    "check_command": "offload.policies.commands",
    "check_group": "offload.policies.limits",
    "check_priority": "offload.policies.limits",
    "check_task_env": "offload.policies.environment",
    "check_timeout": "offload.policies.limits",
    "compile_policy": "offload.policies.commands",
    "is_inside": "offload.policies.paths",
    "is_secret_name": "offload.policies.environment",
    "parse_pattern_list": "offload.policies.commands",
    "resolve_inside": "offload.policies.paths",
    "split_simple_commands": "offload.policies.shell",
}


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    __import__(_HOMES[name])
    return getattr(sys.modules[_HOMES[name]], name)


__all__ = [
    "DEFAULT_PATH",
    "ENV_ALLOWLIST",
    "GROUP_RE",
    "MAX_ENV_ENTRIES",
    "MAX_ENV_VALUE_BYTES",
    "MAX_NICE",
    "MAX_PRIORITY",
    "MAX_TIMEOUT_SECONDS",
    "MIN_PRIORITY",
    "SECRET_PATTERNS",
    "TASK_ID_VAR",
    "CommandPolicy",
    "Decision",
    "Limits",
    "apply_limits",
    "build_task_env",
    "check_command",
    "check_group",
    "check_priority",
    "check_task_env",
    "check_timeout",
    "compile_policy",
    "is_inside",
    "is_secret_name",
    "parse_pattern_list",
    "resolve_inside",
    "split_simple_commands",
]
