"""The agent's view of its workspace: real files overlaid with a staging directory.

Every path the model names is confined to the task's workspace (symlinks followed) and
kept as a workspace-relative name. Reads see the staged version of a file when there is
one, else the workspace's; writes go only to the staging directory
(`<logs_dir>/<task-id>.staging/`, a mirror of the workspace).

When a command must run in staging (`agent_run_commands_in = "staging"`), the staging
directory is first made a full copy of the workspace (`materialize`); from then on it is
the agent's whole view. Top-level directories named in `agent_link_dirs` (virtualenvs,
`node_modules`) are linked rather than copied: commands use them, the file tools read
them, but nothing may be written through them.

For the apply step the view remembers, per file, the SHA-256 of the workspace's content
when the agent first saw it (read, overwrote or copied it): `seen`. A file whose
workspace content no longer has that hash has been changed by someone else.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from offload.errors import InvalidInput, PolicyRefused
from offload.policies.paths import is_inside, resolve_inside

__all__ = ["NEVER_APPLIED", "Change", "Entry", "Staging", "sha256_of"]

NEVER_APPLIED = frozenset({".git", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})
"""Directory names whose contents are never applied back (caches, the git database)."""

_CHUNK_BYTES = 1 << 20


def sha256_of(path: Path) -> str:
    """The SHA-256 (hex) of a file's content."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _signature(path: Path) -> tuple[int, int]:
    info = path.lstat()
    return info.st_size, info.st_mtime_ns


def _never_applied(rel: str) -> bool:
    return any(part in NEVER_APPLIED for part in rel.split("/"))


@dataclass(frozen=True)
class Entry:
    """One item of a directory listing."""

    name: str
    is_dir: bool
    size: int


@dataclass(frozen=True)
class Change:
    """A staged file to apply: its workspace-relative name, new content and base hash.

    `base` is the hash of the workspace's content when the agent first saw the file,
    or None when the file did not exist then.
    """

    rel: str
    data: bytes
    base: str | None


@dataclass
class Staging:
    """The overlay of one agent task; see the module docstring."""

    workspace: Path
    root: Path
    link_dirs: Sequence[str] = ()
    private: Path | None = None  # offload's own data dir, when it lies in the workspace
    materialized: bool = False
    seen: dict[str, str | None] = field(default_factory=dict)
    written: set[str] = field(default_factory=set)
    _copied: dict[str, tuple[str, tuple[int, int]]] = field(default_factory=dict)

    @classmethod
    def fresh(
        cls, workspace: Path, root: Path, link_dirs: Sequence[str] = (), private: Path | None = None
    ) -> Staging:
        """A new, empty staging directory (one left by an earlier attempt is removed).

        Args:
            workspace: The task's workspace.
            root: The staging directory.
            link_dirs: Top-level directory names to link instead of copy.
            private: offload's data directory, which the agent may never see or copy.
        """
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(mode=0o700, parents=True)
        hidden = private.resolve() if private is not None else None
        return cls(workspace.resolve(), root.resolve(), tuple(link_dirs), hidden)

    # -- names ----------------------------------------------------------------------
    def confine(self, given: str) -> str:
        """The workspace-relative name (`.` for the root) of a path the model gave.

        Absolute paths inside the staging directory (seen in a command's output) are
        taken as the same place in the workspace.

        Raises:
            PolicyRefused: the path resolves outside the workspace.
        """
        text = given.strip() if isinstance(given, str) else ""
        if not text:
            raise PolicyRefused("path is empty; give a path relative to the workspace")
        candidate = Path(text)
        if candidate.is_absolute():
            plain = Path(os.path.normpath(candidate))
            if is_inside(plain, self.root):
                candidate = self.workspace / plain.relative_to(self.root)
        resolved = resolve_inside(candidate, [self.workspace], base=self.workspace)
        if self.private is not None and is_inside(resolved, self.private):
            raise PolicyRefused(f"{text} is inside offload's own data directory")
        return resolved.relative_to(self.workspace).as_posix()

    def shown(self, path: Path) -> str:
        """A path under the staging directory or workspace, as the model should see it."""
        for base in (self.root, self.workspace):
            if is_inside(path, base):
                return path.relative_to(base).as_posix()
        return str(path)

    # -- reading --------------------------------------------------------------------
    def locate(self, rel: str) -> Path | None:
        """Where the agent's view of `rel` lives, or None when it does not exist.

        Raises:
            PolicyRefused: the staged entry is a link that leads out of the workspace.
        """
        staged = self.root / rel
        if os.path.lexists(staged):
            real = staged.resolve()
            if not (is_inside(real, self.root) or is_inside(real, self.workspace)):
                raise PolicyRefused(f"{rel} is a link that leads outside the workspace")
            return staged
        if self.materialized:
            return None
        real_path = self.workspace / rel
        return real_path if os.path.lexists(real_path) else None

    def read_bytes(self, rel: str, limit: int) -> tuple[bytes, int]:
        """Up to `limit` bytes of file `rel` and its full size; remembers its hash.

        Raises:
            InvalidInput: it does not exist or is not a file.
        """
        path = self.locate(rel)
        if path is None or not path.is_file():
            what = "is a directory" if path is not None else "does not exist"
            raise InvalidInput(f"{rel} {what}; list_dir shows what there is")
        if not is_inside(path, self.root):
            self.seen.setdefault(rel, sha256_of(path))
        with path.open("rb") as handle:
            data = handle.read(limit)
        return data, path.stat().st_size

    def list_dir(self, rel: str) -> list[Entry]:
        """The entries of directory `rel` in the agent's view, sorted by name.

        Raises:
            InvalidInput: it does not exist or is not a directory.
        """
        found: dict[str, Entry] = {}
        places = [self.root / rel] if self.materialized else [self.workspace / rel, self.root / rel]
        exists = False
        for place in places:
            if not self._contained(place) or not place.is_dir():
                continue
            exists = True
            for child in place.iterdir():
                if self._hidden(child) or not self._contained(child):
                    continue
                is_dir = child.is_dir()
                size = 0 if is_dir else _size(child)
                found[child.name] = Entry(child.name, is_dir, size)
        if not exists:
            raise InvalidInput(f"{rel} is not a directory")
        return sorted(found.values(), key=lambda e: e.name)

    def walk_files(self, rel: str) -> Iterator[tuple[str, Path]]:
        """Every file under `rel` in the agent's view, as (relative name, path).

        Skips the git database, caches and linked directories, unless `rel` is inside one.
        """
        skip = NEVER_APPLIED | set(self.link_dirs)
        bases = [self.root] if self.materialized else [self.root, self.workspace]
        given: set[str] = set()
        for base in bases:
            top = base / rel
            if not self._contained(top):
                continue
            if top.is_file():
                if rel not in given:
                    given.add(rel)
                    yield rel, top
                continue
            for dirpath, dirnames, filenames in os.walk(top):
                here = Path(dirpath)
                dirnames[:] = sorted(
                    d for d in dirnames if d not in skip and not self._hidden(here / d)
                )
                for name in sorted(filenames):
                    path = Path(dirpath) / name
                    child = path.relative_to(base).as_posix()
                    if child not in given and self._contained(path) and path.is_file():
                        given.add(child)
                        yield child, path

    def _hidden(self, path: Path) -> bool:
        return path == self.private or path == self.root

    def _contained(self, path: Path) -> bool:
        """True when `path`, links followed, stays in the staging copy or the workspace.

        A link found while walking or listing may lead anywhere; only what it leads to
        inside the agent's view (and never into offload's own data) may be shown.
        """
        try:
            real = path.resolve()
        except (OSError, RuntimeError):
            return False
        if is_inside(real, self.root):
            return True
        if self.private is not None and is_inside(real, self.private):
            return False
        return is_inside(real, self.workspace)

    # -- writing --------------------------------------------------------------------
    def write(self, rel: str, data: bytes) -> Path:
        """Stages `data` as the new content of `rel`.

        Raises:
            PolicyRefused: `rel` lies in a linked directory (it would write the workspace)
                or under a name never applied (`.git`, caches).
            InvalidInput: `rel` is the workspace itself or a directory.
        """
        if rel == ".":
            raise InvalidInput("write_file needs a file path, not the workspace root")
        if _never_applied(rel):
            never = ", ".join(sorted(NEVER_APPLIED))
            raise PolicyRefused(
                f"{rel} is under a directory the agent may not write ({never}); "
                "write the project's own files instead"
            )
        target = self.root / rel
        parent = target.parent
        existing = next(p for p in (target, *target.parents) if os.path.lexists(p))
        if not is_inside(existing.resolve(), self.root):
            raise PolicyRefused(
                f"{rel} is inside a linked directory (agent_link_dirs) or a link out of "
                "the staging copy; files there cannot be staged"
            )
        parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            raise InvalidInput(f"{rel} is a directory; give a file path")
        if rel not in self.seen:
            real = self.workspace / rel
            self.seen[rel] = sha256_of(real) if real.is_file() else None
        # mkstemp opens with O_EXCL: a link planted at a predictable name is never followed
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".offload-tmp", dir=parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.written.add(rel)
        return target

    # -- the staging copy -----------------------------------------------------------
    def materialize(self) -> Path:
        """Makes the staging directory a full copy of the workspace (once) and returns it.

        Staged files stay as they are; every other file is copied (links as links).
        """
        if self.materialized:
            return self.root
        for source in sorted(self.workspace.iterdir()):
            target = self.root / source.name
            if source.name in self.link_dirs and source.is_dir() and not source.is_symlink():
                if not os.path.lexists(target):
                    target.symlink_to(source, target_is_directory=True)
                continue
            self._copy_tree(source, target)
        self.materialized = True
        return self.root

    def _copy_tree(self, source: Path, target: Path) -> None:
        if source == self.private or source == self.root:
            return  # never copy offload's own data (the staging directory included)
        mode = source.lstat().st_mode
        if stat.S_ISDIR(mode):
            target.mkdir(exist_ok=True)
            for child in sorted(source.iterdir()):
                self._copy_tree(child, target / child.name)
        elif os.path.lexists(target):
            return  # staged by the agent: its version wins
        elif stat.S_ISLNK(mode):
            self._copy_link(source, target)
        elif stat.S_ISREG(mode):
            shutil.copy2(source, target)
            rel = target.relative_to(self.root).as_posix()
            if not _never_applied(rel):
                digest = sha256_of(target)
                self._copied[rel] = (digest, _signature(target))
                self.seen.setdefault(rel, digest)

    def _copy_link(self, source: Path, target: Path) -> None:
        """Copies a link so that it leads to the same place inside the staging copy.

        A link that leads out of the workspace (or into offload's data) is left out: a
        command writing through it would change files outside the staging copy.
        """
        try:
            real = source.resolve()
        except (OSError, RuntimeError):
            return
        if not is_inside(real, self.workspace) or not self._contained(source):
            return
        if is_inside(real, self.root):
            return
        mirrored = self.root / real.relative_to(self.workspace)
        target.symlink_to(os.path.relpath(mirrored, target.parent))

    # -- what to apply --------------------------------------------------------------
    def changes(self) -> tuple[list[Change], list[str]]:
        """The staged files to apply, and files commands created that will not be.

        Written files always count; in a full copy, so do the copied files a command
        changed. Files a command created are reported but not applied.
        """
        names = {rel for rel in self.written if not _never_applied(rel)}
        for rel, (digest, signature) in self._copied.items():
            path = self.root / rel
            if _never_applied(rel) or not path.is_file() or path.is_symlink():
                continue
            if _signature(path) != signature and sha256_of(path) != digest:
                names.add(rel)
        changes = []
        for rel in sorted(names):
            path = self.root / rel
            # a command may have made a parent directory a link: only the copy's own files
            if path.is_file() and not path.is_symlink() and self._own(path):
                changes.append(Change(rel, path.read_bytes(), self.seen.get(rel)))
        return changes, self._created_by_commands(names)

    def _own(self, path: Path) -> bool:
        """True when `path`, links followed, is a file of the staging copy itself."""
        try:
            return is_inside(path.resolve(), self.root)
        except (OSError, RuntimeError):
            return False

    def _created_by_commands(self, known: set[str]) -> list[str]:
        if not self.materialized:
            return []
        created = []
        for rel, path in self.walk_files("."):
            if rel not in known and rel not in self._copied and not path.is_symlink():
                if not _never_applied(rel) and is_inside(path.resolve(), self.root):
                    created.append(rel)
        return created

    def discard(self) -> None:
        """Removes the staging directory (after a successful apply)."""
        shutil.rmtree(self.root, ignore_errors=True)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
