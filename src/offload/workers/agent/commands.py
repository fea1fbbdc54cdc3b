"""Running one `run_command` of an agent: a plain child of the task process, capped.

The command runs as `/bin/sh -c COMMAND` with a scrubbed environment (no provider secret,
the `OFFLOAD_TASK_ID` marker kept) in a process group of its own, inside the task's
bubblewrap sandbox when its policy asks for one (`sandbox` words from
`offload.supervisor.sandbox.command_sandbox`: the staging copy is the only writable
tree); it stays in the task's cgroup and keeps the marker, so cancelling or timing out
the task kills it with everything else. When the command ends or its own timeout passes,
its whole group is killed (not the task): background and double-forked children
included, since they keep the group (and orphans adopted by the task process are found
by the marker). Output (stdout and stderr
together) is kept up to a byte cap: the first half and the last half, with the omitted
middle labelled.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["KILL_GRACE_SECONDS", "CommandRun", "run_shell"]

KILL_GRACE_SECONDS = 2.0
_READ_BYTES = 65_536
_POLL_SECONDS = 0.05
_MARKER = "OFFLOAD_TASK_ID"


@dataclass(frozen=True)
class CommandRun:
    """How a command ended and what it printed.

    Attributes:
        exit_code: Its exit status (negative: killed by that signal); None if timed out.
        seconds: How long it ran.
        head: The first bytes of its output.
        tail: The last bytes of its output (empty when everything fit in `head`).
        total_bytes: How many bytes it printed in all.
        timed_out: True when it was killed at its timeout.
    """

    exit_code: int | None
    seconds: float
    head: bytes
    tail: bytes
    total_bytes: int
    timed_out: bool

    def render(self, timeout_seconds: float, cap_bytes: int) -> str:
        """The result as the model reads it: how it ended, then the (labelled) output."""
        if self.timed_out:
            status = (
                f"killed after the timeout of {timeout_seconds:g} s (agent_command_timeout_seconds)"
            )
        elif self.exit_code is not None and self.exit_code < 0:
            status = f"killed by signal {-self.exit_code} after {self.seconds:.1f} s"
        else:
            status = f"exit code {self.exit_code} after {self.seconds:.1f} s"
        omitted = self.total_bytes - len(self.head) - len(self.tail)
        if self.total_bytes == 0:
            return f"{status}\n(no output)"
        body = self.head.decode("utf-8", "replace")
        if omitted > 0:
            body += (
                f"\n[... {omitted} bytes omitted: the output was {self.total_bytes} bytes, "
                f"agent_command_output_bytes is {cap_bytes}; narrow the command ...]\n"
            )
        body += self.tail.decode("utf-8", "replace")
        return f"{status}\n--- output ({self.total_bytes} bytes) ---\n{body}"


class _Capture:
    """Keeps the first and the last `cap // 2` bytes of a stream."""

    def __init__(self, cap_bytes: int) -> None:
        self.half = max(1, cap_bytes // 2)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.half - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            del self.tail[: max(0, len(self.tail) - self.half)]


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE  # dead; whoever adopted it reaps it
    except psutil.NoSuchProcess:
        return True


def _wait_gone(procs: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    """Waits until every process is dead (zombies count); returns those still alive."""
    deadline = time.monotonic() + seconds
    alive = procs
    while alive and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS / 5)
        alive = [p for p in alive if not _gone(p)]
    return alive


def _members(pgid: int, marker: str | None) -> list[psutil.Process]:
    """The processes of a command: its group, and orphans of it the task process adopted."""
    me = os.getpid()
    found = []
    for proc in psutil.process_iter(["ppid"]):
        if proc.pid == me:
            continue
        try:
            if os.getpgid(proc.pid) == pgid:
                found.append(proc)
            elif marker and proc.info["ppid"] == me and proc.environ().get(_MARKER) == marker:
                found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found


def _kill_group(pgid: int, marker: str | None) -> None:
    """SIGTERM the command's process group and adopted orphans, then SIGKILL what is left."""
    procs = _members(pgid, marker)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        for item in procs:
            with contextlib.suppress(psutil.Error):
                item.send_signal(sig)
        procs = _wait_gone(procs, KILL_GRACE_SECONDS)
        if not procs:
            return


def _pump(
    proc: subprocess.Popen[bytes], capture: _Capture, deadline: float, clock: Callable[[], float]
) -> bool:
    """Reads output until the command exits (or its pipe closes); False at the deadline."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - clock()
            if remaining <= 0:
                return False
            ready = selector.select(min(remaining, _POLL_SECONDS))
            if ready:
                try:
                    data = os.read(fd, _READ_BYTES)
                except BlockingIOError:
                    continue
                if not data:
                    return True  # EOF: every writer is gone
                capture.add(data)
            elif proc.poll() is not None:
                return True  # exited; a background child may still hold the pipe


def run_shell(
    command: str,
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout_seconds: float,
    cap_bytes: int,
    clock: Callable[[], float] = time.monotonic,
    sandbox: Sequence[str] = (),
) -> CommandRun:
    """Runs `command` with `/bin/sh -c` and returns how it ended and its capped output.

    `sandbox` is put before the shell (the bwrap words, or nothing).

    Raises:
        OSError: the shell could not be started.
    """
    started = clock()
    capture = _Capture(cap_bytes)
    proc = subprocess.Popen(
        [*sandbox, "/bin/sh", "-c", command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=dict(env),
        close_fds=True,
        start_new_session=True,  # its own group, so a timeout reaches double-forked children
    )
    marker = env.get(_MARKER)
    try:
        finished = _pump(proc, capture, started + timeout_seconds, clock)
        if finished:
            proc.wait(max(0.0, started + timeout_seconds - clock()) + KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        finished = False
    finally:
        _kill_group(proc.pid, marker)  # whatever the command left running goes with it
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return CommandRun(
        exit_code=proc.returncode if finished else None,
        seconds=clock() - started,
        head=bytes(capture.head),
        tail=bytes(capture.tail),
        total_bytes=capture.total,
        timed_out=not finished,
    )
