"""Server-sent event streams: the Store's change feed, and one task's live output.

The Store has no push channel, so one :class:`EventHub` per server polls the newest event
seq (a single indexed read) a few times a second while anyone listens, and wakes every
stream waiting on it; a hundred open dashboards cost one poll, not a hundred. The
browser never polls: it holds one EventSource and refetches what an event says changed.

Output is not in the change feed (it lives in each task's log file), so a follow stream
reads the log forwards from a byte offset, as ``offload logs -f`` does, and ends with an
``end`` event once the task is final and its log drained.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool

from offload.desk.output import TaskOutput
from offload.errors import NotFound, OffloadError
from offload.queue.models import Task
from offload.queue.store import Store
from offload.web.models import EventOut

__all__ = ["EventHub", "change_stream", "frame", "output_stream"]

POLL_SECONDS = 0.1
OUTPUT_POLL_SECONDS = 0.1
KEEPALIVE_SECONDS = 15.0
RETRY_MS = 2000
BATCH_EVENTS = 500
OUTPUT_CHUNK_BYTES = 65_536
STATE_CHECK_SECONDS = 1.0

_log = logging.getLogger(__name__)


def frame(data: Any, *, event: str | None = None, event_id: int | None = None) -> str:
    """One server-sent event; ``data`` is sent as a single line of JSON."""
    head = f"event: {event}\n" if event else ""
    if event_id is not None:
        head += f"id: {event_id}\n"
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"


class EventHub:
    """Watches the Store's newest event seq for every stream of one server."""

    def __init__(self, store: Store, poll_seconds: float = POLL_SECONDS) -> None:
        self.seq = 0
        self._store = store
        self._poll_seconds = poll_seconds
        self._changed = asyncio.Event()
        self._wanted = asyncio.Event()
        self._listeners = 0

    async def run(self) -> None:
        """Polls while anyone listens; runs until cancelled (by the app's lifespan)."""
        while True:
            if self._listeners == 0:
                self._wanted.clear()
                await self._wanted.wait()
            try:
                seq = await run_in_threadpool(self._store.last_event_seq)
            except OffloadError as exc:  # a locked or vanished database: say so, keep going
                _log.warning("cannot read the change feed: %s", exc)
                seq = self.seq
            except Exception:  # the top of a loop that every open stream depends on
                _log.exception("the change-feed poller failed; retrying")
                seq = self.seq
            if seq != self.seq:
                self.seq = seq
                changed, self._changed = self._changed, asyncio.Event()
                changed.set()
            await asyncio.sleep(self._poll_seconds)

    async def wait_past(self, cursor: int, timeout: float) -> bool:
        """Waits until the feed holds an event after ``cursor``; False at the timeout."""
        self._listeners += 1
        self._wanted.set()
        try:
            async with asyncio.timeout(timeout):
                while self.seq <= cursor:
                    await self._changed.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._listeners -= 1


async def change_stream(store: Store, hub: EventHub, cursor: int) -> AsyncIterator[str]:
    """Every event after ``cursor``, then each new one as it lands; never ends by itself.

    The first frame is a ``ready`` event whose id is the cursor, so a browser that loses
    the connection before any change resumes from there (``Last-Event-ID``) and misses
    nothing.
    """
    yield f"retry: {RETRY_MS}\n" + frame({"seq": cursor}, event="ready", event_id=cursor)
    while True:
        events = await run_in_threadpool(store.events_since, cursor, limit=BATCH_EVENTS)
        for event in events:
            cursor = event.seq
            yield frame(EventOut.of(event).model_dump(mode="json"), event_id=cursor)
        if len(events) == BATCH_EVENTS:
            continue
        if not await hub.wait_past(cursor, KEEPALIVE_SECONDS):
            yield ": keepalive\n\n"


async def output_stream(
    store: Store, hub: EventHub, output: TaskOutput, task: Task, offset: int
) -> AsyncIterator[str]:
    """A task's output from byte ``offset`` on, as ``output`` events, then one ``end`` event.

    Each ``output`` event's ``offset`` is where the next read starts: a client that
    reconnects passes it back to carry on without gaps or repeats.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    yield f"retry: {RETRY_MS}\n" + frame(
        {"offset": offset, "state": task.state.value}, event="start"
    )
    state, final = task.state.value, task.is_final
    seen_seq, idle, quiet = hub.seq, 0.0, 0.0
    while True:
        data, offset = await run_in_threadpool(output.read, task, offset, OUTPUT_CHUNK_BYTES)
        if data:
            text = decoder.decode(data)
            held = len(decoder.getstate()[0])
            yield frame({"offset": offset - held, "text": text}, event="output")
            quiet = 0.0
            continue
        if final:
            yield frame({"offset": offset, "state": state}, event="end")
            return
        changed = await hub.wait_past(seen_seq, OUTPUT_POLL_SECONDS)
        idle, quiet = idle + OUTPUT_POLL_SECONDS, quiet + OUTPUT_POLL_SECONDS
        if changed or idle >= STATE_CHECK_SECONDS:
            seen_seq, idle = hub.seq, 0.0
            state, final = await _state_of(store, task.id)
        if quiet >= KEEPALIVE_SECONDS:
            quiet = 0.0
            yield ": keepalive\n\n"


async def _state_of(store: Store, task_id: str) -> tuple[str, bool]:
    """The task's state and whether it is final; a purged task counts as final."""
    try:
        task = await run_in_threadpool(store.get, task_id)
    except NotFound:
        return "purged", True
    return task.state.value, task.is_final
