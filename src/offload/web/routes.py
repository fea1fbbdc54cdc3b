"""The FastAPI application: the endpoints of docs/http-api.md and the dashboard page.

A thin front end over a `Desk` that sees every workspace: it parses and renders, and every
verb (reads, cancel, retry, purge, waking the supervisor) is the desk's, so an illegal
change is refused with the same message as in the CLI (as HTTP 409). The API itself never
touches a process or opens a log file.

Route functions are plain ``def`` so FastAPI runs them in its thread pool: the Store is a
blocking connection, shared safely behind its own lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import Body, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from offload.config import Settings
from offload.desk import Desk, open_desk
from offload.errors import (
    AmbiguousId,
    IllegalTransition,
    InvalidInput,
    NotFound,
    OffloadError,
    StoreError,
    disk_full,
    io_error_text,
)
from offload.logs import MAX_TAIL_LINES
from offload.queue.models import PURGEABLE_STATES, State
from offload.queue.store import Store
from offload.web.auth import COOKIE_NAME, AccessPolicy, token_matches
from offload.web.events import EventHub, change_stream, output_stream
from offload.web.middleware import SecurityMiddleware
from offload.web.models import (
    ErrorOut,
    OutputOut,
    PurgeIn,
    PurgeOut,
    StatsOut,
    TaskOut,
    TaskPage,
    TurnOut,
)

__all__ = ["create_app"]

STATIC_DIR = Path(__file__).parent / "static"
TAIL_MAX_BYTES = 262_144
MAX_LIMIT = 1000
MAX_OFFSET = 1_000_000_000
MAX_SEQ = 2**62
TURN_RESULT_CHARS = 2_000
MAX_TURNS = 500

_STATUS = {NotFound: 404, AmbiguousId: 404, IllegalTransition: 409, InvalidInput: 400}
_TaskId = Annotated[
    str,
    PathParam(
        min_length=6,
        max_length=32,
        pattern="^[0-9a-fA-F]+$",
        description="a task id or a unique prefix of at least 6 hex characters",
    ),
]
_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorOut, "description": "bad Host header or invalid input"},
    401: {"model": ErrorOut, "description": "the token is missing or wrong"},
    403: {"model": ErrorOut, "description": "a cross-origin or cross-site request"},
    503: {"model": ErrorOut, "description": "the queue database is unavailable"},
}
_NOT_FOUND: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorOut, "description": "no task matches the id, or several do"},
}
_CONFLICT: dict[int | str, dict[str, object]] = {
    409: {"model": ErrorOut, "description": "the task is not in a state that allows this"},
}
_SSE_DOC = """Server-sent events (`text/event-stream`).

Without `follow`: the change feed. First a `ready` event (id = the cursor), then one
unnamed event per change, its id the event's `seq` and its data an `EventOut` JSON object
(seq, task_id, at, kind, detail). Resume with the `Last-Event-ID` header (browsers send it
on reconnect) or `since`; with neither, the stream starts at the newest event.

With `follow=<task id>`: that task's output from byte `offset` on, as `output` events
(data: `{"offset": next offset, "text": ...}`), then one `end` event once the task is
final and its log is drained.
"""


async def _offload_error(request: Request, exc: Exception) -> Response:
    status = next((code for kind, code in _STATUS.items() if isinstance(exc, kind)), 400)
    if isinstance(exc, StoreError):
        status = 507 if disk_full(exc) else 503
    return JSONResponse({"detail": str(exc)}, status_code=status)


async def _os_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OSError)
    status = 507 if disk_full(exc) else 503
    return JSONResponse({"detail": io_error_text(exc)}, status_code=status)


def create_app(settings: Settings, policy: AccessPolicy, store: Store | None = None) -> FastAPI:
    """Builds the app for data dir ``settings.home`` guarded by ``policy``.

    Args:
        settings: offload's settings (the data dir and the log directory come from here).
        policy: Who may call the server (see ``offload.web.auth``).
        store: The Store to use; by default the one the settings name, closed when the
            app shuts down.

    Raises:
        StoreError: The queue database cannot be opened.
    """
    own_store = store is None
    desk = open_desk(settings, workspace=settings.home, confined=False, store=store)
    db = desk.store
    hub = EventHub(db)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        poller = asyncio.create_task(hub.run())
        try:
            yield
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            if own_store:
                db.close()

    app = FastAPI(
        title="offload",
        summary="Watch and steer offload's background task queue.",
        version="1",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        responses=_ERRORS,
        generate_unique_id_function=lambda route: route.name,
    )
    app.add_exception_handler(OffloadError, _offload_error)
    app.add_exception_handler(OSError, _os_error)
    app.add_middleware(SecurityMiddleware, policy=policy)
    _add_reads(app, desk)
    _add_writes(app, desk)
    _add_events(app, desk, hub)
    _add_page(app, policy)
    return app


def _add_reads(app: FastAPI, desk: Desk) -> None:
    @app.get("/api/stats", tags=["reads"])
    def get_stats() -> StatsOut:
        """Counts by state, per host, cost today and in all, and the last 14 days per day."""
        now = desk.clock_ms()
        return StatsOut.of(desk.store.stats(now), now)

    @app.get("/api/tasks", tags=["reads"])
    def list_tasks(
        state: Annotated[list[State] | None, Query(description="repeat to ask for several")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    ) -> TaskPage:
        """Tasks newest first, optionally only those in the given states."""
        states = set(state) if state else None
        tasks = desk.listing(states, limit=limit, offset=offset)
        total = desk.count(states)
        waiting = desk.waiting(tasks)
        return TaskPage(
            tasks=[TaskOut.of(t, waiting.get(t.id)) for t in tasks],
            total=total,
            limit=limit,
            offset=offset,
        )

    @app.get("/api/tasks/{task_id}", tags=["reads"], responses=_NOT_FOUND)
    def get_task(task_id: _TaskId) -> TaskOut:
        """One task, by id or unique prefix; `waiting` says why, if nobody can take it."""
        task = desk.task(task_id)
        return TaskOut.of(task, desk.waiting([task]).get(task.id))

    @app.get("/api/tasks/{task_id}/output", tags=["reads"], responses=_NOT_FOUND)
    def get_output(
        task_id: _TaskId,
        tail: Annotated[int, Query(ge=0, le=MAX_TAIL_LINES, description="lines wanted")] = 200,
    ) -> OutputOut:
        """The last `tail` lines of the task's output (at most 256 KiB)."""
        task = desk.task(task_id)
        return OutputOut.of(task.id, desk.tail(task, tail, TAIL_MAX_BYTES))

    @app.get("/api/tasks/{task_id}/turns", tags=["reads"], responses=_NOT_FOUND)
    def get_turns(
        task_id: _TaskId,
        limit: Annotated[
            int, Query(ge=1, le=MAX_TURNS, description="at most this many, the newest")
        ] = 100,
    ) -> list[TurnOut]:
        """An agent task's turns, oldest first (an empty list for other task types).

        Each turn holds what the model said, every tool call with its arguments and its
        result (cut to 2,000 characters), tokens, cost and any error. With more turns than
        `limit`, the newest `limit` are sent.
        """
        turns = desk.turns(desk.task(task_id), result_chars=TURN_RESULT_CHARS)
        return [TurnOut.of(turn) for turn in turns[-limit:]]


def _add_writes(app: FastAPI, desk: Desk) -> None:
    acted = {**_NOT_FOUND, **_CONFLICT}

    @app.post("/api/tasks/{task_id}/cancel", tags=["writes"], responses=acted)
    def cancel_task(task_id: _TaskId) -> TaskOut:
        """Cancels a pending task at once, or asks the supervisor to kill a running one.

        A running task comes back still `running` with `cancel_requested` true; the
        change feed tells when it is `cancelled`.
        """
        return TaskOut.of(desk.cancel(task_id))

    @app.post("/api/tasks/{task_id}/retry", tags=["writes"], responses=acted)
    def retry_task(task_id: _TaskId) -> TaskOut:
        """Queues a failed, timed-out, interrupted or cancelled task again (attempt + 1)."""
        return TaskOut.of(desk.retry(task_id))

    @app.post("/api/purge", tags=["writes"], responses=_CONFLICT)
    def purge(body: Annotated[PurgeIn | None, Body()] = None) -> PurgeOut:
        """Removes finished tasks and their logs (by default completed and cancelled ones)."""
        body = body or PurgeIn()
        states = {State(s.value) for s in body.states} if body.states else PURGEABLE_STATES
        purged = desk.purge(body.older_than_seconds, states)
        return PurgeOut(purged=len(purged), ids=[t.id for t in purged])


def _add_events(app: FastAPI, desk: Desk, hub: EventHub) -> None:
    @app.get(
        "/api/events",
        tags=["reads"],
        description=_SSE_DOC,
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}},
            **_NOT_FOUND,
        },
    )
    def events(
        since: Annotated[
            int | None, Query(ge=0, le=MAX_SEQ, description="resume after this seq")
        ] = None,
        follow: Annotated[
            str | None,
            Query(min_length=6, max_length=32, pattern="^[0-9a-fA-F]+$", description="task id"),
        ] = None,
        offset: Annotated[int, Query(ge=0, le=MAX_SEQ, description="with follow: byte offset")] = 0,
        last_event_id: Annotated[str | None, Header(max_length=20)] = None,
    ) -> StreamingResponse:
        """The live change feed, or one task's live output (see the description)."""
        headers = {"X-Accel-Buffering": "no"}
        if follow is not None:
            task = desk.task(follow)
            stream = output_stream(desk.store, hub, desk.output, task, offset)
        else:
            cursor = since
            if cursor is None and last_event_id and last_event_id.strip().isdigit():
                cursor = min(int(last_event_id.strip()), MAX_SEQ)
            if cursor is None:
                cursor = desk.store.last_event_seq()
            stream = change_stream(desk.store, hub, cursor)
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


def _add_page(app: FastAPI, policy: AccessPolicy) -> None:
    @app.get("/", include_in_schema=False)
    def index(token: str | None = None) -> FileResponse:
        response = FileResponse(STATIC_DIR / "index.html", media_type="text/html")
        current = policy.current_token()  # after a rotation, the new token's URL works
        if token_matches(token, current):
            response.set_cookie(COOKIE_NAME, current, httponly=True, samesite="strict")
        return response

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    # Module scripts must be served as JavaScript (nosniff is on); some systems map .js oddly.
    mimetypes.add_type("text/javascript", ".js")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
