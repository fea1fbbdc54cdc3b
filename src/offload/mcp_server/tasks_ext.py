"""The `io.modelcontextprotocol/tasks` extension (SEP-2663), backed by the Store.

For a client that declares the extension on a 2026-07-28 request, `submit_task` answers
with a task handle whose `taskId` is the offload id, once the task is stored (so a
`tasks/get` for it resolves at once). `tasks/get`, `tasks/update` and `tasks/cancel` read
and change the queue; offload states map onto task statuses:

    pending, running        -> working (statusMessage: queued / progress / running time)
    completed               -> completed, result = get_task's answer
    failed, timed_out       -> completed, result with isError: true and the reason
    cancelled               -> cancelled
    interrupted             -> failed, error says the supervisor died

Every other client, and every other tool, gets plain results.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver import require_client_extension
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, CallToolRequestParams, CallToolResult
from mcp_types import RequestParams as _RequestParams
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from offload.desk import Desk
from offload.errors import IllegalTransition, OffloadError
from offload.mcp_server import views
from offload.mcp_server.tools import FINISHED_TAIL_BYTES, FINISHED_TAIL_LINES
from offload.queue.models import State, Task

__all__ = [
    "POLL_INTERVAL_MS",
    "TASKS_EXTENSION",
    "TaskIdParams",
    "TaskUpdateParams",
    "TasksExtension",
]

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
POLL_INTERVAL_MS = 1000
_TASK_TOOLS = frozenset({"submit_task"})
_VERSIONS = frozenset({"2026-07-28"})


class TaskIdParams(_RequestParams):
    """Params of tasks/get and tasks/cancel: `{taskId}`."""

    task_id: str


class TaskUpdateParams(TaskIdParams):
    """Params of tasks/update: `{taskId, inputResponses}` (offload never asks for input)."""

    input_responses: dict[str, Any] | None = None


def _status(task: Task) -> str:
    if task.state in (State.PENDING, State.RUNNING):
        return "working"
    if task.state is State.CANCELLED:
        return "cancelled"
    if task.state is State.INTERRUPTED:
        return "failed"
    return "completed"


def _status_message(task: Task, now_ms: int) -> str:
    if task.state is State.PENDING:
        waiting = f", after {len(task.depends_on)} dependencies" if task.depends_on else ""
        return f"queued (priority {task.priority}{waiting})"
    if task.state is State.RUNNING:
        if task.progress_message:
            return views.clip(task.progress_message, views.TITLE_MAX_CHARS) or ""
        seconds = max(0, now_ms - (task.started_at or now_ms)) // 1000
        return f"running for {seconds} s"
    if task.state is State.COMPLETED:
        return "exit 0" if task.exit_code == 0 else "completed"
    reason = task.error or (f"exit {task.exit_code}" if task.exit_code is not None else "")
    return views.clip(f"{task.state.value}: {reason}".rstrip(": "), views.ERROR_MAX_CHARS) or ""


class TasksExtension(Extension):
    """Serves tasks/get, tasks/update and tasks/cancel, and hands out task handles."""

    identifier = TASKS_EXTENSION

    def __init__(self, desk: Desk) -> None:
        self.desk = desk

    # -- handles ---------------------------------------------------------------------
    async def intercept_tool_call(
        self,
        params: CallToolRequestParams,
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
    ) -> HandlerResult:
        """Answers `submit_task` with a task handle for clients that declared the extension."""
        result = await call_next(ctx)
        if params.name not in _TASK_TOOLS or not self._declared(ctx):
            return result
        if not isinstance(result, CallToolResult) or result.is_error:
            return result
        task_id = (result.structured_content or {}).get("task_id")
        if not isinstance(task_id, str):
            return result
        task = await anyio.to_thread.run_sync(self.desk.store.get, task_id)
        return {"resultType": "task", **self._task(task)}

    def _declared(self, ctx: ServerRequestContext[Any, Any]) -> bool:
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            return False
        capabilities = ctx.session.client_capabilities
        return bool(
            capabilities and capabilities.extensions and TASKS_EXTENSION in capabilities.extensions
        )

    # -- methods ---------------------------------------------------------------------
    def methods(self) -> list[MethodBinding]:
        """tasks/get, tasks/update and tasks/cancel, on the 2026-07-28 protocol only."""
        return [
            MethodBinding("tasks/get", TaskIdParams, self._get, _VERSIONS),
            MethodBinding("tasks/update", TaskUpdateParams, self._update, _VERSIONS),
            MethodBinding("tasks/cancel", TaskIdParams, self._cancel, _VERSIONS),
        ]

    async def _get(
        self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams
    ) -> dict[str, Any]:
        require_client_extension(ctx, TASKS_EXTENSION)
        task = await self._find(params.task_id)
        return await anyio.to_thread.run_sync(self._detailed, task)

    async def _update(
        self, ctx: ServerRequestContext[Any, Any], params: TaskUpdateParams
    ) -> dict[str, Any]:
        require_client_extension(ctx, TASKS_EXTENSION)
        await self._find(params.task_id)
        return {}

    async def _cancel(
        self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams
    ) -> dict[str, Any]:
        require_client_extension(ctx, TASKS_EXTENSION)
        task = await self._find(params.task_id)
        try:
            await anyio.to_thread.run_sync(self.desk.cancel, task.id)
        except IllegalTransition:
            pass  # already finished: cancellation is cooperative, the ack still stands
        except OffloadError as exc:
            raise MCPError(code=INTERNAL_ERROR, message=str(exc)) from exc
        return {}

    async def _find(self, task_id: str) -> Task:
        try:
            return await anyio.to_thread.run_sync(self.desk.task, task_id)
        except OffloadError as exc:
            raise MCPError(code=INVALID_PARAMS, message=f"Failed to retrieve task: {exc}") from None

    # -- shapes ----------------------------------------------------------------------
    def _task(self, task: Task) -> dict[str, Any]:
        now = self.desk.clock_ms()
        return {
            "taskId": task.id,
            "status": _status(task),
            "statusMessage": _status_message(task, now),
            "createdAt": views.iso(task.created_at),
            "lastUpdatedAt": views.iso(task.updated_at),
            "ttlMs": None,
            "pollIntervalMs": POLL_INTERVAL_MS,
        }

    def _result(self, task: Task) -> CallToolResult:
        """What submit_task would have answered had it waited: its `{task_id, state}` plus
        get_task's view (exit code, timings, the last lines of output). It must still match
        submit_task's output schema, which clients check the resolved result against."""
        tail = self.desk.tail(task, FINISHED_TAIL_LINES, FINISHED_TAIL_BYTES).text or None
        view = views.info(task, self.desk.clock_ms(), tail).model_dump(exclude_none=True)
        done = views.Finished(task_id=view.pop("id"), **view)
        return views.answer(done, "tail", is_error=task.state is not State.COMPLETED)

    def _detailed(self, task: Task) -> dict[str, Any]:
        """The task as tasks/get answers it: result inlined when done, error when failed."""
        out = self._task(task)
        if out["status"] == "completed":
            out["result"] = self._result(task).model_dump(
                by_alias=True, mode="json", exclude_none=True
            )
        elif out["status"] == "failed":
            out["error"] = {
                "code": INTERNAL_ERROR,
                "message": f"{task.error or 'the supervisor stopped while the task ran'}; "
                "retry_task runs it again",
            }
        return out
