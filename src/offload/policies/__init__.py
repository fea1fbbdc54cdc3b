"""Policies: pure decisions about what a task may run, touch, inherit and use.

Commands (allow/deny regexes over every simple command, split from a ``/bin/sh`` line by
:mod:`offload.policies.shell`), workspace paths (symlinks followed, confined to the roots),
task environments (allowlist, no secrets, a marker) and resource limits. None of these
modules does I/O beyond resolving paths and, in :func:`apply_limits`, setting the limits of
the calling process.
"""

from __future__ import annotations

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
