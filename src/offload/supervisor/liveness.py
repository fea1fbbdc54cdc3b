"""Is anybody running this data dir's tasks? The supervisor's liveness, told by pid and start time.

A lock file and a FIFO can be deleted while their supervisor runs, and a pid can be reused
by a stranger, so neither proves anything alone. A supervisor is known by two records: the
lock file (`pid start-time`, written when it takes the lock) and its heartbeat in the Store
(`pid`, time). A record is live when that pid runs, is not a zombie, and is the process
that wrote it: the same start time, or started before the heartbeat was written.

`ensure_live` is what every front end's read and wait path calls: when tasks are `running`
or `pending` and nobody live holds the data dir, it starts a supervisor (which recovers
the orphans: they become `interrupted`), or says plainly why the tasks will not move.

On Linux this reads `/proc` directly: importing psutil costs ~60 ms, more than a whole
`offload list`.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from offload.config import Settings
from offload.errors import SupervisorRunning
from offload.queue.models import State
from offload.queue.store import Store
from offload.records import record
from offload.supervisor.wake import LOCK_NAME, read_note

__all__ = [
    "Liveness",
    "START_SLACK_SECONDS",
    "ensure_live",
    "fifo_has_reader",
    "heartbeat_state",
    "lock_holders",
    "lock_record",
    "process_age",
    "process_start",
    "refuse_if_other_alive",
    "supervisor_state",
]

START_SLACK_SECONDS = 1.0  # /proc's boot time may move by a second between reads
FIFO_NAME = "wake.fifo"
_STOPPED = {"T", "t"}  # stopped by a signal, or by a tracer


@record
class Liveness:
    """The state of the supervisor of one data dir.

    Attributes:
        state: "running", "stopped" (SIGSTOP: it holds the data dir but does nothing),
            "dead" (a supervisor was recorded but its process is gone) or "none".
        pid: The supervisor's pid when one is recorded.
    """

    state: str
    pid: int | None = None

    @property
    def alive(self) -> bool:
        """True when a supervisor process holds the data dir, running or stopped."""
        return self.state in ("running", "stopped")


@functools.cache
def _boot_time() -> float:
    """When the machine booted, read once per process, as psutil does.

    /proc/stat is long to generate, and the supervisor asks for every task it starts.
    """
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def _proc_stat(pid: int) -> tuple[str, float] | None:
    """(state letter, start time in seconds since the epoch) of `pid`, or None if gone."""
    if sys.platform.startswith("linux"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                data = f.read()
            fields = data[data.rindex(b")") + 2 :].split()
            ticks = int(fields[19]) / os.sysconf("SC_CLK_TCK")
            return fields[0].decode(), _boot_time() + ticks
        except (OSError, ValueError, IndexError):
            return None
    import psutil  # macOS and the rest: no /proc

    try:
        proc = psutil.Process(pid)
        state = "T" if proc.status() == psutil.STATUS_STOPPED else "R"
        if proc.status() == psutil.STATUS_ZOMBIE:
            state = "Z"
        return state, proc.create_time()
    except psutil.Error:
        return None


_FORK_CLOCK_SLACK_SECONDS = 0.02  # well inside recovery's 0.05 s start-time slack


def fork_clock() -> float | None:
    """Now, on the clock `process_start` reads start times from (None where there is none).

    Read just before a fork and again after it, it brackets the child's start time: /proc
    keeps it in clock ticks since boot, counted from the same boot clock. The supervisor
    takes a task's start time from here instead of reading /proc/<pid>/stat of a child
    that is still exec'ing (and, under the sandbox, still building it): that read waits
    for the child and cost the supervisor's loop ~0.4 ms a sandboxed task.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        return _boot_time() + time.clock_gettime(time.CLOCK_BOOTTIME)
    except OSError:
        return None


def process_age(pid: int) -> float | None:
    """Seconds since `pid` started, to a clock tick (None where unknown).

    Its start and now are read on the same boot clock, so the boot time's whole-second
    rounding, which `process_start` carries, cancels out.
    """
    now, start = fork_clock(), process_start(pid)
    return None if now is None or start is None else max(0.0, now - start)


def start_between(pid: int, before: float | None, after: float | None) -> float | None:
    """`pid`'s start time: `before` when the fork took little time, else read from /proc."""
    if before is not None and after is not None and after - before <= _FORK_CLOCK_SLACK_SECONDS:
        return before
    return process_start(pid)


def process_start(pid: int) -> float | None:
    """The start time of `pid` in seconds since the epoch, or None if it is gone."""
    found = _proc_stat(pid)
    return None if found is None else found[1]


def lock_record(home: Path) -> tuple[int, float | None] | None:
    """(pid, start time) from the lock file; the start time is None in an old-style file."""
    try:
        words = read_note(home / LOCK_NAME).split()
        pid = int(words[0])
        return pid, float(words[1]) if len(words) > 1 else None
    except (OSError, ValueError, IndexError):
        return None


def lock_holders(home: Path) -> list[int]:
    """The pids of supervisors holding the data dir's lock: one, unless a task planted more.

    What `offload supervisor stop` signals. On Linux a process counts only if the kernel
    says it holds an flock (`/proc/locks`), it has this data dir itself open (the
    supervisor keeps a descriptor on its directory with the lock; `/proc/PID/fd`,
    compared by device and inode, so a bind mount or a symlinked spelling of the path
    finds it too), and it runs `offload supervisor`. A task that may write the data dir
    can write any pid into the lock file, replace it, rename it, or move another data
    dir's lock file in with a link left behind: none of that gives another process this
    directory's descriptor. A decoy that takes all three itself is the task's own
    process; every match is returned, so a decoy never hides the supervisor. Without
    /proc (macOS), the file's pid is taken if it runs `offload supervisor`. A start time
    is not compared: a step of the wall clock moves it (the boot time moves).
    """
    holders = _flock_holders()
    if holders is None:
        record = lock_record(home)
        pid = record[0] if record is not None else None
        return [pid] if pid is not None and _looks_like_supervisor(pid) else []
    try:
        here = os.stat(home)
    except OSError:
        return []
    return [pid for pid in holders if _looks_like_supervisor(pid) and _has_open(pid, here)]


def _flock_holders() -> list[int] | None:
    """The pids holding an flock, each once, from /proc/locks (None without /proc/locks)."""
    try:
        with open("/proc/locks", "rb") as f:
            lines = f.read().decode("ascii", "replace").splitlines()
    except OSError:
        return None
    found: dict[int, None] = {}
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF"; a waiter's line has "->"
        words = line.split()
        if len(words) >= 5 and words[1] == "FLOCK" and words[4].isdigit():
            found[int(words[4])] = None
    return list(found)


def _has_open(pid: int, file: os.stat_result) -> bool:
    """Whether `pid` has a descriptor open on `file` (the same device and inode)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False  # gone, or another user's: not ours to signal
    for fd in fds:
        try:
            if os.path.samestat(os.stat(f"/proc/{pid}/fd/{fd}"), file):
                return True
        except OSError:
            continue
    return False


def _looks_like_supervisor(pid: int) -> bool:
    """Whether `pid` runs `offload supervisor` (its command line; True where unreadable)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = f.read().split(b"\0")
    except FileNotFoundError:
        return not sys.platform.startswith("linux")
    except OSError:
        return True
    return b"supervisor" in words and not {b"status", b"stop"} & set(words)


def _state_of(pid: int, started: float | None, written_at: float | None) -> str:
    """'running', 'stopped' or 'dead' for the process a record names.

    `started` is the start time the record holds; a record without one (the heartbeat)
    names its writer only if that process started before `written_at` and runs
    `offload supervisor`.
    """
    if pid == os.getpid():
        return "running"
    found = _proc_stat(pid)
    if found is None or found[0] in ("Z", "X"):
        return "dead"
    state, start = found
    if started is not None and abs(start - started) > START_SLACK_SECONDS:
        return "dead"  # the pid was reused by another process
    if started is None:
        if written_at is not None and start > written_at + START_SLACK_SECONDS:
            return "dead"  # started after the record was written: not its writer
        if not _looks_like_supervisor(pid):
            return "dead"
    return "stopped" if state in _STOPPED else "running"


def supervisor_state(home: Path, store: Store | None = None) -> Liveness:
    """The state of the supervisor holding `home`, from the lock file and the heartbeat.

    Args:
        home: The data dir.
        store: Its queue, for the heartbeat; without it only the lock file is read.
    """
    recorded: Liveness | None = None
    record = lock_record(home)
    if record is not None:
        pid, started = record
        state = _state_of(pid, started, _mtime(home) if started is None else None)
        if state != "dead":
            return Liveness(state, pid)
        recorded = Liveness("dead", pid)
    beat = heartbeat_state(store)
    if beat.alive:
        return beat
    return recorded or beat


def heartbeat_state(store: Store | None) -> Liveness:
    """The state of the supervisor that last wrote a heartbeat to the Store."""
    info = _heartbeat(store)
    if info is None:
        return Liveness("none")
    pid, at = info
    return Liveness(_state_of(pid, None, at), pid)


def refuse_if_other_alive(store: Store, home: Path) -> None:
    """Raises SupervisorRunning when the last heartbeat's supervisor still lives.

    The lock file proves nothing once deleted: a supervisor started after that would
    otherwise mark a live one's running tasks interrupted. (On a queue several hosts
    share, the heartbeat may be another host's: members and leases stand in for it.)
    """
    other = heartbeat_state(store)
    if other.alive and other.pid != os.getpid():
        raise SupervisorRunning(
            f"a supervisor (pid {other.pid}) already runs for {home}, "
            "though its lock file was removed; `offload supervisor stop` stops it"
        )


def _mtime(home: Path) -> float | None:
    try:
        return (home / LOCK_NAME).stat().st_mtime
    except OSError:
        return None


def _heartbeat(store: Store | None) -> tuple[int, float] | None:
    if store is None:
        return None
    try:
        info = store.supervisor_info() or {}
        return int(info["pid"]), int(info["at"]) / 1000
    except (KeyError, TypeError, ValueError):
        return None
    except Exception:  # a locked or missing database: the lock file is all we know
        return None


def fifo_has_reader(home: Path) -> bool:
    """True when some supervisor keeps `home`'s wake FIFO open (no byte is written)."""
    try:
        fd = os.open(home / FIFO_NAME, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return False
    os.close(fd)
    return True


def _has_active(store: Store) -> bool:
    return bool(store.list([State.RUNNING], limit=1) or store.list([State.PENDING], limit=1))


def ensure_live(
    settings: Settings,
    store: Store,
    *,
    start: Callable[[], object] | None = None,
    thorough: bool = False,
) -> str | None:
    """Makes sure someone runs the queue's active tasks; returns a note when nobody will.

    Does nothing when no task is `running` or `pending`. Otherwise, when no live
    supervisor holds the data dir, starts one (it marks tasks a dead one left running
    `interrupted` and runs the pending ones). A stopped (SIGSTOP) supervisor still holds
    the data dir: no second one may start, so the note says what to do instead.

    Args:
        settings: Where the data dir is.
        store: Its queue.
        start: Starts a supervisor (the desk's `wake`); by default `ensure_supervisor`.
        thorough: Also look behind a FIFO that has a reader (a stopped supervisor keeps
            it open); waits use this every few seconds, plain reads do not.

    Returns:
        None when the tasks are in hand; otherwise one line for the person or agent.
    """
    if not _has_active(store):
        return None
    home = settings.home
    if fifo_has_reader(home) and not thorough:
        return None
    found = supervisor_state(home, store)
    if found.state == "stopped":
        return (
            f"the supervisor (pid {found.pid}) is stopped (SIGSTOP), so no task moves; "
            f"`kill -CONT {found.pid}` resumes it, `kill {found.pid}` ends it"
        )
    if found.state == "running":
        return None
    if start is None:
        from offload.supervisor.launch import ensure_supervisor

        start = lambda: ensure_supervisor(home)  # noqa: E731
    try:
        start()
    except OSError as exc:
        return f"no supervisor runs for {home} and none could be started: {exc}"
    return None
