"""Routing by host labels on one host's SQLite queue, through every door.

`submit --on gpu` (or MCP/HTTP `on`) runs only on a supervisor with that label; one
without it leaves the task pending, and `show`, `list`, `wait`, MCP `get_task` and the HTTP
task JSON say why and how to fix it; a supervisor started with `--labels gpu` runs it.
Bad labels are refused with the rule spelled out, wherever they come from.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.client import Client

from conftest import _env, wait_until
from offload.config import load_settings
from offload.desk import open_desk
from offload.desk.routing import covered, waiting_note
from offload.errors import ConfigError, InvalidInput
from offload.queue.members import check_labels
from offload.queue.sqlite import SqliteStore
from offload.supervisor.wake import poke
from offload.web.auth import AccessPolicy
from offload.web.routes import create_app
from offload.web.serve import Prepared, ServerThread, _bind, prepare
from test_mcp_http import connect
from test_mcp_support import call, error_text, make_server

Cli = Callable[..., subprocess.CompletedProcess[str]]
GPU_NOTE = "no live supervisor has label gpu — start one with `offload supervisor --labels gpu`"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- the rules ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "labels"),
    [
        (None, ()),
        ("gpu", ("gpu",)),
        ("gpu, linux", ("gpu", "linux")),
        (["gpu", "linux,gpu", "x86_64", "v1.2-rc"], ("gpu", "linux", "x86_64", "v1.2-rc")),
    ],
)
def test_labels_are_read_from_a_list_or_commas(given: Any, labels: tuple[str, ...]) -> None:
    assert check_labels(given, "on") == labels


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("g pu", "'g pu' is not a label"),
        (["gpu", ""], "'' is not a label"),
        ("x" * 33, "is not a label"),
        ("caf\u00e9", "is not a label"),
        ([1], "must be a list of labels"),
        ([f"l{n}" for n in range(17)], "the limit is 16"),
    ],
)
def test_a_bad_label_is_refused_with_the_rule(given: Any, says: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_labels(given, "on")
    assert says in str(refused.value)
    if "not a label" in says:
        assert "1-32 letters, digits, '.', '_' or '-'" in str(refused.value)


def test_the_labels_setting_reads_env_and_config_and_is_checked(offload_home: Path) -> None:
    assert load_settings({"OFFLOAD_HOME": str(offload_home)}).labels == ()
    env = {"OFFLOAD_HOME": str(offload_home), "OFFLOAD_LABELS": "gpu, linux"}
    assert load_settings(env).labels == ("gpu", "linux")
    offload_home.mkdir()
    (offload_home / "config.toml").write_text('labels = ["arm64", "big-disk"]\n')
    assert load_settings({"OFFLOAD_HOME": str(offload_home)}).labels == ("arm64", "big-disk")
    with pytest.raises(ConfigError, match=r"setting labels: 'no way' is not a label"):
        load_settings({**env, "OFFLOAD_LABELS": "gpu,no way"})


def test_the_waiting_rule() -> None:
    assert covered(["gpu"], [(), ("gpu", "linux")])
    assert covered(["gpu", "linux"], [("linux", "gpu")])
    assert not covered(["gpu", "linux"], [("gpu",), ("linux",)])
    assert not covered(["gpu"], [])
    assert waiting_note(("gpu",)) == "waiting: " + GPU_NOTE
    assert waiting_note(("gpu", "linux")) == (
        "waiting: no live supervisor has all of the labels gpu, linux — start one with "
        "`offload supervisor --labels gpu,linux`"
    )


def test_the_desk_says_why_only_when_no_supervisor_has_the_labels(
    offload_home: Path, workspace: Path
) -> None:
    """On SQLite with no supervisor running, the one started on demand has the settings' labels."""
    for labels, waits in (((), True), (("gpu", "linux"), False)):
        settings = load_settings(overrides={"labels": list(labels)})
        desk = open_desk(settings, workspace=workspace, confined=False, wake=lambda: None)
        labelled, plain = desk.submit([{"command": "true", "on": ["gpu"]}, {"command": "true"}])
        assert labelled.run_on == ("gpu",) and plain.run_on == ()
        notes = desk.waiting([labelled, plain])
        assert notes == ({labelled.id: "waiting: " + GPU_NOTE} if waits else {})
        desk.store.close()


# -- MCP ------------------------------------------------------------------------------------
def test_mcp_submit_takes_on_and_get_task_says_why_it_waits(workspace: Path) -> None:
    async def scenario() -> None:
        async with Client(make_server(workspace, wake=lambda: None)) as client:
            ref = await call(client, "submit_task", command="true", on=["gpu"])
            info = await call(client, "get_task", task_id=ref["task_id"])
            assert info["run_on"] == ["gpu"]
            assert info["waiting"] == "waiting: " + GPU_NOTE
            batch = await call(
                client, "submit_batch", tasks=[{"command": "true", "on": "gpu,linux"}]
            )
            listed = await call(client, "list_tasks")
            by_id = {t["id"]: t for t in listed["tasks"]}
            assert "all of the labels gpu, linux" in by_id[batch["task_ids"][0]]["waiting"]
            waited = await call(
                client, "wait_for_tasks", task_ids=[ref["task_id"]], timeout_seconds=0
            )
            assert not waited["met"] and waited["tasks"][0]["waiting"] == "waiting: " + GPU_NOTE
            bad = await client.call_tool("submit_task", {"command": "true", "on": ["g pu"]})
            assert error_text(bad).startswith("invalid argument: on: 'g pu' is not a label")
            bad = await client.call_tool(
                "submit_batch", {"tasks": [{"command": "true"}, {"command": "true", "on": [""]}]}
            )
            assert "task 2 of the batch: on: '' is not a label" in error_text(bad)

    anyio.run(scenario)


def test_mcp_shows_nothing_new_for_a_task_a_supervisor_can_take(workspace: Path) -> None:
    async def scenario() -> None:
        server = make_server(workspace, wake=lambda: None, labels=["gpu"])
        async with Client(server) as client:
            ref = await call(client, "submit_task", command="true", on=["gpu"])
            info = await call(client, "get_task", task_id=ref["task_id"])
            assert info["run_on"] == ["gpu"] and "waiting" not in info
            stats = await call(client, "queue_stats")
            assert "hosts" not in stats  # one host: no per-host figures

    anyio.run(scenario)


# -- the CLI with real supervisors ----------------------------------------------------------
@pytest.fixture
def labelled_supervisor(offload_home: Path) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Starts `offload supervisor --labels …` (the flag, not the setting); stops it after."""
    started: list[subprocess.Popen[bytes]] = []

    def start(labels: str) -> subprocess.Popen[bytes]:
        log = open(offload_home.parent / "labelled.err", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                "-P",
                "-m",
                "offload",
                "supervisor",
                "--foreground",
                "--labels",
                labels,
            ],
            env=_env(offload_home),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        started.append(proc)
        wait_until(lambda: poke(offload_home) or proc.poll() is not None, what="supervisor")
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)


def test_on_waits_for_a_supervisor_with_the_label_and_says_so(
    cli: Cli, start_supervisor: Any, labelled_supervisor: Any, offload_home: Path
) -> None:
    plain_supervisor = start_supervisor()
    routed = ok(cli("submit", "--on", "gpu", "--", "echo", "routed")).strip()
    batch = '{"command": "echo batched", "on": ["gpu"]}\necho plain\n'
    batched, plain = ok(cli("submit", "--batch", "-", input=batch)).split()
    ok(cli("wait", plain, "--timeout", "30"))  # the supervisor runs what it can take...
    shown = ok(cli("show", routed))  # ...and leaves the labelled ones, saying why
    assert "pending" in shown and f"waiting   {GPU_NOTE}" in shown and "runs on   gpu" in shown
    detail = json.loads(ok(cli("show", routed, "--json")))
    assert detail["run_on"] == ["gpu"] and detail["waiting"] == "waiting: " + GPU_NOTE
    listed = cli("list")
    assert f"offload: 2 pending task(s) waiting: {GPU_NOTE}" in listed.stderr
    rows = {t["id"]: t for t in json.loads(ok(cli("list", "--json")))}
    assert rows[batched]["waiting"] == "waiting: " + GPU_NOTE and "waiting" not in rows[plain]
    waited = cli("wait", routed, "--timeout", "1")
    assert waited.returncode == 124 and f"task {routed[:12]} waiting: {GPU_NOTE}" in waited.stderr
    assert "labels: none" in ok(cli("supervisor", "status"))

    plain_supervisor.stop()
    labelled_supervisor("gpu,linux")
    ok(cli("wait", routed, batched, "--timeout", "30"))
    assert "labels: gpu, linux" in ok(cli("supervisor", "status"))  # its --labels, not ours
    assert json.loads(ok(cli("supervisor", "status", "--json")))["labels"] == ["gpu", "linux"]
    # Pending for another reason (a dependency), a gpu task is not said to lack a host.
    blocker = ok(cli("submit", "--on", "arm64", "--", "true")).strip()
    dependent = ok(cli("submit", "--on", "gpu", "--after", blocker, "--", "true")).strip()
    assert "waiting   no live supervisor has label arm64" in ok(cli("show", blocker))
    assert "waiting" not in ok(cli("show", dependent))
    ok(cli("cancel", blocker))
    assert ok(cli("logs", routed)) == "routed\n"
    assert "waiting" not in ok(cli("show", routed))
    assert json.loads(ok(cli("stats", "--json")))["hosts"] == []  # one host: no per-host figures
    assert not re.search(r"\d+ running  \d+ finished", ok(cli("stats")))


def test_bad_labels_are_refused_at_every_cli_door(cli: Cli) -> None:
    refused = cli("submit", "--on", "g pu", "--", "true")
    assert refused.returncode == 1
    assert "offload: on: 'g pu' is not a label; a label is 1-32 letters" in refused.stderr
    batch = cli("submit", "--batch", "-", input='{"command": "true", "on": ["a/b"]}\n')
    assert batch.returncode == 1 and "batch entry 1: on: 'a/b' is not a label" in batch.stderr
    flag = cli("supervisor", "--labels", "gpu,no way")
    assert flag.returncode == 1 and "--labels: 'no way' is not a label" in flag.stderr
    misplaced = cli("supervisor", "status", "--labels", "gpu")
    assert misplaced.returncode == 2 and "--labels is for running" in misplaced.stderr
    env = cli("list", OFFLOAD_LABELS="gpu;rm")
    assert env.returncode == 1 and "setting labels: 'gpu;rm' is not a label" in env.stderr
    assert "Traceback" not in refused.stderr + flag.stderr + env.stderr
    assert ok(cli("list", "--json")) == "[]\n"  # nothing was stored


# -- HTTP -----------------------------------------------------------------------------------
@pytest.mark.slow  # a live server, and the supervisor its reads start
def test_http_task_json_says_why_it_waits(offload_home: Path, workspace: Path) -> None:
    settings = load_settings()
    store = SqliteStore(settings.db_path)
    desk = open_desk(settings, workspace=workspace, confined=False, store=store, wake=lambda: None)
    labelled, plain = desk.submit([{"command": "true", "on": ["gpu"]}, {"command": "true"}])
    token = "t" * 40
    sock = _bind("127.0.0.1", 0)
    app = create_app(settings, AccessPolicy.for_bind(token, "127.0.0.1"), store=store)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with (
            ServerThread(Prepared(app=app, sock=sock, url="", token=token)),
            httpx.Client(base_url=base, timeout=20, headers=headers) as client,
        ):
            one = client.get(f"/api/tasks/{labelled.id}").json()
            assert one["run_on"] == ["gpu"] and one["waiting"] == "waiting: " + GPU_NOTE
            page = {t["id"]: t for t in client.get("/api/tasks").json()["tasks"]}
            assert page[labelled.id]["waiting"] == one["waiting"]
            assert page[plain.id]["waiting"] is None
            assert client.get("/api/stats").json()["hosts"] == []
            schema = client.get("/openapi.json").json()["components"]["schemas"]
            assert "waiting" in schema["TaskOut"]["properties"]
    finally:
        store.close()


@pytest.mark.slow  # a live server, and the supervisor its submit starts
def test_on_over_http_mcp_and_the_task_json(workspace: Path) -> None:
    """`offload serve`: MCP at /mcp takes `on`; /api/tasks/{id} says why the task waits."""
    prepared = prepare(load_settings(), "127.0.0.1", 0, False, workspace=workspace)
    with ServerThread(prepared):

        async def submit() -> str:
            async with connect(prepared) as client:
                ref = await call(client, "submit_task", command="true", on=["gpu"])
                refused = await client.call_tool("submit_task", {"command": "true", "on": ["a b"]})
                assert "on: 'a b' is not a label" in error_text(refused)
                return str(ref["task_id"])

        task_id = anyio.run(submit)
        headers = {"Authorization": f"Bearer {prepared.token}"}
        base = f"http://127.0.0.1:{prepared.port}"
        with httpx.Client(base_url=base, headers=headers, timeout=20) as client:
            task = client.get(f"/api/tasks/{task_id}").json()
    assert task["run_on"] == ["gpu"] and task["waiting"] == "waiting: " + GPU_NOTE
