"""The supervisor's lock file and its wake-up FIFO.

The lock (`supervisor.lock`, flock'd) proves one supervisor per data dir. The FIFO
(`wake.fifo`) is how front ends wake it after a submit or cancel: the supervisor keeps it
open for reading, so opening it for writing fails with ENXIO exactly when no supervisor
runs, which is also how front ends find out they must start one.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

from offload.errors import SupervisorRunning

__all__ = ["SupervisorLock", "WakeFifo", "poke", "read_note", "supervisor_pid"]

LOCK_NAME = "supervisor.lock"
FIFO_NAME = "wake.fifo"
STOP_NAME = "supervisor.stop"  # when `offload supervisor stop` last ran (see `request_stop`)
_LOCK_RETRY_SECONDS = 0.05


def read_note(path: Path) -> str:
    """The first bytes of a small regular file of ours; "" for anything else.

    A task that may write the data dir could plant a FIFO (an open would wait for a
    writer), a link to /dev/zero (a read would never end) or a directory in its place.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return os.read(fd, 64).decode("ascii", "replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def supervisor_pid(home: Path) -> int | None:
    """The pid written in the lock file (`pid start-time`), if it parses."""
    words = read_note(home / LOCK_NAME).split()
    try:
        return int(words[0]) if words else None
    except ValueError:
        return None


def request_stop(home: Path) -> None:
    """Notes that a stop was asked for now: a supervisor starting or waiting for the lock
    meanwhile then stops too (see `stop_asked_since`).

    Written to a new file of a random name, then renamed into place: never through a link,
    a FIFO or a hard link planted at the name, and no name planted ahead keeps it from
    being written. A directory planted at the name (no rename puts a file over one) is
    renamed aside first, never walked: its size or depth costs the stop nothing. Best
    effort: whatever fails, the stop still signals the supervisor it finds.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    temporary = home / f".{STOP_NAME}.{os.urandom(8).hex()}"
    try:
        fd = os.open(temporary, flags, 0o600)
    except OSError:
        return  # a read-only data dir, or a name taken
    try:
        try:
            os.write(fd, f"{time.time():.6f}\n".encode())
        finally:
            os.close(fd)
        target = home / STOP_NAME
        try:
            os.replace(temporary, target)
        except IsADirectoryError:
            os.rename(target, home / f".{STOP_NAME}.planted.{os.urandom(8).hex()}")
            os.replace(temporary, target)
    except OSError:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass  # swapped for a directory meanwhile, say


def stop_asked_since(home: Path, since: float) -> bool:
    """True when `request_stop` ran at or after `since` (seconds since the epoch).

    A time still to come is no stop: it was not written by `request_stop`.
    """
    try:
        asked = float(read_note(home / STOP_NAME))
    except ValueError:
        return False
    return since <= asked <= time.time()


def _lock_text() -> bytes:
    from offload.supervisor.liveness import process_start

    start = process_start(os.getpid())
    return f"{os.getpid()} {start:.3f}\n".encode() if start else f"{os.getpid()}\n".encode()


class SupervisorLock:
    """An exclusive flock on `$OFFLOAD_HOME/supervisor.lock` holding the owner's pid."""

    def __init__(self, home: Path) -> None:
        self.path = home / LOCK_NAME
        self._fd: int | None = None
        # Held with the lock: how `offload supervisor stop` tells this data dir's holder
        # from another's, whatever was renamed or linked (see `liveness.lock_holders`).
        self._home_fd: int | None = None

    def acquire(self, wait_seconds: float = 0.0) -> bool:
        """Takes the lock or raises SupervisorRunning naming the holder's pid.

        `wait_seconds` lets an on-demand supervisor wait out one that is shutting down
        (it has closed its FIFO, so front ends started us, but still holds the lock).
        Returns True when it had to wait for another holder.
        """
        import fcntl  # only a supervisor locks; every front end imports this module to wake one

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait_seconds
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    holder = supervisor_pid(self.path.parent)
                    raise SupervisorRunning(
                        f"a supervisor (pid {holder}) already runs for {self.path.parent}; "
                        "`offload supervisor stop` stops it"
                    ) from None
                waited = True
                time.sleep(_LOCK_RETRY_SECONDS)  # waiting on the holder to exit, bounded
        os.ftruncate(fd, 0)
        os.write(fd, _lock_text())
        self._fd = fd
        self._restore_home()
        return waited

    def restore(self) -> bool:
        """Takes the lock again if its file was deleted or replaced under us.

        Returns False when the new file is locked by someone else (who must then have
        started without seeing us) or cannot be created.
        """
        if self._fd is None:
            return False
        self._restore_home()
        try:
            if os.path.samestat(os.stat(self.path), os.fstat(self._fd)):
                return True
        except FileNotFoundError:
            pass
        except OSError:
            return False
        old, self._fd = self._fd, None
        try:
            self.acquire(0.0)
        except (OSError, SupervisorRunning):
            self._fd = old
            return False
        os.close(old)
        return True

    def _restore_home(self) -> None:
        """Opens the data dir, or opens it again if the one held open is no longer at its
        path (moved aside and recreated, say): `stop` finds this supervisor by the
        directory it has open."""
        try:
            now = os.stat(self.path.parent)
            if self._home_fd is not None and os.path.samestat(now, os.fstat(self._home_fd)):
                return
            fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return  # gone, or not a directory now: kept until it is one again
        if self._home_fd is not None:
            os.close(self._home_fd)
        self._home_fd = fd

    def release(self) -> None:
        """Drops the lock (the pid stays in the file; the lock is what counts)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._home_fd is not None:
            os.close(self._home_fd)
            self._home_fd = None


class WakeFifo:
    """The supervisor's end of the wake-up FIFO (opened read-write so it never sees EOF)."""

    def __init__(self, home: Path) -> None:
        self.path = home / FIFO_NAME
        if self.path.exists() and not self.path.is_fifo():
            self.path.unlink()
        if not self.path.exists():
            os.mkfifo(self.path, 0o600)
        self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)

    def drain(self) -> None:
        """Empties the FIFO after a wake-up."""
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Closes the FIFO: from now on front ends see that no supervisor runs."""
        os.close(self.fd)

    def replaced(self) -> bool:
        """True when the FIFO's path no longer leads to the FIFO we hold open."""
        try:
            return os.stat(self.path).st_ino != os.fstat(self.fd).st_ino
        except OSError:
            return True


def poke(home: Path) -> bool:
    """Wakes the supervisor of `home`; returns False when none is running."""
    try:
        fd = os.open(home / FIFO_NAME, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        os.write(fd, b"w")
    except BlockingIOError:
        pass  # full of unread pokes: it is awake already
    except OSError:
        return False
    finally:
        os.close(fd)
    return True
