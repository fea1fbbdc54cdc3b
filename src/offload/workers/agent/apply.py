"""Applying an agent's staged files to the workspace: all of them in one step, or none.

Before anything is written, every target is confined again (it may have become a link
out of the workspace since) and its current content is compared with the hash the agent
saw: a file someone else changed (or created, or deleted) in the meantime refuses the
whole apply, naming every such file. Then each file is written to a temporary file beside
its target and flushed; the hashes are checked once more; only then is each temporary
renamed over its target. Should a rename fail, the files already replaced get their old
contents back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from offload.errors import OffloadError, PolicyRefused
from offload.policies.paths import resolve_inside
from offload.workers.agent.staging import NEVER_APPLIED, Change, sha256_of
from offload.workers.files import replace_all

__all__ = ["ApplyConflict", "ApplyFailed", "apply_changes"]


class ApplyConflict(OffloadError):
    """Workspace files changed since the agent saw them; nothing was applied."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__(
            "not applied: changed in the workspace since the agent read it: "
            + ", ".join(names)
            + "; nothing was written (the staged files are kept)"
        )
        self.names = list(names)


class ApplyFailed(OffloadError):
    """The disk refused a write; nothing was changed."""


@dataclass(frozen=True)
class _Target:
    change: Change
    path: Path


def _current_hash(path: Path) -> str | None:
    return sha256_of(path) if path.is_file() else None


def _conflicts(targets: Sequence[_Target]) -> list[str]:
    return [t.change.rel for t in targets if _current_hash(t.path) != t.change.base]


def _plan(changes: Sequence[Change], workspace: Path) -> list[_Target]:
    targets = []
    for change in changes:
        if NEVER_APPLIED.intersection(change.rel.split("/")):
            raise PolicyRefused(f"{change.rel} is under a directory never applied (.git, caches)")
        path = resolve_inside(change.rel, [workspace], base=workspace)
        if path.is_file() and path.read_bytes() == change.data:
            continue  # already what the agent wants (the same edit made twice)
        targets.append(_Target(change, path))
    return targets


def apply_changes(changes: Sequence[Change], workspace: Path) -> list[Path]:
    """Writes every staged change into the workspace, or none of them.

    Returns:
        The workspace files written (changes already in place are skipped).

    Raises:
        ApplyConflict: a target's content differs from what the agent saw.
        PolicyRefused: a target now resolves outside the workspace or lies under a
            directory never applied (`.git`, caches).
        ApplyFailed: the disk refused (nothing changed).
    """
    targets = _plan(changes, workspace)
    conflicts = _conflicts(targets)
    if conflicts:
        raise ApplyConflict(conflicts)

    def unchanged_since_checked() -> None:
        late = _conflicts(targets)
        if late:
            raise ApplyConflict(late)

    try:
        replace_all([(t.path, t.change.data) for t in targets], unchanged_since_checked)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise ApplyFailed(
            f"cannot apply the staged files: {exc.strerror or exc}{where}; nothing was written"
        ) from None
    return [t.path for t in targets]
