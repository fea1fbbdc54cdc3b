"""A filesystem and network sandbox per task, with bubblewrap (`bwrap`).

Inside, the whole filesystem is read-only except the task's workspace, a private `/tmp`
and the configured writable paths; offload's data dir and the hidden paths (credential
directories such as `~/.ssh`, `~/.aws`) are not there at all (an empty tmpfs over a
directory, `/dev/null` over a file); `/dev` is a minimal one; `/proc` shows only the
task's own PID namespace (so no other process's environment is readable); every
capability is dropped, so even a task running as root cannot remount or unmount any of
it. With the network off, only a private loopback exists.

bwrap is what Flatpak and Claude Code use; it works as root and, through user namespaces,
for ordinary users. Where it is missing or cannot run, `probe_sandbox` says why and the
supervisor falls back (see docs/security.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from offload.errors import OffloadError
from offload.records import record
from offload.supervisor.sandbox_paths import DEFAULT_HIDE, default_writable

if TYPE_CHECKING:
    from offload.config import Settings
    from offload.policies.task_policy import TaskPolicy

__all__ = [
    "DEFAULT_HIDE",
    "RUNTIME_DIRS",
    "Sandbox",
    "SandboxUnavailable",
    "command_sandbox",
    "default_writable",
    "probe_sandbox",
    "with_targets",
]


class SandboxUnavailable(OffloadError):
    """A command must run sandboxed (setting `sandbox = on`) and bwrap cannot do it."""


RUNTIME_DIRS: tuple[str, ...] = ("/run", "/var/run")
"""Where daemons keep their sockets (D-Bus, systemd, the user's session bus and agents,
database servers): an empty tmpfs in the sandbox. A socket connects whatever the mount
flags say and whatever the network namespace, so a read-only view of them would still let
a task ask systemd, D-Bus or a database superuser to run code outside."""

_RESOLVER = "/etc/resolv.conf"  # often a link into /run, which the sandbox keeps readable

_PROBE_TIMEOUT_SECONDS = 10.0


def _real(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))


@record
class Sandbox:
    """A working bwrap, or the reason there is none (`path` is None then)."""

    path: str | None
    reason: str = ""

    @property
    def available(self) -> bool:
        """True when tasks can be sandboxed here."""
        return self.path is not None

    def argv(
        self,
        *,
        workspace: str,
        cwd: str,
        writable: Iterable[str] = (),
        hide: Iterable[str] = (),
        network: bool = True,
        readable: Iterable[str] = (),
    ) -> list[str]:
        """The bwrap words to put before a command so it runs sandboxed.

        Args:
            workspace: The one tree the task may write (its workspace, or an agent's
                staging copy).
            cwd: Where the command starts (inside the sandbox's view).
            writable: More paths it may write (missing ones are skipped).
            hide: Paths it must not see (missing ones are skipped); hidden even inside a
                writable path or the workspace.
            network: False cuts it off (a private loopback only).
            readable: Paths it may read even under /tmp, which is private inside (the
                workspace an agent's staging copy links its virtualenvs into).

        bwrap always makes a PID namespace of its own, nested in the supervisor's one for
        the task where there is one: without it, bwrap would bind the host's /proc.
        """
        if self.path is None:
            raise RuntimeError(f"no sandbox: {self.reason}")
        argv = [self.path, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        argv += ["--tmpfs", "/tmp", "--cap-drop", "ALL", "--die-with-parent", "--unshare-pid"]
        argv.append("--unshare-ipc")  # the host's SysV shared memory and message queues
        if not network:
            argv.append("--unshare-net")
        argv += _runtime_dirs_hidden()
        for path in dict.fromkeys(_real(p) for p in readable):
            if _inside(path, "/tmp") and path != "/tmp" and os.path.exists(path):
                argv += ["--ro-bind", path, path]
        space = _real(workspace)
        trees = [space] if space != "/tmp" and os.path.exists(space) else []
        trees += _writable_trees(writable, space)
        for path in trees:
            argv += ["--bind", path, path]
        dirs, files = _hidden(hide)
        for path in _pinned(trees, [*dirs, *files]):
            argv += ["--bind", path, path]
        for path in dirs:
            argv += ["--tmpfs", path]
        for path in files:
            argv += ["--ro-bind", "/dev/null", path]
        if any(_inside(space, d) for d in dirs):
            # an agent's staging copy lives in the data dir: it alone comes back
            argv += ["--bind", space, space]
        for path in dirs:
            argv += ["--remount-ro", path]
        argv += ["--chdir", _real(cwd), "--"]
        return argv


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _writable_trees(writable: Iterable[str], space: str) -> list[str]:
    """The writable paths to bind, each resolved; none inside the workspace or another.

    One inside a tree already writable adds nothing, and a task may have put a link
    there: with the home as the workspace and no `~/.cache` yet, a task that made
    `~/.cache` a link to `/` would have had the next task's whole filesystem writable.
    """
    trees: list[str] = [space]
    for given in writable:
        plain = os.path.abspath(os.path.expanduser(given))
        path = os.path.realpath(plain)
        if path in ("/", "/tmp") or not os.path.exists(path):
            continue
        if any(_inside(plain, t) or _inside(path, t) for t in trees):
            continue
        trees.append(path)
    return trees[1:]


def _runtime_dirs_hidden() -> list[str]:
    """A tmpfs over each runtime directory, with the resolver configuration kept."""
    argv: list[str] = []
    for path in RUNTIME_DIRS:
        if os.path.isdir(path) and not os.path.islink(path):
            argv += ["--tmpfs", path]
    resolver = os.path.realpath(_RESOLVER)
    if resolver != _RESOLVER and any(_inside(resolver, d) for d in RUNTIME_DIRS):
        if os.path.isfile(resolver):
            argv += ["--ro-bind", resolver, resolver]
    return argv


def _pinned(trees: Iterable[str], hidden: Iterable[str]) -> list[str]:
    """The directories between a writable tree and a hidden path inside it, outermost first.

    Bound onto themselves they become mount points, which a task cannot rename or remove.
    Otherwise, with the home as the workspace, a task could rename `~/.config`: the next
    task's `~/.config/gh` would be missing, nothing would be hidden there, and the renamed
    copy would be in plain view.
    """
    found: dict[str, None] = {}
    for tree in trees:
        for path in hidden:
            parent = os.path.dirname(path)
            while path != tree and parent != tree and _inside(parent, tree):
                found[parent] = None
                parent = os.path.dirname(parent)
    return sorted(found, key=lambda p: p.count("/"))


def with_targets(paths: Iterable[str]) -> tuple[str, ...]:
    """`paths` and, for each, what it resolves to now (symlinks followed).

    A hidden path that is a link inside a writable tree could be pointed elsewhere by a
    task; hiding the target found when the supervisor (or the front end) started keeps the
    real credentials hidden from the tasks that follow.
    """
    found = [str(p) for p in paths]
    return tuple(dict.fromkeys([*found, *(_real(p) for p in found)]))


def _hidden(hide: Iterable[str]) -> tuple[list[str], list[str]]:
    """The existing hidden paths: directories, then files (and sockets)."""
    dirs: list[str] = []
    files: list[str] = []
    expanded = dict.fromkeys(os.path.expanduser(p) for p in hide)  # the same entry twice
    for path in dict.fromkeys(os.path.realpath(p) for p in expanded if not _surely_absent(p)):
        if path == "/tmp" or _holds_system_dir(path) or not os.path.lexists(path):
            continue
        (dirs if os.path.isdir(path) else files).append(path)
    return dirs, files


# What the sandbox itself stands on: a hidden path that resolves to one of these, or to a
# directory above one, is not hidden. A task that may write the parent of a hidden path
# could otherwise link it to /dev (or /usr, /etc) and empty that for every later task.
_SYSTEM_DIRS: tuple[str, ...] = ("/bin", "/dev", "/etc", "/lib", "/lib32", "/lib64")
_SYSTEM_DIRS += ("/libx32", "/proc", "/sbin", "/sys", "/usr")


def _holds_system_dir(path: str) -> bool:
    return path == "/" or any(_inside(system, path) for system in _SYSTEM_DIRS)


def _surely_absent(path: str) -> bool:
    """True when nothing exists at `path` (`~` expanded), however it would be resolved.

    Most hidden paths are absent on a given machine, and resolving each (realpath: an
    lstat and some Python per component) cost every sandboxed spawn ~0.5 ms. When the
    kernel resolves the parent, every component of it exists, so realpath would find the
    same directory, and the name is not in it. When the parent does not resolve, realpath
    decides: it drops `..` after a missing directory by text where the kernel fails, so a
    path absent as written can still name one that exists (a task's link through a
    directory it then removed).
    """
    try:
        os.lstat(path)
    except FileNotFoundError:
        return os.path.isdir(os.path.dirname(path))
    except OSError:  # too long, not a directory, no access: let realpath decide
        return False
    return False


def probe_sandbox(bwrap: str | None = None) -> Sandbox:
    """Finds bwrap and checks once that it can build the sandbox here."""
    import shutil
    import subprocess

    path = bwrap or shutil.which("bwrap") or _known_location()
    if path is None:
        return Sandbox(None, "bubblewrap (bwrap) is not installed")
    probe = Sandbox(path).argv(workspace="/tmp", cwd="/")
    try:
        done = subprocess.run(
            [*probe, "/bin/true"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_PROBE_TIMEOUT_SECONDS,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return Sandbox(None, f"bwrap cannot run: {exc}")
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        return Sandbox(None, f"bwrap cannot run here: {why[-1] if why else done.returncode}")
    return Sandbox(path)


def _known_location() -> str | None:
    for candidate in ("/usr/bin/bwrap", "/usr/local/bin/bwrap"):
        if Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def command_sandbox(
    policy: TaskPolicy,
    settings: Settings,
    workspace: Path,
    cwd: Path,
    readable: Iterable[Path] = (),
) -> list[str]:
    """The bwrap words for one command an agent runs (empty when its policy says none).

    `workspace` is what the command may write: the agent's staging copy. `readable` is
    what it may read besides the (read-only) filesystem: the real workspace, whose
    virtualenvs the staging copy links to. The data dir and every hidden path are hidden,
    as for a sandboxed shell task.

    Raises:
        SandboxUnavailable: the policy asks for the sandbox, bwrap cannot provide it and
            the setting `sandbox` is `on`.
    """
    if not policy.sandbox:
        return []
    box = _command_box()
    if not box.available:
        if settings.sandbox == "on":
            raise SandboxUnavailable(
                f"commands must run sandboxed but {box.reason}; install bubblewrap "
                "(apt-get install bubblewrap) or set sandbox = auto"
            )
        return []
    return box.argv(
        workspace=str(workspace),
        cwd=str(cwd),
        writable=policy.writable,
        hide=(str(settings.home), *settings.sandbox_hide, *policy.hide),
        network=policy.network,
        readable=[str(p) for p in readable],
    )


_BOX: Sandbox | None = None


def _command_box() -> Sandbox:
    global _BOX
    if _BOX is None:
        _BOX = probe_sandbox()
    return _BOX
