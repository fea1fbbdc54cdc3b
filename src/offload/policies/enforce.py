"""Enforcing a task's stored policy: at submit, in workers, at spawn and on retry.

Every actor judges a task by the :class:`TaskPolicy` stored with it, never by the settings
of whatever process happens to run it. :func:`check_task` is the whole verdict on a task's
command and ``env``; :func:`recheck` is what a retry asks: the command must pass both the
policy stored at submit and the one in force now.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path

from offload.errors import ConfigError
from offload.policies.commands import Decision, check_command
from offload.policies.environment import check_env_allowed
from offload.policies.task_policy import TaskPolicy

TYPE_CHECKING = False  # typing costs ~3 ms of every CLI call; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from offload.config import Settings
    from offload.policies.commands import CommandPolicy

__all__ = ["check_env_names", "check_task", "check_task_command", "recheck", "stored_policy"]


def stored_policy(task: Any, settings: Settings | None = None) -> TaskPolicy:
    """The policy stored with `task` (a Task or TaskSpec).

    A task stored before policies travelled with tasks has none: with `settings` it gets
    their policy over its workspace (what judged it then), else the open policy.
    """
    data = getattr(task, "policy", None)
    if data is None and settings is not None:
        return TaskPolicy.from_settings(settings, [getattr(task, "workspace", "") or "."])
    return TaskPolicy.from_json(data)


def check_task_command(
    command: str | Sequence[str],
    policy: TaskPolicy,
    *,
    cwd: Path | str | None = None,
    data_dir: Path | str | None = None,
    roots: Sequence[Path | str] | None = None,
) -> Decision:
    """Judge one command line under `policy` (every allow layer, deny, redirections).

    `roots` overrides where redirections may point (an agent's staging copy). Never
    raises: a stored pattern that no longer compiles refuses.
    """
    try:
        compiled = _compiled(
            policy,
            (data_dir,) if data_dir is not None else (),
            None if roots is None else tuple(roots),
        )
    except ConfigError as exc:
        return Decision(allowed=False, reason=f"the task's stored policy is invalid: {exc}")
    return check_command(command, compiled, cwd=cwd)


@functools.lru_cache(maxsize=64)
def _compiled(
    policy: TaskPolicy,
    forbidden: tuple[Path | str, ...],
    roots: tuple[Path | str, ...] | None,
) -> CommandPolicy:
    """The compiled rules of `policy`, once per policy: a batch of a thousand tasks shares one."""
    return policy.command_policy(forbidden=forbidden, roots=roots)


def check_env_names(env: Mapping[str, str], policy: TaskPolicy) -> Decision:
    """Under an allow list, every task ``env`` name must be on the env allow list."""
    if not policy.has_allow_list:
        return Decision(allowed=True)
    reason = check_env_allowed(env, policy.env_allow)
    return Decision(allowed=False, reason=reason) if reason else Decision(allowed=True)


def check_task(task: Any, policy: TaskPolicy, *, data_dir: Path | str | None = None) -> Decision:
    """The verdict on a task's command (shell tasks) and ``env`` under `policy`."""
    env = getattr(task, "env", None) or {}
    decision = check_env_names(env, policy)
    if not decision.allowed:
        return decision
    command = getattr(task, "command", None)
    if getattr(task, "type", "shell") != "shell" or command is None:
        return Decision(allowed=True)
    return check_task_command(command, policy, cwd=getattr(task, "cwd", None), data_dir=data_dir)


def recheck(task: Any, current: TaskPolicy, *, data_dir: Path | str | None = None) -> Decision:
    """May `task` run again? It must pass the policy stored with it and `current`.

    A retry re-runs a command chosen earlier; a policy tightened since (or one the task
    was stored with that is stricter than the front end now) still holds.
    """
    for name, policy in (("its stored policy", stored_policy(task)), ("the policy now", current)):
        decision = check_task(task, policy, data_dir=data_dir)
        if not decision.allowed:
            return Decision(allowed=False, reason=f"refused by {name}: {decision.reason}")
    return Decision(allowed=True)
