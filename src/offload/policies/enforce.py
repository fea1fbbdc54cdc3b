"""Enforcing a task's stored policy: at submit, in workers, at spawn and on retry.

Every actor judges a task by the :class:`TaskPolicy` stored with it, never by the settings
of whatever process happens to run it. :func:`check_task` is the whole verdict on a task's
command and ``env``; :func:`recheck` is what a retry asks: the command must pass both the
policy stored at submit and the one in force now.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from offload.errors import ConfigError, PolicyRefused
from offload.policies.commands import Decision, check_command
from offload.policies.environment import check_env_allowed
from offload.policies.paths import resolve_inside
from offload.policies.task_policy import TaskPolicy

TYPE_CHECKING = False  # typing costs ~3 ms of every CLI call; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from offload.config import Settings
    from offload.policies.commands import CommandPolicy

__all__ = [
    "check_cwd",
    "check_env_names",
    "check_task",
    "check_task_command",
    "recheck",
    "stored_policy",
]


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


def check_task(
    task: Any,
    policy: TaskPolicy,
    *,
    data_dir: Path | str | None = None,
    own_roots: bool = True,
) -> Decision:
    """The verdict on a task's cwd, command (shell tasks) and ``env`` under `policy`.

    With `own_roots` (the policy stored with the task) the cwd is resolved again, symlinks
    followed: a directory swapped for a link after submit must not take the task out of
    its workspace. A door's policy has the door's roots, not the task's: pass False.
    """
    env = getattr(task, "env", None) or {}
    decision = check_env_names(env, policy)
    if not decision.allowed:
        return decision
    if own_roots:
        decision = check_cwd(
            getattr(task, "cwd", None),
            policy,
            data_dir=data_dir,
            workspace=getattr(task, "workspace", None),
        )
        if not decision.allowed:
            return decision
    command = getattr(task, "command", None)
    if getattr(task, "type", "shell") != "shell" or command is None:
        return Decision(allowed=True)
    return check_task_command(command, policy, cwd=getattr(task, "cwd", None), data_dir=data_dir)


def check_cwd(
    cwd: str | None,
    policy: TaskPolicy,
    *,
    data_dir: Path | str | None = None,
    workspace: str | None = None,
) -> Decision:
    """A task's cwd must still resolve inside the policy's roots (when it names any).

    Both were resolved at submit, so each must still resolve to itself: a directory on the
    way replaced by a link (by another task that may write its parent) would otherwise
    move the task, and the tree its sandbox lets it write, to the link's target.
    """
    if not cwd or not policy.roots:
        return Decision(allowed=True)
    resolved: dict[str, str] = {}  # the cwd is most often the workspace: resolved once
    for what, path in (("working directory", cwd), ("workspace", workspace)):
        if not path or not os.path.isabs(path):
            continue
        if path not in resolved:
            resolved[path] = os.path.realpath(path)
        if resolved[path] != os.path.normpath(path):
            return Decision(
                allowed=False,
                reason=f"its {what} {path} now leads to {resolved[path]}: a link "
                "replaced a directory since it was submitted; submit it again",
            )
    if data_dir is None and cwd in resolved and _lexically_inside(cwd, policy.roots):
        return Decision(allowed=True)
    forbidden = [Path(data_dir)] if data_dir is not None else []
    try:
        resolve_inside(cwd, [Path(root) for root in policy.roots], forbidden=forbidden)
    except (PolicyRefused, ConfigError) as exc:
        return Decision(allowed=False, reason=f"its working directory is refused: {exc}")
    return Decision(allowed=True)


def _lexically_inside(cwd: str, roots: Sequence[str]) -> bool:
    """True when `cwd`, which resolves to itself, lies under one of `roots` by its name.

    A path that resolves to itself has no link on its way, and neither has any of its
    prefixes: a root that is one is where its name says, so the name decides, as
    `resolve_inside` would after resolving both. /proc is never judged by its name (see
    `resolve_inside`), and a root that is relative or holds `..` takes the full check.
    """
    path = os.path.normpath(cwd)
    if path == "/proc" or path.startswith("/proc/"):
        return False
    for root in roots:
        if not os.path.isabs(root) or ".." in root.split("/"):
            continue  # `..` after a link leads elsewhere than its spelling: the full check
        root = os.path.normpath(root)
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return True
    return False


def _looser_containment(stored: TaskPolicy, current: TaskPolicy) -> str:
    """How `stored` contains a task less than `current` would ("" when it does not)."""
    if current.sandbox and not stored.sandbox:
        return "without the sandbox"
    if current.sandbox and not current.network and stored.network:
        return "with the network"
    return ""


def recheck(task: Any, current: TaskPolicy, *, data_dir: Path | str | None = None) -> Decision:
    """May `task` run again? It must pass the policy stored with it and `current`.

    A retry re-runs a command chosen earlier; a policy tightened since (or one the task
    was stored with that is stricter than the front end now) still holds. The cwd is
    judged against the task's own roots: the door that asks may work elsewhere. A door
    that sandboxes its tasks (an agent's) may not rerun one that ran with less
    containment: the agent may have rewritten what it runs, then asked for it again.
    """
    stored = stored_policy(task)
    looser = _looser_containment(stored, current) if getattr(task, "policy", None) else ""
    if looser:
        return Decision(
            allowed=False,
            reason=f"refused here: it ran {looser}, and this door runs its tasks "
            "contained; what it runs (a Makefile, a test) may have been changed since, so "
            "only a person may rerun it (offload retry ID)",
        )
    for name, policy, own in (
        ("its stored policy", stored, True),
        ("the policy now", current, False),
    ):
        decision = check_task(task, policy, data_dir=data_dir, own_roots=own)
        if not decision.allowed:
            return Decision(allowed=False, reason=f"refused by {name}: {decision.reason}")
    return Decision(allowed=True)
