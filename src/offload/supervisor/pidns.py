"""A PID namespace per task (Linux): the net no process of a task can climb out of.

A process can leave a cgroup (root can write any `cgroup.procs`), a session or a process
group, and drop its `OFFLOAD_TASK_ID` marker; it can never leave its PID namespace. When a
namespace's init dies the kernel SIGKILLs everything else in it, so killing one pid ends a
task's whole tree, whatever it did.

The namespace is made in the supervisor's own fork path: the supervisor
calls `unshare(CLONE_NEWPID)` (its own pid stays; only its *next* child is born into a new
namespace, as pid 1), forks the task, and points its children back at its own namespace
with `setns`. That costs two system calls, no extra exec. Pid 1 of a namespace is special:
signals it has no handler for are dropped, and orphans re-parent to it. So the task's
command never is pid 1: a shell init (`/bin/sh -c '"$@"; exit $?'`) is, and runs the
command as its child (a plain line as its words, without a `sh -c` of their own; a builtin
such as `true` or `echo` runs in the init itself and is done at once). Before it runs the
command the init joins the task's cgroup, opens the task's log and sets the task's rlimits
on itself, so the command and everything it forks start inside both. When the command
exits the init exits with its status (a death by signal N becomes exit status 128+N, as in
every shell; `wrapped_status` undoes that), and the kernel then kills whatever the command
left behind.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from offload.policies.limits import Limits

_RLIMIT_AS: int | None = getattr(resource, "RLIMIT_AS", None)

__all__ = [
    "INIT_ARGV",
    "LOG_FAILED",
    "PidNamespaces",
    "init_argv",
    "limits_prelude",
    "namespace_of",
    "probe_pid_namespaces",
    "wrapped_status",
]

CLONE_NEWPID = 0x20000000
# "$@" must not be the last word: a shell execs its last command, which would make the
# task's command pid 1 again. The init's $0 is /bin/sh, so the shell's own messages ("not
# found", "Permission denied") read as they would from `/bin/sh -c CMD`.
INIT_ARGV = ("/bin/sh", "-c", '"$@"; exit $?', "/bin/sh")
# The init's exit status when it could not create the task's log (see `init_argv`).
LOG_FAILED = 125


def init_argv(
    limits: Limits | None = None, cgroup: str | None = None, log: str | None = None
) -> list[str]:
    """The init's words: it joins the task's cgroup, opens its log, sets the limits, runs "$@".

    The init does this itself, before the command's first instruction, so the supervisor
    neither moves itself in and out of the cgroup around the fork nor `prlimit`s a process
    that may already be forking: both cost the supervisor's loop time on every task, and a
    limit set from outside can come after the command's first fork.

    With `log`, the init also creates the log (0600, opened for appending and emptied, as
    the supervisor would) and sends its stdout and stderr there. Creating a file is
    the one step of a spawn that waits on the file system: a slow disk or a network home
    directory then slows the task, not the supervisor's loop, which meanwhile keeps
    claiming, reaping and killing. If the log cannot be created the init exits with
    `LOG_FAILED` before the command runs, and the supervisor says why.
    """
    prelude = ""
    if cgroup is not None:  # a failed join leaves the namespace, group and marker nets
        prelude += f"echo 0 >{_quoted(os.path.join(cgroup, 'cgroup.procs'))} 2>/dev/null; "
    if log is not None:
        # One open of the path (`command`: a failed redirection returns, it does not exit
        # the shell); then the file it opened is checked (a FIFO or device planted there
        # is refused) and emptied through /proc/self/fd, never through the path again.
        prelude += (
            f"umask 077; command exec >>{_quoted(os.path.abspath(log))} 2>&1 || exit "
            f"{LOG_FAILED}; [ -f /proc/self/fd/1 ] || exit {LOG_FAILED}; "
            f": >/proc/self/fd/1; umask {_own_umask():03o}; "
        )
    prelude += limits_prelude(limits)
    return [INIT_ARGV[0], INIT_ARGV[1], prelude + INIT_ARGV[2], INIT_ARGV[3]]


@functools.cache
def _own_umask() -> int:
    """The supervisor's umask, which its tasks inherit (read once: nothing here sets it)."""
    current = os.umask(0o077)
    os.umask(current)
    return current


def limits_prelude(limits: Limits | None) -> str:
    """Shell words that put `limits` (soft = hard) on the shell that runs them.

    Everything that shell starts inherits them; a command without CAP_SYS_RESOURCE can
    never raise a hard limit again. They fail closed: a limit that cannot be set ends the
    task (exit 126, the shell's message in its log) before its command runs. Nothing in
    them depends on the task's view of the filesystem (no `2>/dev/null`: under the
    sandbox an earlier task could have hidden /dev, and the limits would have been
    skipped).
    """
    if limits is None:
        return ""
    return "".join(f"ulimit -{flag} {value} || exit 126; " for flag, value in _ulimits(limits))


def _ulimits(limits: Limits) -> list[tuple[str, int]]:
    """`ulimit` flags and values (soft = hard), each clamped to the hard limit we have.

    A limit never rises above what the supervisor itself was given (root could raise it).
    """
    wanted = [
        ("v", _RLIMIT_AS, limits.address_space_bytes, 1024),  # ulimit -v counts KiB
        ("t", resource.RLIMIT_CPU, limits.cpu_seconds, 1),
        ("n", resource.RLIMIT_NOFILE, limits.open_files, 1),
        ("c", resource.RLIMIT_CORE, limits.core_bytes, 512),  # ulimit -c counts 512 B blocks
    ]
    found = []
    for flag, res, value, unit in wanted:
        if res is None or value is None:
            continue
        _, hard = resource.getrlimit(res)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        found.append((flag, value // unit))
    return found


def _quoted(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


_MAX_SIGNAL = 64


@dataclass
class PidNamespaces:
    """Whether the supervisor can give each task its own PID namespace, and why not."""

    available: bool
    reason: str = ""
    _own_fd: int = -1

    @contextmanager
    def entered(self) -> Iterator[bool]:
        """Makes the next child the init of a new PID namespace; yields whether it will be.

        Only the fork inside the `with` block may happen there: a second child would join
        the same namespace.
        """
        if not self.available:
            yield False
            return
        if _libc().unshare(CLONE_NEWPID) != 0:
            self.reason = _why(ctypes.get_errno())  # shown for this task; the next one retries
            yield False
            return
        try:
            yield True
        finally:
            if _libc().setns(self._own_fd, CLONE_NEWPID) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"cannot return to the supervisor's PID namespace: {err}")

    def close(self) -> None:
        """Releases the handle on the supervisor's own namespace."""
        if self._own_fd >= 0:
            os.close(self._own_fd)
            self._own_fd = -1
        self.available = False


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def _why(err: int) -> str:
    if err in (errno.EPERM, errno.EACCES):
        return "not permitted (the supervisor needs root or CAP_SYS_ADMIN)"
    if err == errno.EINVAL:
        return "the kernel has no PID namespaces"
    if err == errno.ENOSPC:
        return "the PID namespace limit is reached (user.max_pid_namespaces)"
    return os.strerror(err)


def probe_pid_namespaces() -> PidNamespaces:
    """Finds out once, at supervisor start, whether per-task PID namespaces work here."""
    if not sys.platform.startswith("linux"):
        return PidNamespaces(False, f"{sys.platform} has no PID namespaces")
    try:
        own_fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return PidNamespaces(False, f"cannot open /proc/self/ns/pid: {exc.strerror}")
    libc = _libc()
    tried = _try_in_child(own_fd)
    if tried is not None:
        os.close(own_fd)
        return PidNamespaces(False, tried)
    if libc.unshare(CLONE_NEWPID) != 0:
        os.close(own_fd)
        return PidNamespaces(False, _why(ctypes.get_errno()))
    if libc.setns(own_fd, CLONE_NEWPID) != 0:
        err = ctypes.get_errno()
        os.close(own_fd)
        return PidNamespaces(False, f"setns back failed: {os.strerror(err)}")
    return PidNamespaces(True, "", own_fd)


_SETNS_FAILED = 255


def _try_in_child(own_fd: int) -> str | None:
    """The round trip (into a new namespace for children, then back) in a throwaway child.

    Where `unshare` works but `setns` back does not (root of a user namespace), trying it
    in the supervisor itself would leave its next child the init of a namespace that
    dies with it, and every fork after that would fail. Returns why not, or None.
    """
    pid = os.fork()
    if pid == 0:  # the child: system calls only, then out without Python's teardown
        code = 0
        if _libc().unshare(CLONE_NEWPID) != 0:
            code = min(ctypes.get_errno(), _SETNS_FAILED - 1) or 1
        elif _libc().setns(own_fd, CLONE_NEWPID) != 0:
            code = _SETNS_FAILED
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return None
    if code == _SETNS_FAILED:
        return "setns back to the supervisor's namespace is not permitted (a user namespace?)"
    return _why(code) if code > 0 else f"the probe died of signal {-code}"


def wrapped_status(status: int) -> int:
    """The raw wait status of the command, from the raw status of the init that ran it.

    The init exits 128+N when the command died of signal N (the shell convention), so a
    command that itself exits with such a code reads as that signal: an ambiguity every
    shell has.
    """
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        if 128 < code <= 128 + _MAX_SIGNAL:
            return code - 128  # a raw status whose low bits are the signal: "killed by N"
    return status


def namespace_of(pid: int) -> str | None:
    """The PID namespace `pid` lives in (e.g. 'pid:[4026532]'), or None if it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None
