"""Schemathesis against the real server's /openapi.json: no 5xx, answers match the schema.

A bounded number of generated cases per operation keeps this to a few seconds. The event
stream (`/api/events`) never ends by design, so it is covered in test_web.py instead.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from offload.config import Settings, load_settings
from offload.queue.models import State, TaskSpec
from offload.queue.sqlite import SqliteStore
from offload.web.auth import AccessPolicy
from offload.web.routes import create_app
from offload.web.serve import ServerThread, prepare

MAX_EXAMPLES = 25


def _schema() -> dict[str, Any]:
    """The app's OpenAPI document, built at collection time in a throwaway data dir."""
    with tempfile.TemporaryDirectory() as home:
        store = SqliteStore(Path(home) / "queue.db")
        try:
            app = create_app(
                Settings(home=Path(home)), AccessPolicy.for_bind("x", "127.0.0.1"), store
            )
            return app.openapi()
        finally:
            store.close()


schema = schemathesis.openapi.from_dict(_schema()).exclude(path="/api/events")


@pytest.fixture
def api(offload_home: Path, store: SqliteStore) -> Iterator[tuple[str, str]]:
    """A real server holding tasks in several states: its base URL and token."""
    here = str(Path.cwd())
    tasks = store.submit(
        [TaskSpec(command=f"echo {i}", cwd=here, workspace=here) for i in range(4)]
    )
    store.claim(2, "test", {})
    store.finish(tasks[0].id, State.COMPLETED, exit_code=0)
    store.finish(tasks[1].id, State.FAILED, exit_code=1, error="exited with code 1")
    prepared = prepare(load_settings(), "127.0.0.1", 0, False)
    with ServerThread(prepared):
        yield f"http://127.0.0.1:{prepared.port}", prepared.token


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case: schemathesis.Case, api: tuple[str, str]) -> None:
    base_url, token = api
    case.call_and_validate(
        base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=20
    )
