"""cgroup v2 per task, where the supervisor can make one.

A task's cgroup holds every process it starts, even ones that left its session and
process group, so `cgroup.kill` (Linux ≥ 5.14) ends the whole tree in one write. When no
writable cgroup v2 hierarchy is found (not Linux, no delegation, not root) tasks run
without one and the process-group + marker kill covers them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["CgroupRoot", "find_cgroup_root"]


def _own_cgroup_v2() -> tuple[Path, str] | None:
    """The cgroup2 mount point and this process's path inside it, if any."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
        membership = Path("/proc/self/cgroup").read_text()
    except OSError:
        return None
    mount = None
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            mount = Path(left.split()[4])
            break
    own = next((ln[3:] for ln in membership.splitlines() if ln.startswith("0::")), None)
    if mount is None or own is None:
        return None
    return mount, own.lstrip("/")


class CgroupRoot:
    """The directory under which the supervisor creates one cgroup per task."""

    def __init__(self, path: Path, home_cgroup: Path) -> None:
        self.path = path
        self.home_cgroup = home_cgroup

    @contextmanager
    def entered(self, cgroup: str | None) -> Iterator[bool]:
        """Moves the supervisor into `cgroup` for the duration of a fork, then back.

        A child is born in its parent's cgroup, so forking from inside the task's cgroup
        puts the task there before it can run a single instruction (no race with an
        early fork of its own), without running Python in the child. Yields whether the
        move worked; when it did not, the task runs without a cgroup.
        """
        if cgroup is None:
            yield False
            return
        try:
            self.join_self(cgroup)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            self.join_self(str(self.home_cgroup))

    def create(self, name: str) -> Path | None:
        """Makes a task's cgroup; None if that fails (the task then runs without one).

        A directory already there is not the task's: it is refused, never shared.
        """
        path = self.path / name
        try:
            path.mkdir()
        except OSError:
            return None
        return path

    @staticmethod
    def join_self(cgroup: str) -> None:
        """Moves the calling process into `cgroup`."""
        fd = os.open(os.path.join(cgroup, "cgroup.procs"), os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)

    @staticmethod
    def pids(cgroup: str) -> list[int]:
        """The live processes in `cgroup` (empty when it is gone)."""
        try:
            with open(os.path.join(cgroup, "cgroup.procs")) as f:
                return [int(line) for line in f if line.strip()]
        except (OSError, ValueError):
            return []

    @staticmethod
    def kill(cgroup: str) -> bool:
        """SIGKILLs every process in `cgroup` at once; False when cgroup.kill is missing."""
        try:
            with open(os.path.join(cgroup, "cgroup.kill"), "w") as f:
                f.write("1")
            return True
        except OSError:
            return False

    @staticmethod
    def remove(cgroup: str) -> bool:
        """Removes an empty task cgroup; False when it is still there (busy, or refused)."""
        try:
            os.rmdir(cgroup)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True

    def remove_root(self) -> None:
        """Removes the supervisor's own directory when it holds no task cgroup."""
        try:
            os.rmdir(self.path)
        except OSError:
            pass


def find_cgroup_root(home: Path) -> CgroupRoot | None:
    """Finds or makes a writable cgroup v2 directory for this data dir's tasks, or None."""
    found = _own_cgroup_v2()
    if found is None:
        return None
    mount, own = found
    tag = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]
    path = mount / own / f"offload-{tag}"
    try:
        path.mkdir(exist_ok=True)
        probe = path / "probe"
        probe.mkdir(exist_ok=True)
        usable = (probe / "cgroup.kill").exists() and os.access(probe / "cgroup.procs", os.W_OK)
        probe.rmdir()
    except OSError:
        return None
    return CgroupRoot(path, mount / own) if usable else None
