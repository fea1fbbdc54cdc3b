"""Writing an LLM task's files: confined to the workspace, atomic, all or nothing.

Three phases. First every path is resolved (symlinks followed) and checked against the
workspace roots; one bad path refuses the whole answer before anything touches the disk.
Then each file is written to a temporary file in its target directory and flushed. Only
then is each temporary renamed over its target; should a rename fail, the files already
replaced get their old contents back. An existing file keeps its permission bits.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from offload.errors import InvalidInput, OffloadError, PolicyRefused
from offload.policies.paths import resolve_inside

__all__ = [
    "PROTECTED_NAMES",
    "FileWrite",
    "Snapshot",
    "WriteFailed",
    "plan_writes",
    "replace_all",
    "write_files",
]

_TEMP_PREFIX = ".offload-tmp-"
# Directories no answer may write into: a file there runs later (a git hook runs on the
# next commit or push), so model output or an injected context file must never land there.
PROTECTED_NAMES = frozenset({".git", ".hg", ".svn"})


class WriteFailed(OffloadError):
    """The files could not be written; nothing was changed."""


@dataclass(frozen=True)
class FileWrite:
    """A file an answer wants written: its path as given and its full new content."""

    path: str
    content: str


@dataclass
class _Target:
    path: Path
    data: bytes
    mode: int
    old: bytes | None = None
    temp: Path | None = None
    replaced: bool = False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def plan_writes(
    writes: Sequence[FileWrite],
    roots: Sequence[Path],
    base: Path,
    *,
    forbidden: Sequence[Path] = (),
) -> list[Path]:
    """Resolves and checks every path of an answer without writing anything.

    Raises:
        PolicyRefused: a path resolves outside the workspace roots.
        InvalidInput: no files, a path listed twice, or a path that is a directory.
    """
    if not writes:
        raise InvalidInput("the answer names no file to write")
    resolved: list[Path] = []
    for item in writes:
        path = resolve_inside(item.path, roots, base=base, forbidden=forbidden)
        inside = _relative_to_root(path, roots)
        if PROTECTED_NAMES.intersection(inside.parts):
            raise PolicyRefused(
                f"the answer writes {item.path}, inside a version-control directory "
                f"({', '.join(sorted(PROTECTED_NAMES))}); nothing was written"
            )
        if path in resolved:
            raise InvalidInput(f"the answer writes {item.path} twice")
        if path.is_dir():
            raise InvalidInput(f"the answer writes {item.path}, which is a directory")
        resolved.append(path)
    return resolved


def _relative_to_root(path: Path, roots: Sequence[Path]) -> Path:
    for root in roots:
        if path.is_relative_to(root.resolve()):
            return path.relative_to(root.resolve())
    return path


class Snapshot:
    """The files a task read or will write, as they were before the model was called, so
    an edit made while the model answered is never overwritten (all-or-nothing refusal).

    Files it did not record must not have changed since `started_ns` either.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self.started_ns = time.time_ns()
        self._before = {path: _read(path) for path in paths}

    def check(self, paths: Sequence[Path], shown: Callable[[Path], str]) -> None:
        """Raises WriteFailed when any of `paths` changed since the snapshot."""
        for path in paths:
            if path in self._before:
                changed = _read(path) != self._before[path]
            else:
                try:
                    changed = path.stat().st_mtime_ns >= self.started_ns
                except FileNotFoundError:
                    changed = False
            if changed:
                raise WriteFailed(
                    f"{shown(path)} changed while the task ran; nothing was written, so "
                    "the edit is kept: retry the task to build on it"
                )


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _prepare(items: Sequence[tuple[Path, bytes]]) -> list[_Target]:
    default_mode = 0o666 & ~_umask()
    targets = []
    for path, data in items:
        old = None
        mode = default_mode
        if path.exists():
            mode = stat.S_IMODE(path.stat().st_mode)
            old = path.read_bytes()
        targets.append(_Target(path, data, mode, old))
    return targets


def _write_temp(target: _Target) -> None:
    fd, name = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=target.path.parent)
    target.temp = Path(name)
    with os.fdopen(fd, "wb") as handle:
        handle.write(target.data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(name, target.mode)


def _undo(targets: Sequence[_Target], made_dirs: Sequence[Path]) -> None:
    for target in targets:
        if target.temp is not None:
            with contextlib.suppress(OSError):
                target.temp.unlink()
        if target.replaced:
            with contextlib.suppress(OSError):
                if target.old is None:
                    target.path.unlink()
                else:
                    target.path.write_bytes(target.old)
    for directory in reversed(made_dirs):
        with contextlib.suppress(OSError):
            directory.rmdir()


def _make_parents(paths: Sequence[Path]) -> list[Path]:
    made: list[Path] = []
    for path in paths:
        missing = [p for p in reversed(path.parents) if not p.exists()]
        for directory in missing:
            directory.mkdir()
            made.append(directory)
    return made


def replace_all(
    items: Sequence[tuple[Path, bytes]], before_rename: Callable[[], None] | None = None
) -> None:
    """Writes each (path, bytes) pair, all or nothing; the paths are already confined.

    Every file goes to a flushed temporary beside its target first; `before_rename` (a
    last check, e.g. that nobody changed a target meanwhile) runs then, and only if it
    returns are the temporaries renamed over their targets. Any failure, or an exception
    from `before_rename`, undoes everything (old contents back, new directories removed)
    and is re-raised. Existing files keep their permission bits.

    Raises:
        OSError: the disk refused (nothing changed).
    """
    targets: list[_Target] = []
    made_dirs: list[Path] = []
    try:
        targets = _prepare(items)
        made_dirs = _make_parents([path for path, _ in items])
        for target in targets:
            _write_temp(target)
        if before_rename is not None:
            before_rename()
        for target in targets:
            assert target.temp is not None
            os.replace(target.temp, target.path)
            target.temp, target.replaced = None, True
    except BaseException:
        _undo(targets, made_dirs)
        raise


def write_files(
    writes: Sequence[FileWrite],
    roots: Sequence[Path],
    base: Path,
    *,
    forbidden: Sequence[Path] = (),
    snapshot: Snapshot | None = None,
) -> list[Path]:
    """Writes every file of an answer, or none of them.

    Args:
        writes: The files and their contents.
        roots: The allowed workspace roots.
        base: What relative paths are relative to.
        forbidden: Directories never written (offload's data dir).
        snapshot: When given, the targets must not have changed since it was taken
            (checked again just before the renames).

    Returns:
        The absolute paths written, in answer order.

    Raises:
        PolicyRefused: a path resolves outside the roots (nothing written).
        InvalidInput: a path is listed twice or is a directory (nothing written).
        WriteFailed: the disk refused (nothing changed).
    """
    paths = plan_writes(writes, roots, base, forbidden=forbidden)
    check = None
    if snapshot is not None:
        snapshot.check(paths, str)
        check = lambda: snapshot.check(paths, str)  # noqa: E731
    try:
        replace_all(
            [(p, w.content.encode("utf-8")) for p, w in zip(paths, writes, strict=True)],
            check,
        )
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise WriteFailed(
            f"cannot write the files: {exc.strerror or exc}{where}; nothing was written"
        ) from None
    return paths
