"""Workspace confinement: every path a task uses must stay inside an allowed root.

cwd, output_path, context_files and every file an LLM or agent task touches go through
:func:`resolve_inside`. Symlinks are followed before the check, so a link inside the
workspace that points outside it is refused; paths that do not exist yet (an output file)
are still resolved as far as they exist.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from offload.errors import ConfigError, PolicyRefused

__all__ = ["is_inside", "resolve_inside"]


def resolve_inside(
    path: str | os.PathLike[str],
    roots: Sequence[Path],
    base: Path | None = None,
    *,
    forbidden: Sequence[Path] = (),
) -> Path:
    """Resolve ``path`` and check it lies inside one of ``roots`` and outside ``forbidden``.

    Args:
        path: The path as the submitter gave it. ``~`` is not expanded: it is a plain name.
        roots: The allowed workspace roots (resolved here too, so a root may be a symlink).
        base: What a relative ``path`` is relative to; defaults to the first root.
        forbidden: Directories no task may touch even inside a root (offload's own data
            directory, which holds the API token, the config and the queue).

    Returns:
        The absolute path with every symlink followed.

    Raises:
        PolicyRefused: The path is empty, holds a NUL byte, cannot be resolved (a symlink
            loop) or resolves outside every root.
        ConfigError: No root is given, or a root cannot be resolved.
    """
    given = _as_text(path)
    resolved_roots = [_resolve_root(root) for root in roots]
    if not resolved_roots:
        raise ConfigError("no workspace root is configured; give at least one directory")
    candidate = Path(given)
    if not candidate.is_absolute():
        candidate = (Path(base) if base is not None else resolved_roots[0]) / candidate
    if _through_proc(candidate):
        raise PolicyRefused(
            f"path {given!r} goes through /proc, whose links (/proc/self/cwd, "
            "/proc/self/fd/...) mean something else in the task than where it is checked; "
            "name the file itself"
        )
    resolved = _resolve(candidate, given)
    for banned in forbidden:
        if is_inside(resolved, _resolve(Path(banned), str(banned))):
            raise PolicyRefused(
                f"path {given!r} is inside offload's data directory {str(banned)!r}; "
                "tasks may not read or write it"
            )
    if any(is_inside(resolved, root) for root in resolved_roots):
        return resolved
    raise PolicyRefused(
        f"path {given!r} resolves to {str(resolved)!r}, outside the "
        f"{_describe(resolved_roots)}; use a path inside it"
    )


def is_inside(path: Path, root: Path) -> bool:
    """Tell whether ``path`` is ``root`` or below it.

    A purely lexical test: both paths must already be absolute and resolved (as
    :func:`resolve_inside` makes them). A path still holding ``..`` is never inside.
    """
    if ".." in path.parts or ".." in root.parts:
        return False
    return path.is_relative_to(root)


_PROC = Path("/proc")
_MAX_LINKS = 40  # as the kernel's own limit; past it `_resolve` reports the loop


def _through_proc(path: Path) -> bool:
    """True when resolving `path` (absolute) passes through /proc, by name or by a link.

    ``/proc/self/cwd`` is the checking process's directory while the check runs and the
    task's when it runs (after a ``cd``), so a path through it cannot be judged here.
    """
    pending = list(path.parts[1:])
    current = Path("/")
    links = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent
            continue
        step = current / part
        if step == _PROC:
            return True
        try:
            target = os.readlink(step)
        except OSError:
            current = step  # not a link (or missing): take the name as it is
            continue
        links += 1
        if links > _MAX_LINKS:
            return False
        pending[:0] = list(Path(target).parts)
        if target.startswith("/"):
            pending.pop(0)
            current = Path("/")
    return False


def _as_text(path: str | os.PathLike[str]) -> str:
    given = os.fspath(path)
    if not isinstance(given, str):
        raise PolicyRefused(f"path {given!r} must be text, not bytes")
    if not given:
        raise PolicyRefused("path is empty; give a file or directory inside the workspace")
    if "\0" in given:
        raise PolicyRefused(f"path {given!r} contains a NUL byte; no file can have that name")
    return given


def _resolve(candidate: Path, given: str) -> Path:
    try:
        return candidate.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # 3.11 reports a symlink loop as RuntimeError
        raise PolicyRefused(
            f"path {given!r} cannot be resolved ({exc}); check for a symlink loop"
        ) from exc


def _resolve_root(root: Path | str) -> Path:
    try:
        return Path(root).resolve(strict=False)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"workspace root {str(root)!r} cannot be resolved: {exc}") from exc


def _describe(roots: Sequence[Path]) -> str:
    if len(roots) == 1:
        return f"workspace {str(roots[0])!r}"
    return "workspaces " + ", ".join(repr(str(root)) for root in roots)
