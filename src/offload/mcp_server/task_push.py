"""Pushing task status to clients: `notifications/tasks` on `subscriptions/listen` streams.

The Tasks extension (SEP-2663, protocol 2026-07-28) lets a server push status instead of
making the client poll `tasks/get`. The client asks for it: it sends `subscriptions/listen`
with `notifications.taskIds` (and must have declared the extension, else error -32021);
the acknowledgement names the ids offload will report on, and every later frame on that
stream is a `notifications/tasks` carrying the task exactly as `tasks/get` would answer it.
The same request works on stdio and on Streamable HTTP (where its response is an SSE
stream); the 2025-11-25 protocol has neither the extension nor this method, so a client on
it gets plain results and polls with `wait_for_tasks`.

One watcher per stream follows the Store's event feed for the stream's unfinished tasks
(one indexed query per poll) and pushes a task when its status changes. Right after the
acknowledgement it pushes each task's current state, so a task that finished before the
client subscribed is still reported. When every watched task is final the stream ends
gracefully; when the client goes away the SDK cancels the handler. Either way nothing is
left running. A listen without `taskIds` is the SDK's own handler's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import anyio
import anyio.to_thread
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import RequestHandler
from mcp.server.mcpserver import require_client_extension
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import SUBSCRIPTION_ID_META_KEY
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST
from pydantic import BaseModel, ConfigDict

from offload.desk import Desk
from offload.errors import OffloadError
from offload.mcp_server.tasks_ext import TASKS_EXTENSION, TasksExtension, task_status
from offload.queue.models import Task
from offload.queue.store import Store

__all__ = [
    "MAX_TASK_STREAMS",
    "MAX_WATCHED_TASKS",
    "PUSH_POLL_SECONDS",
    "TASK_NOTIFICATION",
    "TaskListen",
    "TaskStatusNotification",
]

TASK_NOTIFICATION = "notifications/tasks"
PUSH_POLL_SECONDS = 0.25
MAX_WATCHED_TASKS = 100
MAX_TASK_STREAMS = 64
_FINAL = frozenset({"completed", "failed", "cancelled"})


class TaskStatusParams(types.NotificationParams):
    """A `DetailedTask` (taskId, status, ..., result or error) plus the stream's `_meta`."""

    model_config = ConfigDict(extra="allow")


class TaskStatusNotification(types.Notification[TaskStatusParams, Literal["notifications/tasks"]]):
    """`notifications/tasks`: one task's full state, as tasks/get would answer it."""

    method: Literal["notifications/tasks"] = "notifications/tasks"
    params: TaskStatusParams


def _requested_ids(wanted: types.SubscriptionFilter) -> list[str] | None:
    """The `taskIds` a listen asks for; None when it asks for none.

    Raises:
        MCPError: `taskIds` is not a short list of strings.
    """
    raw = (wanted.model_extra or {}).get("taskIds")
    if raw is None:
        return None
    if (
        not isinstance(raw, list)
        or len(raw) > MAX_WATCHED_TASKS
        or not all(isinstance(i, str) and 0 < len(i) <= 64 for i in raw)
    ):
        raise MCPError(
            INVALID_PARAMS,
            f"notifications.taskIds must be a list of at most {MAX_WATCHED_TASKS} task ids "
            "(the taskId of each task handle); open another subscription for more",
        )
    return list(dict.fromkeys(raw))


class TaskListen:
    """Serves `subscriptions/listen`: task ids here, every other listen by `fallback`."""

    def __init__(
        self, tasks: TasksExtension, fallback: RequestHandler[Any, Any] | None = None
    ) -> None:
        self.tasks = tasks
        self.fallback = fallback
        self._streams: set[object] = set()

    @property
    def desk(self) -> Desk:
        """The desk the tasks are read through."""
        return self.tasks.desk

    @property
    def open_streams(self) -> int:
        """How many task streams (each with its watcher) are open now."""
        return len(self._streams)

    async def __call__(
        self,
        ctx: ServerRequestContext[Any, Any],
        params: types.SubscriptionsListenRequestParams,
    ) -> BaseModel | dict[str, Any] | None:
        """Serves one listen stream until its tasks are final or the client leaves."""
        wanted = _requested_ids(params.notifications)
        if wanted is None:
            if self.fallback is None:
                raise MCPError(INVALID_PARAMS, "this server only streams notifications.taskIds")
            return await self.fallback(ctx, params)
        require_client_extension(ctx, TASKS_EXTENSION)
        if ctx.request_id is None:
            raise MCPError(INVALID_REQUEST, "subscriptions/listen requires a request id")
        if len(self._streams) >= MAX_TASK_STREAMS:
            raise MCPError(
                INTERNAL_ERROR,
                f"{MAX_TASK_STREAMS} task subscriptions are open on this server; close one "
                "(or poll tasks/get) and try again",
            )
        meta: dict[str, Any] = {SUBSCRIPTION_ID_META_KEY: ctx.request_id}
        token = object()
        self._streams.add(token)
        try:
            cursor, tasks = await anyio.to_thread.run_sync(self._resolve, wanted)
            honored = types.SubscriptionFilter.model_validate({"taskIds": [t.id for t in tasks]})
            ack = types.SubscriptionsAcknowledgedNotificationParams(
                notifications=honored, _meta=meta
            )
            await ctx.session.send_notification(
                types.SubscriptionsAcknowledgedNotification(params=ack),
                related_request_id=ctx.request_id,
            )
            await self._follow(ctx, meta, cursor, tasks)
        finally:
            self._streams.discard(token)
        return types.SubscriptionsListenResult(_meta=meta)

    def _resolve(self, wanted: Sequence[str]) -> tuple[int, list[Task]]:
        """The feed cursor to follow from, and the tasks this client may watch.

        Only full ids of tasks in this server's workspace are honoured; a prefix, an
        unknown id or another workspace's task is left out of the acknowledgement.
        The cursor is read first, so no change between it and the reads is missed.
        """
        cursor = self.desk.store.last_event_seq()
        found: list[Task] = []
        for task_id in wanted:
            try:
                task = self.desk.task(task_id)
            except OffloadError:
                continue
            if task.id == task_id:
                found.append(task)
        return cursor, found

    async def _follow(
        self,
        ctx: ServerRequestContext[Any, Any],
        meta: dict[str, Any],
        cursor: int,
        tasks: list[Task],
    ) -> None:
        """Pushes each task now, then again at each status change, until all are final."""
        watching: dict[str, str] = {}
        for task in tasks:
            await self._push(ctx, meta, task)
            if task_status(task) not in _FINAL:
                watching[task.id] = task_status(task)
        store = self.desk.store
        while watching:
            await anyio.sleep(PUSH_POLL_SECONDS)
            cursor, changed = await anyio.to_thread.run_sync(
                _changed, store, cursor, list(watching)
            )
            if not changed:
                continue
            fresh = await anyio.to_thread.run_sync(store.get_many, sorted(changed))
            for gone in changed - {t.id for t in fresh}:
                watching.pop(gone, None)  # purged meanwhile: nothing left to report
            for task in fresh:
                status = task_status(task)
                if status != watching.get(task.id):
                    await self._push(ctx, meta, task)
                if status in _FINAL:
                    watching.pop(task.id, None)
                else:
                    watching[task.id] = status

    async def _push(
        self, ctx: ServerRequestContext[Any, Any], meta: dict[str, Any], task: Task
    ) -> None:
        body = await anyio.to_thread.run_sync(self.tasks.detailed, task)
        params = TaskStatusParams.model_validate({**body, "_meta": meta})
        note = TaskStatusNotification(params=params)
        # The SDK types the core notifications only; it sends any Notification model as is.
        await ctx.session.send_notification(note, related_request_id=ctx.request_id)  # type: ignore[arg-type]


def _changed(store: Store, cursor: int, ids: Sequence[str]) -> tuple[int, set[str]]:
    """The new cursor, and which of `ids` have events after `cursor`."""
    events = store.events_since(cursor, task_ids=ids)
    if not events:
        return cursor, set()
    return events[-1].seq, {e.task_id for e in events if e.task_id is not None}
