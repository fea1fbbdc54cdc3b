"""The HTTP API against a real uvicorn on a free loopback port, with a real supervisor.

Reads, the three writes (cancel, retry, purge) and their refusals, the change feed and the
output follow stream (server-sent events), and the security rules: token, Host, Origin,
headers. Every wait has a deadline.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import marked_processes, wait_until
from offload.config import load_settings
from offload.queue.models import Task, TaskSpec
from offload.queue.sqlite import SqliteStore
from offload.web.auth import COOKIE_NAME, AccessPolicy
from offload.web.routes import create_app
from offload.web.serve import Prepared, ServerThread, _bind, prepare, run

Cli = Callable[..., subprocess.CompletedProcess[str]]
FINAL = {"completed", "failed", "timed_out", "cancelled", "interrupted"}


@dataclass
class Api:
    """A running server and an httpx client pointed at it."""

    client: httpx.Client
    token: str
    port: int

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def task(self, task_id: str) -> dict[str, Any]:
        response = self.client.get(f"/api/tasks/{task_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_state(self, task_id: str, *states: str, timeout: float = 30) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            task = self.task(task_id)
            if task["state"] in states:
                return task
            if task["state"] in FINAL and not FINAL & set(states) - {task["state"]}:
                pytest.fail(f"task ended {task['state']} ({task['error']}), not {states}")
            return None

        what = f"task {task_id[:8]} to be {'/'.join(states)}"
        return dict(wait_until(reached, timeout=timeout, interval=0.05, what=what))


@pytest.fixture
def api(offload_home: Path) -> Iterator[Api]:
    """The real server (ServerThread runs uvicorn on a thread) on 127.0.0.1:<free port>."""
    prepared = prepare(load_settings(), "127.0.0.1", 0, False)
    with (
        ServerThread(prepared),
        httpx.Client(base_url=f"http://127.0.0.1:{prepared.port}", timeout=20) as client,
    ):
        client.cookies.set(COOKIE_NAME, prepared.token)  # reads need it; writes need the header
        yield Api(client, prepared.token, prepared.port)


def _submit(cli: Cli, command: str, *options: str) -> str:
    done = cli("submit", *options, "--", command)
    assert done.returncode == 0, done.stderr
    return str(done.stdout.strip())


def _pending(store: SqliteStore) -> Task:
    """A task that stays pending: no supervisor runs in the tests that use it."""
    here = str(Path.cwd())
    return store.submit([TaskSpec(command="true", cwd=here, workspace=here)])[0]


def sse(response: httpx.Response) -> Iterator[dict[str, str]]:
    """Parses a text/event-stream into events (field -> value; data lines joined)."""
    event: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if event:
                yield event
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            event[name] = event[name] + "\n" + value if name in event else value


# -- reads ---------------------------------------------------------------------------------
def test_reads_show_a_task_submitted_through_the_cli(
    api: Api, start_supervisor: Any, cli: Cli
) -> None:
    start_supervisor()
    task_id = _submit(cli, "echo hello; echo world", "--env", "GREETING=hunter2")
    done = api.wait_state(task_id, "completed")
    assert done["exit_code"] == 0 and done["title"] == "echo hello; echo world"
    assert done["env_names"] == ["GREETING"] and "env" not in done
    assert "hunter2" not in api.client.get(f"/api/tasks/{task_id}").text
    assert api.task(task_id[:8])["id"] == task_id

    page = api.client.get("/api/tasks", params={"state": "completed"}).json()
    assert [t["id"] for t in page["tasks"]] == [task_id] and page["total"] == 1
    assert api.client.get("/api/tasks", params={"state": "failed"}).json()["tasks"] == []

    stats = api.client.get("/api/stats").json()
    assert stats["counts"]["completed"] == 1 and stats["counts"]["running"] == 0
    assert len(stats["days"]) == 14 and stats["days"][-1]["finished"] == 1

    out = api.client.get(f"/api/tasks/{task_id}/output").json()
    assert out["text"] == "hello\nworld\n" and out["size"] == 12 and not out["truncated"]
    tail = api.client.get(f"/api/tasks/{task_id}/output", params={"tail": 1}).json()
    assert tail["text"] == "world\n" and tail["truncated"]


def test_bad_reads_are_4xx_with_a_message(api: Api) -> None:
    missing = api.client.get("/api/tasks/abcdef0123")
    assert missing.status_code == 404 and "no task matches" in missing.json()["detail"]
    assert api.client.get("/api/tasks/xyz").status_code == 422
    assert api.client.get("/api/tasks", params={"state": "bogus"}).status_code == 422
    assert api.client.get("/api/tasks", params={"limit": 0}).status_code == 422
    assert api.client.get("/api/tasks/abcdef/output", params={"tail": -1}).status_code == 422
    assert api.client.get("/api/nothing-here").status_code == 404


def test_schema_lists_exactly_the_endpoints(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    assert set(schema["paths"]) == {
        "/api/stats",
        "/api/tasks/{task_id}/turns",
        "/api/tasks",
        "/api/tasks/{task_id}",
        "/api/tasks/{task_id}/output",
        "/api/events",
        "/api/tasks/{task_id}/cancel",
        "/api/tasks/{task_id}/retry",
        "/api/purge",
    }
    assert schema["paths"]["/api/tasks/{task_id}"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"] == {"$ref": "#/components/schemas/TaskOut"}


# -- writes --------------------------------------------------------------------------------
def test_cancel_kills_a_running_task_tree(api: Api, start_supervisor: Any, cli: Cli) -> None:
    start_supervisor()
    task_id = _submit(cli, "sleep 300 & sleep 300; wait")
    api.wait_state(task_id, "running")
    wait_until(lambda: len(marked_processes(task_id)) >= 2, timeout=20, what="the task's tree")

    response = api.client.post(f"/api/tasks/{task_id}/cancel", headers=api.auth)
    assert response.status_code == 200, response.text
    assert response.json()["cancel_requested"] or response.json()["state"] == "cancelled"
    api.wait_state(task_id, "cancelled")
    wait_until(lambda: not marked_processes(task_id), timeout=20, what="no process left")


def test_writes_follow_the_store_transitions(api: Api, start_supervisor: Any, cli: Cli) -> None:
    start_supervisor()
    ok = _submit(cli, "true")
    bad = _submit(cli, "exit 3")
    api.wait_state(ok, "completed")
    api.wait_state(bad, "failed")

    refused = api.client.post(f"/api/tasks/{ok}/cancel", headers=api.auth)
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith(f"cannot cancel task {ok[:12]}: it is completed")
    assert api.client.post(f"/api/tasks/{ok}/retry", headers=api.auth).status_code == 409
    assert api.client.post("/api/tasks/abcdef0123/retry", headers=api.auth).status_code == 404

    retried = api.client.post(f"/api/tasks/{bad[:10]}/retry", headers=api.auth)
    assert retried.status_code == 200 and retried.json()["attempt"] == 2
    assert api.wait_state(bad, "failed")["attempt"] == 2  # the supervisor was woken and ran it

    purged = api.client.post("/api/purge", headers=api.auth)
    assert purged.json() == {"purged": 1, "ids": [ok]}
    assert api.client.get(f"/api/tasks/{ok}").status_code == 404
    refused = api.client.post("/api/purge", headers=api.auth, json={"states": ["running"]})
    assert refused.status_code == 422
    body = {"states": ["failed"], "older_than_seconds": 3600}
    assert api.client.post("/api/purge", headers=api.auth, json=body).json()["purged"] == 0
    assert api.client.post("/api/purge", headers=api.auth, json={"states": ["failed"]}).json() == {
        "purged": 1,
        "ids": [bad],
    }


def test_cancel_of_a_pending_task_needs_no_supervisor(api: Api, store: SqliteStore) -> None:
    task = _pending(store)
    response = api.client.post(f"/api/tasks/{task.id}/cancel", headers=api.auth)
    assert response.status_code == 200 and response.json()["state"] == "cancelled"


# -- live streams --------------------------------------------------------------------------
def test_change_feed_streams_and_resumes(api: Api, store: SqliteStore) -> None:
    with api.client.stream("GET", "/api/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse(response)
        ready = next(events)
        assert ready["event"] == "ready"
        task = _pending(store)
        store.request_cancel(task.id)
        got = [json.loads(next(events)["data"]) for _ in range(2)]
    assert [(e["task_id"], e["kind"]) for e in got] == [
        (task.id, "submitted"),
        (task.id, "finished"),
    ]

    # A browser that lost the connection sends Last-Event-ID and misses nothing.
    resume = {"Last-Event-ID": ready["id"]}
    with api.client.stream("GET", "/api/events", headers=resume) as response:
        events = sse(response)
        assert next(events)["id"] == ready["id"]
        again = [next(events) for _ in range(2)]
    assert [json.loads(e["data"])["seq"] for e in again] == [e["seq"] for e in got]
    assert [int(e["id"]) for e in again] == [e["seq"] for e in got]


def test_follow_streams_output_until_the_task_ends(
    api: Api, start_supervisor: Any, cli: Cli
) -> None:
    start_supervisor()
    task_id = _submit(cli, "for i in 1 2 3; do echo line$i; sleep 0.3; done; printf 'é'")
    api.wait_state(task_id, "running")
    text, end = "", {}
    with api.client.stream("GET", "/api/events", params={"follow": task_id}) as response:
        for event in sse(response):
            data = json.loads(event["data"])
            if event.get("event") == "output":
                text += data["text"]
            elif event.get("event") == "end":
                end = data
                break
    assert text == "line1\nline2\nline3\né"
    assert end == {"offset": len(text.encode()), "state": "completed"}
    with api.client.stream(
        "GET", "/api/events", params={"follow": task_id, "offset": 6}
    ) as response:
        kinds = [(e.get("event"), json.loads(e["data"])) for e in sse(response)]
    assert kinds[1] == ("output", {"offset": end["offset"], "text": "line2\nline3\né"})
    assert kinds[-1][0] == "end"


# -- security ------------------------------------------------------------------------------
def test_writes_without_the_token_are_refused(api: Api, store: SqliteStore) -> None:
    task = _pending(store)
    url = f"/api/tasks/{task.id}/cancel"
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Cookie": f"{COOKIE_NAME}={api.token}"}):
        refused = api.client.post(url, headers=headers)
        assert refused.status_code == 401 and "needs the token" in refused.json()["detail"]
        assert refused.headers["www-authenticate"].startswith("Bearer")
    assert api.client.post("/api/purge").status_code == 401
    assert store.get(task.id).state == "pending"
    assert api.client.post(url, params={"token": api.token}).json()["state"] == "cancelled"


def test_dns_rebinding_and_cross_site_requests_are_refused(api: Api, store: SqliteStore) -> None:
    task = _pending(store)
    url = f"/api/tasks/{task.id}/cancel"
    evil_host = {"Host": f"attacker.example:{api.port}"}
    assert api.client.get("/api/stats", headers=evil_host).status_code == 400
    assert api.client.get("/", headers=evil_host).status_code == 400
    assert api.client.post(url, headers={**api.auth, **evil_host}).status_code == 400
    for origin in ("http://attacker.example", "null", f"http://localhost:{api.port}"):
        attack = {**api.auth, "Origin": origin}
        assert api.client.post(url, headers=attack).status_code == 403
        assert api.client.get("/api/tasks", headers={"Origin": origin}).status_code == 403
    cross_site = {**api.auth, "Sec-Fetch-Site": "cross-site"}
    assert api.client.post(url, headers=cross_site).status_code == 403
    preflight = api.client.options(
        url, headers={"Origin": "http://attacker.example", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 403
    assert store.get(task.id).state == "pending"
    same_origin = {**api.auth, "Origin": f"http://127.0.0.1:{api.port}"}
    assert api.client.post(url, headers=same_origin).status_code == 200


def test_security_headers_and_no_cors(api: Api) -> None:
    for path in ("/", "/api/stats", "/static/app.js", "/api/tasks/abcdef", "/openapi.json"):
        response = api.client.get(path, headers={"Origin": f"http://127.0.0.1:{api.port}"})
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert not any(h.startswith("access-control-") for h in response.headers), path
    assert api.client.get("/docs").status_code == 404  # it would load code from a CDN


def test_page_sets_a_read_cookie_only_for_the_right_token(api: Api) -> None:
    page = api.client.get("/", params={"token": api.token})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}={api.token}")
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert "set-cookie" not in api.client.get("/", params={"token": "wrong"}).headers
    assert "<script" in page.text and "app.js" in page.text


def test_beyond_loopback_every_read_needs_the_token(offload_home: Path) -> None:
    settings = load_settings()
    token = "t" * 40
    # Bound to loopback for the test; the policy is the one a --allow-remote server uses.
    policy = AccessPolicy.for_bind(token, "192.0.2.10")
    sock = _bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    prepared = Prepared(app=create_app(settings, policy), sock=sock, url="", token=token)
    base = f"http://127.0.0.1:{port}"
    with ServerThread(prepared), httpx.Client(base_url=base, timeout=20) as client:
        assert client.get("/api/stats").status_code == 401
        assert client.get("/openapi.json").status_code == 401
        assert client.get("/").status_code == 200  # the page itself holds no data
        assert client.get("/api/stats", headers={"Authorization": f"Bearer {token}"}).is_success
        client.cookies.set(COOKIE_NAME, token)
        assert client.get("/api/stats").is_success


# -- serving -------------------------------------------------------------------------------
def test_offload_serve_prints_the_url_and_stops_on_ctrl_c(offload_home: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "offload", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and "/?token=" in url
        token = url.split("?token=")[1]
        assert (offload_home / "api-token").read_text().strip() == token
        assert httpx.get(url.replace("/?", "/api/stats?"), timeout=20).is_success
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert token not in err


def test_offload_service_is_wired_to_the_cli(cli: Cli, tmp_path: Path) -> None:
    user_home = tmp_path / "user"
    done = cli("service", "install", "--print", HOME=str(user_home))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("[Service]") == 2 and not user_home.exists()


def test_serve_refuses_a_remote_address_without_the_flag(
    offload_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(load_settings(), "0.0.0.0", 0, False) == 2
    assert "--allow-remote" in capsys.readouterr().err
    assert not (offload_home / "api-token").exists()
