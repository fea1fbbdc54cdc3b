"""Bounded waits for the MCP server: block a tool call until tasks finish, with progress.

The same event-feed following as `offload.desk.waits.wait_for`, written for the event loop:
Store calls go to a worker thread, the pause between polls is an `anyio.sleep` that a
client's cancellation interrupts at once, and a progress callback reports how many tasks
are done whenever that changes (and every few seconds, so a client that resets its
timeout on progress keeps waiting).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import anyio
import anyio.to_thread

from offload.desk.waits import POLL_SECONDS
from offload.queue.models import Event, Task
from offload.queue.store import Store

__all__ = [
    "MAX_WAIT_SECONDS",
    "PROGRESS_EVERY_SECONDS",
    "Report",
    "condition_met",
    "wait_tasks",
]

# Below the 60 s most MCP clients give a tool call, with room for the answer to travel.
MAX_WAIT_SECONDS = 55.0
PROGRESS_EVERY_SECONDS = 5.0

Report = Callable[[int, int, str], Awaitable[None]]


def condition_met(tasks: Sequence[Task], mode: str, expected: int) -> bool:
    """True when all (or any) of the tasks are final; a task purged meanwhile counts as over."""
    if len(tasks) < expected:
        return True
    finished = sum(1 for t in tasks if t.is_final)
    return finished > 0 if mode == "any" else finished == len(tasks)


async def wait_tasks(
    store: Store,
    task_ids: Sequence[str],
    *,
    mode: str,
    timeout_seconds: float,
    report: Report | None = None,
) -> tuple[list[Task], bool]:
    """Waits until all (or any) of `task_ids` are final, or `timeout_seconds` pass.

    Args:
        store: The queue.
        task_ids: Full task ids (already resolved and confined by the caller).
        mode: "all" or "any".
        timeout_seconds: How long to wait at most; 0 looks once and returns.
        report: Called with (finished, total, message) when the count of finished tasks
            changes, and every PROGRESS_EVERY_SECONDS while nothing changes.

    Returns:
        The tasks as last read, and whether the condition held.
    """
    ids = list(task_ids)
    deadline = anyio.current_time() + timeout_seconds
    cursor = await anyio.to_thread.run_sync(store.last_event_seq)
    tasks = await anyio.to_thread.run_sync(store.get_many, ids)
    reported: tuple[int, float] = (-1, anyio.current_time())
    while True:
        if condition_met(tasks, mode, len(ids)):
            return tasks, True
        if report is not None:
            reported = await _report(report, tasks, len(ids), reported)
        remaining = deadline - anyio.current_time()
        if remaining <= 0:
            return tasks, False
        await anyio.sleep(min(POLL_SECONDS, remaining))
        events = await anyio.to_thread.run_sync(_events_since, store, cursor, ids)
        if events:
            cursor = events[-1].seq
            tasks = await anyio.to_thread.run_sync(store.get_many, ids)


def _events_since(store: Store, cursor: int, ids: list[str]) -> list[Event]:
    return store.events_since(cursor, task_ids=ids)


async def _report(
    report: Report, tasks: Sequence[Task], total: int, last: tuple[int, float]
) -> tuple[int, float]:
    """Sends progress when the finished count moved or a heartbeat is due; returns the new mark."""
    finished = sum(1 for t in tasks if t.is_final)
    now = anyio.current_time()
    last_count, last_at = last
    if finished == last_count and now - last_at < PROGRESS_EVERY_SECONDS:
        return last
    running = sum(1 for t in tasks if t.state.value == "running")
    await report(finished, total, f"{finished}/{total} finished, {running} running")
    return finished, now
