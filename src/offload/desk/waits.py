"""Waiting on tasks by following the Store's event feed: one rule, a blocking and an async loop.

A waiter reads the tasks again only when the event feed shows a change to one of them, so a
long wait costs one indexed query per poll. The CLI blocks in `wait_for`; the MCP server
awaits `wait_tasks`, whose Store calls go to a worker thread and whose pause a client's
cancellation interrupts at once, with progress reported as tasks finish.

A wait never blocks on tasks nobody runs: every few seconds it asks `liveness` (the desk's
`ensure_live`), which starts a supervisor when the last one died — that one marks the
orphans `interrupted`, which ends the wait — or names why the tasks cannot move, which
ends the wait with `Stalled`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

from offload.collector import resume
from offload.errors import OffloadError
from offload.queue.models import Event, State, Task
from offload.queue.store import Store

__all__ = [
    "LIVENESS_EVERY_SECONDS",
    "MAX_WAIT_SECONDS",
    "POLL_SECONDS",
    "PROGRESS_EVERY_SECONDS",
    "Liveness",
    "Report",
    "Stalled",
    "condition_met",
    "unmet_message",
    "wait_for",
    "wait_tasks",
]

POLL_SECONDS = 0.05
LIVENESS_EVERY_SECONDS = 2.0
# Below the 60 s most MCP clients give a tool call, with room for the answer to travel.
MAX_WAIT_SECONDS = 55.0
PROGRESS_EVERY_SECONDS = 5.0

Report = Callable[[int, int, str], Awaitable[None]]
Liveness = Callable[[], "str | None"]


class Stalled(OffloadError):
    """The tasks waited on cannot move (e.g. their supervisor is stopped); says why."""


def unmet_message(tasks: Sequence[Task], timeout_seconds: float | None) -> str:
    """What a wait that timed out tells a person: how many tasks are in which state."""
    counts: dict[str, int] = {}
    for task in tasks:
        if not task.is_final:
            counts[task.state.value] = counts.get(task.state.value, 0) + 1
    left = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none left"
    after = f" after {timeout_seconds:g} s" if timeout_seconds is not None else ""
    return f"timed out{after}; still waiting on {left}"


def _check(liveness: Liveness | None) -> None:
    if liveness is not None:
        note = liveness()
        if note:
            raise Stalled(note)


def condition_met(tasks: Sequence[Task], mode: str, expected: int) -> bool:
    """True when all (or any) of the tasks are final; a task purged meanwhile counts as over."""
    if len(tasks) < expected:
        return True
    finished = sum(1 for t in tasks if t.is_final)
    return finished > 0 if mode == "any" else finished == len(tasks)


def _changed(store: Store, cursor: int, ids: Sequence[str]) -> tuple[int, bool]:
    """The new cursor, and whether any of `ids` changed since `cursor`."""
    events: list[Event] = store.events_since(cursor, task_ids=ids)
    return (events[-1].seq, True) if events else (cursor, False)


def wait_for(
    store: Store,
    task_ids: Sequence[str],
    *,
    mode: str = "all",
    timeout_seconds: float | None = None,
    on_tick: Callable[[list[Task]], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    liveness: Liveness | None = None,
) -> tuple[list[Task], bool]:
    """Blocks until all (or any) of `task_ids` are final, or the timeout passes.

    Args:
        liveness: Called now and every LIVENESS_EVERY_SECONDS while tasks are not done;
            returns None when someone runs them, else a note why nobody will.

    Returns:
        The tasks as last read, and whether the condition held.

    Raises:
        Stalled: `liveness` said the tasks cannot move.
    """
    resume()
    ids = list(task_ids)
    deadline = None if timeout_seconds is None else clock() + timeout_seconds
    cursor = store.last_event_seq()
    tasks = store.get_many(ids)
    next_check = clock()
    while True:
        if condition_met(tasks, mode, len(ids)):
            return tasks, True
        if on_tick is not None:
            on_tick(tasks)
        if clock() >= next_check:
            _check(liveness)
            next_check = clock() + LIVENESS_EVERY_SECONDS
        if deadline is not None and clock() >= deadline:
            return tasks, False
        sleep(POLL_SECONDS if deadline is None else max(0.0, min(POLL_SECONDS, deadline - clock())))
        cursor, changed = _changed(store, cursor, ids)
        if changed:
            tasks = store.get_many(ids)


async def wait_tasks(
    store: Store,
    task_ids: Sequence[str],
    *,
    mode: str,
    timeout_seconds: float,
    report: Report | None = None,
    liveness: Liveness | None = None,
) -> tuple[list[Task], bool]:
    """Waits in an event loop until all (or any) of `task_ids` are final, or the timeout.

    Args:
        store: The queue.
        task_ids: Full task ids (already resolved and confined by the caller).
        mode: "all" or "any".
        timeout_seconds: How long to wait at most; 0 looks once and returns.
        report: Called with (finished, total, message) when the count of finished tasks
            changes, and every PROGRESS_EVERY_SECONDS while nothing changes.
        liveness: As for `wait_for` (run in a worker thread).

    Returns:
        The tasks as last read, and whether the condition held.

    Raises:
        Stalled: `liveness` said the tasks cannot move.
    """
    import anyio
    import anyio.to_thread

    ids = list(task_ids)
    deadline = anyio.current_time() + timeout_seconds
    cursor = await anyio.to_thread.run_sync(store.last_event_seq)
    tasks = await anyio.to_thread.run_sync(store.get_many, ids)
    reported: tuple[int, float] = (-1, anyio.current_time())
    next_check = anyio.current_time()
    while True:
        if condition_met(tasks, mode, len(ids)):
            return tasks, True
        if report is not None:
            reported = await _report(report, tasks, len(ids), reported, anyio.current_time())
        if anyio.current_time() >= next_check:
            await anyio.to_thread.run_sync(_check, liveness)
            next_check = anyio.current_time() + LIVENESS_EVERY_SECONDS
        remaining = deadline - anyio.current_time()
        if remaining <= 0:
            return tasks, False
        await anyio.sleep(min(POLL_SECONDS, remaining))
        cursor, changed = await anyio.to_thread.run_sync(_changed, store, cursor, ids)
        if changed:
            tasks = await anyio.to_thread.run_sync(store.get_many, ids)


async def _report(
    report: Report, tasks: Sequence[Task], total: int, last: tuple[int, float], now: float
) -> tuple[int, float]:
    """Sends progress when the finished count moved or a heartbeat is due; returns the new mark."""
    finished = sum(1 for t in tasks if t.is_final)
    last_count, last_at = last
    if finished == last_count and now - last_at < PROGRESS_EVERY_SECONDS:
        return last
    running = sum(1 for t in tasks if t.state is State.RUNNING)
    await report(finished, total, f"{finished}/{total} finished, {running} running")
    return finished, now
