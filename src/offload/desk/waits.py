"""Waiting on tasks by following the Store's event feed, shared by every front end."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from offload.queue.models import Task
from offload.queue.store import Store

__all__ = ["POLL_SECONDS", "wait_for"]

POLL_SECONDS = 0.05


def _done(tasks: Sequence[Task], mode: str, expected: int) -> bool:
    finished = [t for t in tasks if t.is_final]
    if len(tasks) < expected:  # a task was purged while we waited: it is over too
        return True
    return bool(finished) if mode == "any" else len(finished) == len(tasks)


def wait_for(
    store: Store,
    task_ids: Sequence[str],
    *,
    mode: str = "all",
    timeout_seconds: float | None = None,
    on_tick: Callable[[list[Task]], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[list[Task], bool]:
    """Blocks until all (or any) of `task_ids` are final, or the timeout passes.

    Reads the tasks again only when the event feed shows a change to one of them, so a
    long wait costs one indexed query per poll. Returns (tasks, condition_met).
    """
    deadline = None if timeout_seconds is None else clock() + timeout_seconds
    cursor = store.last_event_seq()
    tasks = store.get_many(task_ids)
    while True:
        if _done(tasks, mode, len(task_ids)):
            return tasks, True
        if on_tick is not None:
            on_tick(tasks)
        if deadline is not None and clock() >= deadline:
            return tasks, False
        sleep(POLL_SECONDS if deadline is None else max(0.0, min(POLL_SECONDS, deadline - clock())))
        events = store.events_since(cursor, task_ids=task_ids)
        if events:
            cursor = events[-1].seq
            tasks = store.get_many(task_ids)
