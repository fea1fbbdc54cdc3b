"""The service layer every front end shares: `Desk`, built by `open_desk`.

The CLI, the MCP server, the HTTP API and an agent task's `submit_task` tool are thin
adapters over a desk; see `offload.desk.desk` for the verbs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from offload.clock import now_ms
from offload.config import Settings
from offload.desk.desk import MAX_LIST, MIN_PREFIX, STATE_FILTERS, Desk, check_task_id
from offload.desk.output import LocalOutput, StoreOutput, TaskOutput, log_path, output_for
from offload.queue.store import Store

if TYPE_CHECKING:
    from offload.policies.task_policy import TaskPolicy
    from offload.submission import Submitter

__all__ = [
    "MAX_LIST",
    "MIN_PREFIX",
    "STATE_FILTERS",
    "Desk",
    "LocalOutput",
    "StoreOutput",
    "TaskOutput",
    "check_task_id",
    "log_path",
    "open_desk",
    "wake_supervisor",
]


def wake_supervisor(settings: Settings) -> None:
    """Wakes the supervisor of this data dir, starting one when none runs (the one place)."""
    from offload.supervisor.launch import ensure_supervisor

    ensure_supervisor(settings.home)


def open_desk(
    settings: Settings,
    *,
    workspace: Path | str,
    confined: bool,
    store: Store | None = None,
    wake: Callable[[], object] | None = None,
    environ: Mapping[str, str] | None = None,
    policy: TaskPolicy | None = None,
    agent: bool = False,
) -> Desk:
    """A desk on the queue the settings name.

    Args:
        settings: The loaded settings (data dir, policy, backend).
        workspace: The directory submissions run in and are checked against.
        confined: True to see only tasks of `workspace` (MCP, agents); False for all.
        store: The queue to use; by default the one `open_store(settings)` opens.
        wake: Wakes (or starts) the supervisor; by default `wake_supervisor`.
        environ: The front end's environment, which tasks submitted here run with
            (scrubbed); None: they run with the supervisor's.
        policy: The policy tasks submitted here are judged by and stored with, instead of
            the one `settings` give (an agent's sub-tasks pass their parent's).
        agent: An agent's door (MCP, an agent task's tools): with `sandbox = auto` its
            tasks are sandboxed, and it can never turn its own containment off. A
            person's door (CLI) sandboxes only when asked or with `sandbox = on`.

    Raises:
        ConfigError: An allow/deny pattern is not a valid regex (when `confined`; an
            unconfined desk reports it on its first submit).
        StoreError: The queue database cannot be opened.
    """
    from offload.queue import open_store

    mode = str(settings.sandbox).lower()
    sandbox = mode in {"on", "true"} or (mode == "auto" and agent)

    def make_submitter() -> Submitter:
        from offload.submission import Submitter

        return Submitter.for_workspace(
            settings, root, policy=policy, sandbox=sandbox, person=not agent
        )

    root = Path(workspace).resolve()
    store = store if store is not None else open_store(settings)
    desk = Desk(
        settings=settings,
        store=store,
        output=output_for(settings, store),
        make_submitter=make_submitter,
        scope=str(root) if confined else None,
        wake=wake if wake is not None else (lambda: wake_supervisor(settings)),
        clock_ms=now_ms,
        sleep=time.sleep,
        environ=environ,
    )
    if confined:  # an agent's door fails at start on a bad policy, not at its first submit
        desk.submitter  # noqa: B018
    return desk
