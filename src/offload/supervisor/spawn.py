"""Starting one task as its own isolated OS process tree.

Shell tasks are exec'd directly (`/bin/sh -c CMD` or the argv list), with no Python
between the supervisor and the command; LLM and agent tasks run as
`python -m offload.workers <id>`. Every task gets a new session and process group,
stdin from /dev/null, stdout+stderr appended by the child itself to a 0600 log file, a
policy-built environment with the `OFFLOAD_TASK_ID` marker, rlimits, a nice value and,
where possible, its own cgroup.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from offload.policies.enforce import check_task, stored_policy
from offload.policies.environment import TASK_ID_VAR, build_task_env
from offload.policies.limits import Limits, apply_limits_to
from offload.queue.models import Task
from offload.supervisor.cgroups import CgroupRoot

__all__ = ["SpawnError", "Spawned", "shell_base_env", "spawn_task", "task_argv"]


class SpawnError(Exception):
    """The task could not be started; the message is the one-line reason stored on it."""


@dataclass
class Spawned:
    """A started task process (the main pid is also its process group id)."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    cgroup: str | None


def shell_base_env(parent_env: Mapping[str, str], env_allow: tuple[str, ...]) -> dict[str, str]:
    """The allow-listed, secret-free part of `parent_env` that shell tasks start from."""
    env = build_task_env(parent_env, {}, "-", extra_allow=env_allow)
    env.pop(TASK_ID_VAR, None)
    return env


def task_argv(task: Task) -> list[str]:
    """The argv that runs `task`."""
    if task.type != "shell":
        # -P: the task's cwd (the workspace) must not shadow modules of offload or its SDKs
        return [sys.executable, "-P", "-m", "offload.workers", task.id]
    if isinstance(task.command, list):
        return list(task.command)
    return ["/bin/sh", "-c", task.command or ""]


def _open_log(path: Path) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    except OSError as exc:
        raise SpawnError(f"cannot open the log file {path}: {exc.strerror}") from exc


def spawn_task(
    task: Task,
    *,
    logs_dir: Path,
    parent_env: Mapping[str, str],
    shell_env: Mapping[str, str],
    env_allow: tuple[str, ...],
    limits: Limits,
    cgroups: CgroupRoot | None,
) -> Spawned:
    """Starts `task` and returns its process; raises SpawnError with a one-line reason.

    `parent_env` is the supervisor's whole environment (LLM workers need the provider
    credentials in it); `shell_env` is its secret-free part from `shell_base_env`.
    """
    log_path = logs_dir / f"{task.id}.log"
    if not os.path.isdir(task.cwd):
        raise SpawnError(f"working directory {task.cwd} does not exist")
    if task.policy is not None:  # defence in depth: the policy stored at submit still holds
        decision = check_task(task, stored_policy(task))
        if not decision.allowed:
            raise SpawnError(f"refused by the task's policy: {decision.reason}")
    if task.type == "shell":
        env = build_task_env(shell_env, task.env, task.id, extra_allow=env_allow)
    else:
        # Python workers need the provider credentials (they never hand them to a shell);
        # the task's own env is for the commands it runs, never for the interpreter.
        env = {**parent_env, TASK_ID_VAR: task.id}
    cgroup_path = cgroups.create(task.id) if cgroups else None
    cgroup = str(cgroup_path) if cgroup_path else None
    log_fd = _open_log(log_path)
    try:
        with cgroups.entered(cgroup) if cgroups else nullcontext(False) as joined:
            popen = subprocess.Popen(
                task_argv(task),
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                cwd=task.cwd,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
    except FileNotFoundError as exc:
        _drop_cgroup(cgroup)
        raise SpawnError(f"command not found: {exc.filename or task_argv(task)[0]}") from exc
    except (OSError, subprocess.SubprocessError) as exc:
        _drop_cgroup(cgroup)
        raise SpawnError(f"cannot start the task: {exc}") from exc
    finally:
        os.close(log_fd)
    if cgroup and not joined:
        _drop_cgroup(cgroup)
        cgroup = None  # the process group and the marker cover this tree instead
    try:
        apply_limits_to(popen.pid, limits)
    except OSError:
        pass  # it already exited; nothing left to limit
    return Spawned(popen=popen, log_path=log_path, cgroup=cgroup)


def _drop_cgroup(cgroup: str | None) -> None:
    if cgroup:
        CgroupRoot.remove(cgroup)
