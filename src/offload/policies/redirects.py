"""Redirection targets: where a command line's ``>``, ``>>``, ``<>``, ``2>`` ... may point.

An allowed ``echo`` is harmless until it writes ``> $OFFLOAD_HOME/config.toml``. While an
allow list is in force every file a redirection opens must be a static path (no ``$X``,
``~`` or glob) that resolves, symlinks followed, inside the workspace roots; ``/dev/null``
and the standard streams are always fine. Whatever the lists, a static target inside
offload's data directory is refused. Relative targets resolve against the task's cwd, and
are refused under an allow list when the line changes directory first (``cd /etc && echo
x > passwd``). Pure but for resolving paths.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from offload.errors import ConfigError, PolicyRefused
from offload.policies.paths import is_inside, resolve_inside
from offload.policies.shell_words import Redirect, SimpleCommand

__all__ = ["judge_redirects"]

_STREAMS = frozenset({"/dev/null", "/dev/stdin", "/dev/stdout", "/dev/stderr", "/dev/tty"})
_FD_PATH = re.compile(r"/dev/fd/[0-9]+|/proc/self/fd/[0-9]+")
_CHDIR = frozenset({"cd", "chdir", "pushd", "popd"})  # dash has chdir too


def judge_redirects(
    commands: Sequence[SimpleCommand],
    *,
    strict: bool,
    roots: Sequence[Path],
    forbidden: Sequence[Path],
    cwd: Path | str | None,
) -> str | None:
    """The reason a redirection of `commands` is refused, or None when all may stand.

    Args:
        commands: The simple commands of one line.
        strict: An allow list is in force: targets must be static and inside `roots`.
        roots: The workspace roots.
        forbidden: Directories no target may reach (offload's data directory).
        cwd: What relative targets are relative to (default: the first root).
    """
    changes_dir = any(_changes_dir(cmd) for cmd in commands)
    base = Path(cwd) if cwd is not None else (roots[0] if roots else None)
    judged: set[tuple[str, str]] = set()  # a target written many times is resolved once
    for cmd in commands:
        for redirect in cmd.redirects:
            if not redirect.opens_file or (redirect.op, redirect.target.raw) in judged:
                continue
            judged.add((redirect.op, redirect.target.raw))
            reason = _target_reason(redirect, strict, roots, forbidden, base, changes_dir)
            if reason:
                return reason
    return None


def _changes_dir(cmd: SimpleCommand) -> bool:
    values = [word.value for word in cmd.words[:3]]
    return any(value in _CHDIR for value in values if value is not None)


def _target_reason(
    redirect: Redirect,
    strict: bool,
    roots: Sequence[Path],
    forbidden: Sequence[Path],
    base: Path | None,
    changes_dir: bool,
) -> str | None:
    written = f"{redirect.fd}{redirect.op} {redirect.target.raw}"
    target = redirect.target.value
    if target is None:
        if not strict:
            return None
        return (
            f"redirection {written!r} names its file with an expansion ($VAR, ~, a glob or "
            "a substitution) that cannot be judged while an allow list is in force; "
            "write the path out"
        )
    if target in _STREAMS or _FD_PATH.fullmatch(target):
        return None
    path = Path(target)
    if not path.is_absolute():
        if strict and changes_dir:
            return (
                f"redirection {written!r} is relative, and the line changes directory first; "
                "use an absolute path inside the workspace"
            )
        if base is None:
            return (
                f"redirection {written!r} is relative to an unknown directory" if strict else None
            )
        path = base / path
    return _path_reason(path, written, strict, roots, forbidden)


def _path_reason(
    path: Path, written: str, strict: bool, roots: Sequence[Path], forbidden: Sequence[Path]
) -> str | None:
    """Judge an absolute target: never the data dir; under an allow list, inside a root."""
    try:
        resolved = path.resolve(strict=False)
    except (OSError, RuntimeError):
        return f"redirection {written!r} cannot be resolved; check for a symlink loop"
    for banned in forbidden:
        if is_inside(resolved, Path(banned).resolve(strict=False)):
            return f"redirection {written!r} reaches offload's data directory; tasks may not"
    if not strict:
        return None
    if not roots:
        return f"redirection {written!r}: no workspace root is known to check it against"
    try:
        resolve_inside(path, roots, forbidden=forbidden)
    except (PolicyRefused, ConfigError) as exc:
        return f"redirection {written!r} refused: {exc}"
    return None
