"""Context files: what an LLM task is given to read, confined and capped.

Each file is resolved again when the task runs (it may have become a symlink since it was
submitted) and must stay inside the workspace. A file over `max_context_file_bytes`, a
total over `max_context_total_bytes`, a missing file or one that is not UTF-8 text is an
error naming the file and the setting: context is never silently truncated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from offload.errors import InvalidInput
from offload.policies.paths import resolve_inside

__all__ = ["ContextFile", "display_path", "read_context", "read_one"]


@dataclass(frozen=True)
class ContextFile:
    """One file's text and the path the model is shown (relative to the workspace)."""

    path: Path
    display: str
    text: str

    @property
    def size(self) -> int:
        """Its size in UTF-8 bytes."""
        return len(self.text.encode("utf-8"))


def display_path(path: Path, workspace: Path) -> str:
    """`path` relative to the workspace when inside it, else absolute."""
    try:
        return str(path.relative_to(workspace))
    except ValueError:
        return str(path)


def read_one(
    name: str,
    roots: Sequence[Path],
    workspace: Path,
    limit: int,
    what: str = "context file",
    *,
    forbidden: Sequence[Path] = (),
) -> ContextFile:
    """Reads one confined file of at most `limit` bytes.

    Raises:
        PolicyRefused: the file resolves outside every root.
        InvalidInput: it is missing, not a file, too big, unreadable or not UTF-8.
    """
    path = resolve_inside(name, roots, base=workspace, forbidden=forbidden)
    shown = display_path(path, workspace)
    if not path.is_file():
        raise InvalidInput(f"{what} {shown} does not exist or is not a file")
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} {shown}: {exc.strerror}") from None
    if len(data) > limit:
        size = path.stat().st_size
        raise InvalidInput(
            f"{what} {shown} is {size} bytes; max_context_file_bytes is {limit}: "
            "give a smaller file or raise max_context_file_bytes"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{what} {shown} is not UTF-8 text") from None
    return ContextFile(path=path, display=shown, text=text)


def read_context(
    names: Sequence[str],
    roots: Sequence[Path],
    workspace: Path,
    *,
    per_file_bytes: int,
    total_bytes: int,
    already_used: int = 0,
    forbidden: Sequence[Path] = (),
) -> list[ContextFile]:
    """Reads every context file, enforcing the per-file and total caps.

    Args:
        names: The task's context_files (absolute, or relative to the workspace).
        roots: The allowed workspace roots.
        workspace: The task's workspace (for relative names and display).
        per_file_bytes: `max_context_file_bytes`.
        total_bytes: `max_context_total_bytes`.
        already_used: Bytes of context counted before these (the current output file).
        forbidden: Directories no context file may come from (offload's data dir).

    Raises:
        PolicyRefused, InvalidInput: naming the file that broke a rule.
    """
    files: list[ContextFile] = []
    used = already_used
    for name in names:
        item = read_one(name, roots, workspace, per_file_bytes, forbidden=forbidden)
        used += item.size
        if used > total_bytes:
            raise InvalidInput(
                f"context files reach {used} bytes with {item.display}; "
                f"max_context_total_bytes is {total_bytes}: give fewer files or raise it"
            )
        files.append(item)
    return files
