"""Starting one task as its own isolated OS process tree.

Shell tasks are exec'd directly (`/bin/sh -c CMD` or the argv list; under a PID
namespace's init, a plain line as its words), with no Python between the supervisor and
the command; LLM and agent tasks run as `python -m offload.workers <id>`. Every task gets
a new session and process group, stdin from /dev/null, stdout+stderr appended by the child
itself to a 0600 log file, a policy-built environment with the `OFFLOAD_TASK_ID` marker,
rlimits, the nice value it is born with (the loop's: see `nice_for_tasks`) and, where
possible, its own cgroup and its own PID namespace (`pidns.py`). A task whose policy
asks for the sandbox runs under bubblewrap (`sandbox.py`). LLM and agent workers get
their provider keys over a pipe, never in their environment (`keys.py`).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from offload.policies.commands import plain_words
from offload.policies.enforce import check_task
from offload.policies.environment import TASK_ID_VAR, build_task_env
from offload.policies.limits import Limits, apply_limits_to
from offload.policies.task_policy import TaskPolicy
from offload.queue.models import Task
from offload.supervisor.cgroups import CgroupRoot
from offload.supervisor.containment import Containment
from offload.supervisor.keys import KEYS_FD_VAR, is_key_name, keys_pipe
from offload.supervisor.liveness import fork_clock, start_between
from offload.supervisor.pidns import LOG_FAILED, init_argv, limits_prelude

__all__ = [
    "SpawnError",
    "Spawned",
    "shell_base_env",
    "spawn_task",
    "task_argv",
    "why_no_log",
]


class SpawnError(Exception):
    """The task could not be started; the message is the one-line reason stored on it."""


@dataclass
class Spawned:
    """A started task process (the main pid is also its process group id)."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    cgroup: str | None
    containment: str = ""
    pid_namespace: bool = False  # the main pid is the init of the task's PID namespace
    wrapped: bool = False  # an init or bwrap runs the command: 128+N means signal N
    started: float | None = None  # the main process's start time (see `start_between`)
    log_by_init: bool = False  # the init creates the log (see `pidns.init_argv`)


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


# Shell builtins that act on the shell running them, or have no program of their own: a
# line starting with one always gets its own `/bin/sh -c` (see `_direct_words`).
_SHELL_BUILTINS = frozenset(
    ". : alias bg break cd command continue eval exec exit export fc fg getopts hash jobs "
    "local newgrp read readonly return set shift times trap type ulimit umask unalias unset "
    "wait".split()
)


def _direct_words(task: Task) -> list[str] | None:
    """A shell line the init may run as plain words, without a `/bin/sh -c` of its own.

    In a PID namespace the init is already a shell that runs the command as its child
    (`"$@"`); for a plain line (`make -j4 test`: no quoting, expansion, redirection or
    separator, see `plain_words`), `sh -c LINE` would only run the same words, so the init
    runs them itself: one exec fewer per task, the same tree, the same messages (the init
    calls itself /bin/sh too). A builtin such as `true` or `echo` runs in the init.
    """
    if task.type != "shell" or not isinstance(task.command, str):
        return None
    words = plain_words(task.command)
    if not words or words[0] in _SHELL_BUILTINS:
        return None
    return words


def _open_log(path: Path) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK
    try:  # O_NONBLOCK: a FIFO planted at the path fails the task, it does not hang the loop
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise SpawnError(f"cannot open the log file {path}: {exc.strerror}") from exc
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
        if regular:
            os.ftruncate(fd, 0)  # emptied only once it is known to be the file it should be
            os.set_blocking(fd, True)  # the task's output must not see EAGAIN
    except OSError as exc:
        os.close(fd)
        raise SpawnError(f"cannot open the log file {path}: {exc.strerror}") from exc
    if not regular:
        os.close(fd)
        raise SpawnError(f"cannot open the log file {path}: it is not a regular file")
    return fd


def why_no_log(path: Path) -> str:
    """Why a task whose init exited with LOG_FAILED has no log at `path`.

    Looked at, never opened: the path is the task's to change (it may have removed its
    own log and exited 125 itself, so the words admit both).
    """
    reason = ""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            reason = ": it is not a regular file"
    except FileNotFoundError:
        if not os.path.isdir(path.parent):
            reason = f": {path.parent} is not a directory"
        elif not os.access(path.parent, os.W_OK):
            reason = f": {path.parent} is not writable"
    except OSError as exc:
        reason = f": {exc.strerror}"
    return (
        f"cannot open the log file {path}{reason} (exit {LOG_FAILED} and no log: its init "
        "could not create it, or the command removed it)"
    )


def _describe(pidns: bool, cgroup: bool, sandbox: str, why_no_pidns: str) -> str:
    parts = ["pid-namespace" if pidns else "process-group"]
    if cgroup:
        parts.append("cgroup")
    if sandbox:
        parts.append(sandbox)
    text = "+".join(parts)
    if not pidns:
        text += f" (no PID namespace: {why_no_pidns})"
    return text


def _sandbox_prefix(task: Task, policy: TaskPolicy, box: Containment) -> tuple[list[str], str]:
    """The bwrap words for a sandboxed shell task and how to describe them.

    Raises:
        SpawnError: the task must be sandboxed, bwrap is missing and `sandbox = on`.
    """
    if not policy.sandbox or task.type != "shell":
        return [], ""  # workers sandbox the commands they run, not themselves
    if not box.sandbox.available:
        if box.require_sandbox:
            raise SpawnError(
                f"the task must run sandboxed but {box.sandbox.reason}; install bubblewrap "
                "(apt-get install bubblewrap) or set sandbox = auto to run it without"
            )
        return [], f"no sandbox: {box.sandbox.reason}"
    argv = box.sandbox.argv(
        workspace=task.workspace or task.cwd,
        cwd=task.cwd,
        writable=policy.writable,
        hide=(*box.hide, *policy.hide),
        network=policy.network,
    )
    return argv, f"sandbox(network {'on' if policy.network else 'off'})"


def _worker_keys(task: Task, keys: Mapping[str, str]) -> int | None:
    if task.type == "shell" or not keys:
        return None
    return keys_pipe(keys)


def spawn_task(
    task: Task,
    *,
    logs_dir: Path,
    parent_env: Mapping[str, str],
    shell_env: Mapping[str, str],
    env_allow: tuple[str, ...],
    limits: Limits,
    containment: Containment,
    keys: Mapping[str, str] | None = None,
) -> Spawned:
    """Starts `task` and returns its process; raises SpawnError with a one-line reason.

    `parent_env` is the supervisor's environment (without provider keys, which come in
    `keys` and reach LLM and agent workers over a pipe); `shell_env` is its allow-listed
    part from `shell_base_env`.
    """
    log_path = logs_dir / f"{task.id}.log"
    if not os.path.isdir(task.cwd):
        raise SpawnError(f"working directory {task.cwd} does not exist")
    policy = _checked_policy(task)
    prefix, sandboxed = _sandbox_prefix(task, policy, containment)
    env = _task_env(task, parent_env, shell_env, env_allow)
    cgroups = containment.cgroups
    # one per attempt: a retry must not share a cgroup the last attempt's leftovers hold
    cgroup_path = cgroups.create(f"{task.id}.{task.attempt}") if cgroups else None
    cgroup = str(cgroup_path) if cgroup_path else None
    keys_fd = _worker_keys(task, keys or {})
    if keys_fd is not None:
        env[KEYS_FD_VAR] = str(keys_fd)
    argv, direct = _command_words(task, prefix, env, cgroup, limits)
    log_fd = subprocess.DEVNULL  # an init opens the log itself (see `init_argv`)
    try:
        # The task is born with the loop's nice value (see `nice_for_tasks`).
        with containment.pidns.entered() as in_pidns:
            # A shell init joins the task's cgroup and sets its limits itself. Under the
            # sandbox bwrap is the init (a shell in front of it would cost each task an
            # exec and a cgroup move of its own) and a shell inside sets the limits; the
            # supervisor forks from inside the cgroup. Without a namespace, it also sets
            # the limits from outside.
            init = in_pidns and not prefix
            if not init:
                log_fd = _open_log(log_path)
            joining = cgroups.entered(cgroup) if cgroups and not init else nullcontext(False)
            with joining as joined:
                before = fork_clock()
                if init:
                    argv = [*init_argv(limits, cgroup, str(log_path)), *(direct or argv)]
                    joined = cgroup is not None
                popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_fd,
                    stderr=subprocess.STDOUT,
                    cwd=task.cwd,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                    pass_fds=(keys_fd,) if keys_fd is not None else (),
                )
                started = start_between(popen.pid, before, fork_clock())
    except FileNotFoundError as exc:
        _drop_cgroup(cgroup)
        raise SpawnError(f"command not found: {exc.filename or argv[0]}") from exc
    except (OSError, subprocess.SubprocessError) as exc:
        _drop_cgroup(cgroup)
        raise SpawnError(f"cannot start the task: {exc}") from exc
    except SpawnError:
        _drop_cgroup(cgroup)
        raise
    finally:
        if log_fd >= 0:
            os.close(log_fd)
        if keys_fd is not None:
            os.close(keys_fd)
    if cgroup and not joined:
        _drop_cgroup(cgroup)
        cgroup = None  # the PID namespace, process group and marker cover this tree instead
    if not (init or prefix):  # no shell of ours set the rlimits inside
        _limit_from_outside(popen.pid, limits)
    own_ns = in_pidns or bool(prefix)  # without ours, bwrap makes one (--unshare-pid)
    described = _describe(own_ns, cgroup is not None, sandboxed, containment.pidns.reason)
    return Spawned(popen, log_path, cgroup, described, in_pidns, own_ns, started, init)


def _limit_from_outside(pid: int, limits: Limits) -> None:
    try:
        apply_limits_to(pid, limits)
    except OSError:
        pass  # it already exited; nothing left to limit


def _checked_policy(task: Task) -> TaskPolicy:
    """The task's stored policy, which must still allow it (defence in depth)."""
    policy = TaskPolicy.from_json(task.policy)
    if task.policy is not None:
        decision = check_task(task, policy)
        if not decision.allowed:
            raise SpawnError(f"refused by the task's policy: {decision.reason}")
    return policy


def _task_env(
    task: Task,
    parent_env: Mapping[str, str],
    shell_env: Mapping[str, str],
    env_allow: tuple[str, ...],
) -> dict[str, str]:
    if task.type == "shell":
        return build_task_env(shell_env, task.env, task.id, extra_allow=env_allow)
    # the task's own env is for the commands a worker runs, never for the interpreter
    env = {k: v for k, v in parent_env.items() if not is_key_name(k)}
    env[TASK_ID_VAR] = task.id
    return env


def _command_words(
    task: Task, prefix: list[str], env: Mapping[str, str], cgroup: str | None, limits: Limits
) -> tuple[list[str], list[str] | None]:
    """The task's argv, and its plain words if it has some (see `_direct_words`).

    Under the sandbox (`prefix`: bwrap's words) a shell inside sets the task's limits
    before its command runs: set from outside, they would race bwrap's own fork.

    Raises:
        SpawnError: its program cannot be found.
    """
    command = task_argv(task)
    _check_program(command[0], task.cwd, env, cgroup)
    if not prefix:
        return command, _direct_words(task)
    prelude = limits_prelude(limits)
    if isinstance(task.command, str):
        return [*prefix, "/bin/sh", "-c", prelude + task.command], None
    return [*prefix, "/bin/sh", "-c", prelude + 'exec "$@"', "/bin/sh", *command], None


def _found(program: str, cwd: str, env: Mapping[str, str]) -> bool:
    """True when `program` names an executable file, as an exec from `cwd` would find it."""
    if os.sep in program:
        path = os.path.join(cwd, program)
        return os.path.isfile(path) and os.access(path, os.X_OK)
    return shutil.which(program, path=env.get("PATH", os.defpath)) is not None


def _check_program(program: str, cwd: str, env: Mapping[str, str], cgroup: str | None) -> None:
    """Refuses a program that cannot be found, as an exec would (an init would not)."""
    if not _found(program, cwd, env):
        _drop_cgroup(cgroup)
        raise SpawnError(f"command not found: {program}")


def _drop_cgroup(cgroup: str | None) -> None:
    if cgroup:
        CgroupRoot.remove(cgroup)
