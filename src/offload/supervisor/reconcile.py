"""Keeping the supervisor's processes and the queue's records in agreement.

The queue can change under a running task: someone asks to cancel it, or its row is
changed outside this supervisor (marked final, or taken by another); and a claim can be
recorded without a process (the supervisor lost it between claim and spawn). The loop
looks for each, and acts on the processes or the record, never leaving them disagreeing.
"""

from __future__ import annotations

from typing import Any

from offload.queue.models import State
from offload.queue.store import Store
from offload.supervisor.tracker import Tracker

__all__ = ["adopt_lost", "carry_out_cancels", "kill_changed_outside"]


def carry_out_cancels(store: Store, tracker: Tracker, now: float) -> None:
    """Starts killing every running task whose cancel was asked for."""
    by_id = {r.task.id: r for r in tracker.running.values()}
    for task in store.cancel_requests():
        run = by_id.get(task.id)
        if run is not None:
            tracker.start_kill(run, State.CANCELLED, "cancelled while running", now)


def kill_changed_outside(store: Store, tracker: Tracker, log: Any, now: float) -> None:
    """Kills the trees of tasks whose rows were changed outside this supervisor.

    Someone marked them final (or another supervisor took them): their finish will be
    refused, so their processes must not run on unmanaged.
    """
    mine = {r.task.id: r for r in tracker.running.values() if r.kill_state is None}
    if not mine:
        return
    for task in store.get_many(list(mine)):
        run = mine[task.id]
        if task.state is not State.RUNNING or task.supervisor_id != run.task.supervisor_id:
            log.error("row_changed_outside", task_id=task.id, state=task.state.value)
            error = f"its record was changed outside the supervisor ({task.state.value})"
            tracker.start_kill(run, task.state, error, now)


def adopt_lost(store: Store, tracker: Tracker, supervisor_id: str | None) -> None:
    """Fails tasks claimed under `supervisor_id` that no process runs (a lost spawn)."""
    mine = tracker.task_ids()
    for task in store.running():
        if task.supervisor_id == supervisor_id and task.id not in mine:
            error = "the supervisor lost track of it before it started; retry it"
            tracker.record(task.id, State.FAILED, error=error, supervisor_id=supervisor_id)
