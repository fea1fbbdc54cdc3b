"""The HTTP server as an attacker on the same machine sees it: no token, no tasks.

127.0.0.1 is shared by every local user and by every sandboxed task that keeps the network,
so a read without the token must show nothing, on loopback too.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import run_to_end
from offload.config import load_settings
from offload.policies.task_policy import TaskPolicy
from offload.queue.models import State, TaskSpec
from offload.queue.sqlite import SqliteStore
from offload.supervisor.sandbox import probe_sandbox
from offload.web.serve import ServerThread, prepare

SECRET = "OUTPUT-OF-ANOTHER-WORKSPACE"


def _finished(store: SqliteStore, home: Path, spec: TaskSpec) -> str:
    done, output = run_to_end(store, home, spec)
    assert done.state is State.COMPLETED, done.error
    return output


@pytest.mark.slow
def test_reads_without_the_token_show_nothing_on_loopback(
    store: SqliteStore, workspace: Path
) -> None:
    here = str(workspace)
    [task] = store.submit([TaskSpec(command=f"echo {SECRET}", cwd=here, workspace=here)])
    prepared = prepare(load_settings(), "127.0.0.1", 0, False)
    base = f"http://127.0.0.1:{prepared.port}"
    with ServerThread(prepared), httpx.Client(base_url=base, timeout=20) as client:
        for path in ("/api/tasks", f"/api/tasks/{task.id}", "/api/stats", "/api/events"):
            refused = client.get(path)
            assert refused.status_code == 401, path
            assert "needs the token" in refused.json()["detail"]
            assert task.id not in refused.text and SECRET not in refused.text
        assert client.get("/").status_code == 200  # the page alone, which holds no data
        shown = client.get(
            f"/api/tasks/{task.id}", headers={"Authorization": f"Bearer {prepared.token}"}
        )
        assert shown.is_success and shown.json()["command"] == f"echo {SECRET}"


@pytest.mark.skipif(not probe_sandbox().available, reason="bubblewrap is not available")
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_a_sandboxed_task_with_the_network_cannot_read_other_tasks(
    store: SqliteStore,
    offload_home: Path,
    workspace: Path,
    start_supervisor: Callable[..., Any],
) -> None:
    start_supervisor()
    here = str(workspace)
    other = workspace / "other"
    other.mkdir()
    plain = TaskSpec(command=f"echo {SECRET}", cwd=str(other), workspace=str(other))
    _finished(store, offload_home, plain)
    prepared = prepare(load_settings(), "127.0.0.1", 0, False)
    url = f"http://127.0.0.1:{prepared.port}/api/tasks?limit=100"
    spy = TaskSpec(
        command=f"curl -s -w ' status=%{{http_code}}' {url}",
        cwd=here,
        workspace=here,
        policy=TaskPolicy(sandbox=True, network=True).to_json(),
    )
    with ServerThread(prepared):
        log = _finished(store, offload_home, spy)
    assert "status=401" in log
    assert SECRET not in log
