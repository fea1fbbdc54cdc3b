"""Steering injection: the project's rules files, prepended to every system prompt.

Configured `rules_files` (relative to the workspace, or absolute) are all used, in order;
without any, the first of `CLAUDE.md`, `AGENTS.md`, `.clinerules` found in the workspace
is. A `.clinerules` directory contributes its files in name order. Discovered files must
resolve inside the workspace (a symlink out of it is refused); the total is capped by
`max_rules_bytes` and a file past the cap is an error naming it, never a silent cut.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from offload.errors import InvalidInput
from offload.policies.paths import resolve_inside

__all__ = ["DISCOVERED_RULES", "Rules", "load_rules"]

DISCOVERED_RULES = ("CLAUDE.md", "AGENTS.md", ".clinerules")


@dataclass(frozen=True)
class Rules:
    """The rules text to prepend and the files it came from."""

    text: str
    sources: tuple[Path, ...]


def _files_of(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file())
    return [path] if path.is_file() else []


def _read(path: Path, used: int, max_bytes: int) -> str:
    size = path.stat().st_size
    if size > max_bytes:
        raise InvalidInput(
            f"rules file {path} is {size} bytes; max_rules_bytes is {max_bytes}: "
            "shorten it or raise max_rules_bytes"
        )
    if used + size > max_bytes:
        raise InvalidInput(
            f"rules files reach {used + size} bytes with {path}; max_rules_bytes is "
            f"{max_bytes}: list fewer rules_files or raise max_rules_bytes"
        )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"rules file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read rules file {path}: {exc.strerror}") from None


def _configured(names: Sequence[str], workspace: Path, note: Callable[[str], None]) -> list[Path]:
    found: list[Path] = []
    for name in names:
        path = Path(os.path.expanduser(name))
        path = path if path.is_absolute() else workspace / path
        files = _files_of(path)
        if not files:
            note(f"rules file {path} (rules_files) not found; skipped")
        found.extend(files)
    return found


def _discovered(workspace: Path, roots: Sequence[Path]) -> list[Path]:
    for name in DISCOVERED_RULES:
        candidate = workspace / name
        if candidate.exists():
            return _files_of(resolve_inside(candidate, roots, base=workspace))
    return []


def load_rules(
    workspace: Path,
    roots: Sequence[Path],
    configured: Sequence[str],
    max_bytes: int,
    note: Callable[[str], None] = lambda _: None,
) -> Rules | None:
    """Reads the rules that apply to a task in `workspace`, or None when there are none.

    Args:
        workspace: The task's workspace root.
        roots: Every allowed root (discovered files must resolve inside one).
        configured: `rules_files` from the config; empty means discover.
        max_bytes: `max_rules_bytes`, the cap on all rules together.
        note: Told about configured files that were not found.

    Raises:
        InvalidInput: a rules file is over the cap, unreadable or not UTF-8.
        PolicyRefused: a discovered rules file resolves outside the workspace.
    """
    if configured:
        files = _configured(configured, workspace, note)
    else:
        files = _discovered(workspace, roots)
    parts: list[str] = []
    used = 0
    for path in files:
        text = _read(path, used, max_bytes)
        used += len(text.encode("utf-8"))
        parts.append(text.strip())
    parts = [p for p in parts if p]
    if not parts:
        return None
    return Rules(text="\n\n".join(parts), sources=tuple(files))
