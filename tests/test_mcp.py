"""The MCP tools in process, through the SDK's own client, against a real queue.

Anything that runs a task uses a real supervisor (fixture start_supervisor); tests that
only read or refuse use a server whose wake-up is a no-op, so no supervisor starts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client
from mcp_types import TextContent

from conftest import SupervisorProc, marked_processes
from offload.config import load_settings
from offload.mcp_server import tools as tools_module
from offload.mcp_server.server import OUTPUT_URI
from offload.queue.models import State, TaskSpec
from test_mcp_support import call, data, error_text, make_server, store_of, until, wire_size

Start = Callable[..., SupervisorProc]

TOOL_NAMES = {
    "submit_task",
    "submit_batch",
    "get_task",
    "task_output",
    "list_tasks",
    "wait_for_tasks",
    "cancel_task",
    "retry_task",
    "retry_failed",
    "purge_tasks",
    "queue_stats",
}
TOOLS_LIST_MAX_BYTES = 4400  # issue 13: a hard goal, however many tools
STATUS_MAX_BYTES = 1024


def idle_server(workspace: Path, **overrides: Any) -> Any:
    """A server that never starts a supervisor (for tests that run nothing)."""
    return make_server(workspace, wake=lambda: None, **overrides)


async def wait_done(client: Client, task_id: str, timeout: float = 30) -> dict[str, Any]:
    """Waits through the tool itself until the task is final; returns its get_task view."""
    result = await call(client, "wait_for_tasks", task_ids=[task_id], timeout_seconds=timeout)
    assert result["met"], result
    return await call(client, "get_task", task_id=task_id)


# -- the listing -----------------------------------------------------------------------------
def test_tools_list_has_exactly_the_tools_and_fits_the_budget(workspace: Path) -> None:
    async def scenario() -> None:
        async with Client(idle_server(workspace)) as client:
            listed = await client.list_tools()
        tools = listed.model_dump(by_alias=True, mode="json", exclude_none=True)["tools"]
        assert {t["name"] for t in tools} == TOOL_NAMES
        size = wire_size({"tools": tools})
        print(f"tools/list: {size} bytes")
        assert size <= TOOLS_LIST_MAX_BYTES
        for tool in tools:
            assert tool["inputSchema"]["type"] == "object"
            assert 0 < len(tool["description"]) <= 120, tool["name"]
        submit = next(t for t in tools if t["name"] == "submit_task")
        fields = set(submit["inputSchema"]["properties"])
        assert {
            "command",
            "spec",
            "output_path",
            "context_files",
            "model",
            "large_context",
            "max_turns",
            "depends_on",
            "env",
            "group",
            "priority",
        } <= fields
        assert submit["outputSchema"]["required"] == ["task_id", "state"]

    anyio.run(scenario)


def test_legacy_protocol_clients_still_work(workspace: Path) -> None:
    async def scenario() -> None:
        async with Client(idle_server(workspace), mode="legacy") as client:
            assert client.protocol_version < "2026"
            listed = await client.list_tools()
            assert len(listed.tools) == len(TOOL_NAMES)
            ref = await call(client, "submit_task", command="true")
            assert ref["state"] == "pending"
            assert (await call(client, "get_task", task_id=ref["task_id"]))["state"] == "pending"

    anyio.run(scenario)


# -- running work ----------------------------------------------------------------------------
def test_submit_then_wait_returns_state_exit_code_and_output_tail(
    workspace: Path, start_supervisor: Start
) -> None:
    start_supervisor()

    async def scenario() -> None:
        async with Client(make_server(workspace)) as client:
            ok = await call(client, "submit_task", command="echo first; echo second")
            bad = await call(client, "submit_task", command="echo oops >&2; exit 3", name="bad")
            waited = await call(client, "wait_for_tasks", task_ids=[ok["task_id"], bad["task_id"]])
            assert waited["met"] is True
            states = {t["id"]: t for t in waited["tasks"]}
            assert states[ok["task_id"]]["state"] == "completed"
            assert states[ok["task_id"]]["exit_code"] == 0
            assert states[ok["task_id"]]["tail"] == "first\nsecond\n"
            assert states[bad["task_id"]] | {"tail": None} == {
                "id": bad["task_id"],
                "state": "failed",
                "exit_code": 3,
                "error": states[bad["task_id"]]["error"],
                "tail": None,
            }
            assert "oops" in states[bad["task_id"]]["tail"]
            shown = await client.call_tool("get_task", {"task_id": bad["task_id"][:8]})
            view = data(shown)
            assert (view["state"], view["exit_code"], view["title"]) == ("failed", 3, "bad")
            assert view["tail"] == "oops\n" and view["seconds"] >= 0 and view["finished"]
            texts = [c.text for c in shown.content if isinstance(c, TextContent)]
            assert texts[-1] == "oops\n"  # output comes as its own block, not escaped JSON
            assert "tail" not in texts[0]

    anyio.run(scenario)


def test_status_answers_stay_under_one_kilobyte(workspace: Path, start_supervisor: Start) -> None:
    start_supervisor()
    long_command = "sleep 30 # " + "x" * 5000

    async def scenario() -> None:
        async with Client(make_server(workspace)) as client:
            ref = await call(client, "submit_task", command=long_command, name=None)
            task_id = ref["task_id"]
            await until(lambda: _state_is(client, task_id, "running"), what="running")
            result = await client.call_tool("get_task", {"task_id": task_id})
            assert wire_size(data(result)) <= STATUS_MAX_BYTES
            assert sum(len(c.text.encode()) for c in result.content) <= STATUS_MAX_BYTES
            listed = await call(client, "list_tasks")
            assert wire_size(listed) <= STATUS_MAX_BYTES
            cancelled = await call(client, "cancel_task", task_id=task_id)
            assert cancelled["state"] == "cancelled"
            assert wire_size(await call(client, "get_task", task_id=task_id)) <= STATUS_MAX_BYTES

    anyio.run(scenario)


async def _state_is(client: Client, task_id: str, state: str) -> bool:
    return bool((await call(client, "get_task", task_id=task_id))["state"] == state)


def test_task_output_has_hard_caps_and_says_when_it_truncated(
    workspace: Path, start_supervisor: Start
) -> None:
    start_supervisor()

    async def scenario() -> None:
        async with Client(make_server(workspace)) as client:
            ref = await call(client, "submit_task", command="seq 1 100000")
            await wait_done(client, ref["task_id"])
            out = await call(client, "task_output", task_id=ref["task_id"], tail_lines=3)
            assert (out["text"], out["lines"], out["truncated"]) == (
                "99998\n99999\n100000\n",
                3,
                True,
            )
            assert out["size_bytes"] == len("".join(f"{i}\n" for i in range(1, 100001)))
            huge = await call(
                client, "task_output", task_id=ref["task_id"], tail_lines=10**12, max_bytes=10**12
            )
            assert huge["lines"] <= tools_module.OUTPUT_MAX_LINES
            assert len(huge["text"].encode()) <= tools_module.OUTPUT_MAX_BYTES
            assert huge["truncated"] is True
            small = await call(client, "task_output", task_id=ref["task_id"], max_bytes=10)
            assert len(small["text"].encode()) <= 10 and small["truncated"] is True
            whole = await call(client, "task_output", task_id=ref["task_id"], tail_lines=0)
            assert whole["text"] == "" and whole["truncated"] is True
            refused = await client.call_tool(
                "task_output", {"task_id": ref["task_id"], "tail_lines": -1}
            )
            assert "tail_lines must be" in error_text(refused)

    anyio.run(scenario)


def test_wait_is_capped_and_reports_progress(
    workspace: Path, start_supervisor: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_supervisor()
    monkeypatch.setattr(tools_module, "MAX_WAIT_SECONDS", 1.0)
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async def scenario() -> None:
        async with Client(make_server(workspace)) as client:
            quick = await call(client, "submit_task", command="true")
            slow = await call(client, "submit_task", command="sleep 30")
            ids = [quick["task_id"], slow["task_id"]]
            await wait_done(client, quick["task_id"])
            await until(lambda: _state_is(client, slow["task_id"], "running"), what="running")
            started = anyio.current_time()
            result = await client.call_tool(
                "wait_for_tasks",
                {"task_ids": ids, "timeout_seconds": 10**9},
                progress_callback=on_progress,
            )
            elapsed = anyio.current_time() - started
            waited = data(result)
            assert waited["met"] is False and elapsed < 10
            assert {t["state"] for t in waited["tasks"]} == {"completed", "running"}
            assert progress and progress[-1][:2] == (1, 2), progress
            anyone = await call(
                client, "wait_for_tasks", task_ids=ids, mode="any", timeout_seconds=0
            )
            assert anyone["met"] is True
            await call(client, "cancel_task", task_id=slow["task_id"])

    anyio.run(scenario)


def test_a_wait_on_many_tasks_counts_the_completed_ones(
    workspace: Path, start_supervisor: Start
) -> None:
    start_supervisor()

    async def scenario() -> None:
        async with Client(make_server(workspace)) as client:
            commands = ["true"] * 28 + ["exit 1", "exit 2"]
            batch = await call(client, "submit_batch", tasks=[{"command": c} for c in commands])
            waited = await call(
                client, "wait_for_tasks", task_ids=batch["task_ids"], timeout_seconds=55
            )
            assert waited["met"] is True
            assert waited["counts"] == {"completed": 28, "failed": 2}
            assert [(t["state"], t["exit_code"]) for t in waited["tasks"]] == [
                ("failed", 1),
                ("failed", 2),
            ]
            assert waited["not_listed"] == 28
            assert wire_size(waited) <= 2 * STATUS_MAX_BYTES

    anyio.run(scenario)


def test_cancel_kills_the_whole_tree(workspace: Path, start_supervisor: Start) -> None:
    start_supervisor()

    async def scenario() -> None:
        async with Client(make_server(workspace)) as client:
            ref = await call(client, "submit_task", command="sleep 300 & sleep 300 & wait")
            task_id = ref["task_id"]
            await until(lambda: _tree_up(task_id), what="both sleeps running")
            cancelled = await call(client, "cancel_task", task_id=task_id)
            assert cancelled == {"task_id": task_id, "state": "cancelled"}
            assert marked_processes(task_id) == []
            again = await client.call_tool("cancel_task", {"task_id": task_id})
            assert "not allowed: cannot cancel" in error_text(again)

    anyio.run(scenario)


async def _tree_up(task_id: str, processes: int = 3) -> bool:
    return len(await anyio.to_thread.run_sync(marked_processes, task_id)) >= processes


def test_retry_retry_failed_and_purge(workspace: Path, start_supervisor: Start) -> None:
    start_supervisor()

    async def scenario() -> None:
        async with Client(make_server(workspace)) as client:
            flag = workspace / "flag"
            ref = await call(client, "submit_task", command=f"test -e {flag}")
            assert (await wait_done(client, ref["task_id"]))["state"] == "failed"
            other = await call(client, "submit_task", command="exit 1")
            await wait_done(client, other["task_id"])
            flag.touch()
            retried = await call(client, "retry_task", task_id=ref["task_id"])
            assert retried["state"] == "pending"
            done = await wait_done(client, ref["task_id"])
            assert (done["state"], done["attempt"]) == ("completed", 2)
            again = await call(client, "retry_failed")
            assert again["task_ids"] == [other["task_id"]]
            await wait_done(client, other["task_id"])
            refused = await client.call_tool("retry_task", {"task_id": ref["task_id"]})
            assert "not allowed: cannot retry" in error_text(refused)
            assert (await call(client, "purge_tasks", older_than=3600))["purged"] == 0
            assert (await call(client, "purge_tasks"))["purged"] == 1
            gone = await client.call_tool("get_task", {"task_id": ref["task_id"]})
            assert "not found" in error_text(gone)
            stats = await call(client, "queue_stats")
            assert stats["counts"] == {"failed": 1} and stats["total"] == 1

    anyio.run(scenario)


def test_closing_the_client_leaves_tasks_running(workspace: Path, start_supervisor: Start) -> None:
    start_supervisor()
    server = make_server(workspace)

    async def scenario() -> None:
        async with Client(server) as client:
            task_id = (await call(client, "submit_task", command="sleep 300"))["task_id"]
            await until(lambda: _tree_up(task_id, 1), what="the task's process")
        store = store_of(load_settings())
        try:
            assert store.get(task_id).state is State.RUNNING
        finally:
            store.close()
        assert marked_processes(task_id)
        async with Client(make_server(workspace)) as client:
            listed = await call(client, "list_tasks", state="running")
            assert [t["id"] for t in listed["tasks"]] == [task_id]
            await call(client, "cancel_task", task_id=task_id)

    anyio.run(scenario)


# -- confinement and the resource -------------------------------------------------------------
def test_another_workspaces_tasks_are_not_found(workspace: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    settings = load_settings()
    store = store_of(settings)
    foreign = store.submit(
        [TaskSpec(command="true", cwd=str(elsewhere), workspace=str(elsewhere))]
    )[0]
    store.close()

    async def scenario() -> None:
        async with Client(idle_server(workspace)) as client:
            mine = await call(client, "submit_task", command="true")
            for tool, args in [
                ("get_task", {}),
                ("task_output", {}),
                ("cancel_task", {}),
                ("retry_task", {}),
                ("wait_for_tasks", None),
                ("submit_task", None),
            ]:
                if tool == "wait_for_tasks":
                    args = {"task_ids": [mine["task_id"], foreign.id], "timeout_seconds": 0}
                elif tool == "submit_task":
                    args = {"command": "true", "depends_on": [foreign.id]}
                else:
                    args = {"task_id": foreign.id}
                refused = await client.call_tool(tool, args)
                assert f"not found: no task '{foreign.id}' in this workspace" in error_text(refused)
            own = await call(client, "list_tasks")
            assert [t["id"] for t in own["tasks"]] == [mine["task_id"]]
            every = await client.call_tool("list_tasks", {"all_workspaces": True})
            assert "agents_see_all_workspaces = true" in error_text(every)
            with pytest.raises(Exception, match="in this workspace"):
                await client.read_resource(OUTPUT_URI.format(task_id=foreign.id))

    anyio.run(scenario)


def test_output_resource_reads_a_tasks_log(workspace: Path, start_supervisor: Start) -> None:
    start_supervisor()

    async def scenario() -> None:
        async with Client(make_server(workspace)) as client:
            templates = await client.list_resource_templates()
            assert [t.uri_template for t in templates.resource_templates] == [OUTPUT_URI]
            ref = await call(client, "submit_task", command="echo from the log")
            await wait_done(client, ref["task_id"])
            read = await client.read_resource(OUTPUT_URI.format(task_id=ref["task_id"]))
            assert [getattr(c, "text", None) for c in read.contents] == ["from the log\n"]

    anyio.run(scenario)


# -- refusals ---------------------------------------------------------------------------------
REFUSALS = [
    ("submit_task", {}, "invalid argument: command is empty"),
    ("submit_task", {"command": 5}, "invalid arguments for submit_task: command"),
    ("submit_task", {"command": "true", "task_type": "poem"}, "task_type: Input should be"),
    ("submit_task", {"command": "true", "priority": 99}, "priority"),
    ("submit_task", {"command": "true", "cwd": "/"}, "refused by policy: path '/'"),
    ("submit_task", {"command": "true", "cwd": "no/such/dir"}, "is not an existing directory"),
    ("submit_task", {"command": "true", "timeout_seconds": -5}, "timeout"),
    ("submit_task", {"command": "true", "env": {"LD_PRELOAD": "x.so"}}, "LD_PRELOAD"),
    ("submit_task", {"command": "x" * 10_000_000}, "command is 10000000 bytes; the limit is"),
    ("submit_task", {"task_type": "review"}, "needs a spec"),
    ("submit_task", {"task_type": "write_file", "spec": "a poem"}, "needs output_path"),
    ("submit_task", {"task_type": "docs", "spec": "s", "output_path": "../out.md"}, "outside the"),
    (
        "submit_task",
        {"task_type": "review", "spec": "s", "context_files": ["nope.py"]},
        "does not exist",
    ),
    ("submit_task", {"task_type": "agent", "spec": "s", "max_turns": 10**6}, "max_turns must be"),
    ("submit_batch", {"tasks": []}, "the batch is empty"),
    ("submit_batch", {"tasks": [{"command": "true"}] * 10_000}, "the limit is 1000 per call"),
    (
        "submit_batch",
        {"tasks": [{"command": "true"}, {"command": "true", "colour": 1}]},
        "task 2 of the batch: unknown field(s) colour",
    ),
    ("submit_batch", {"tasks": "true"}, "invalid arguments for submit_batch: tasks"),
    ("get_task", {"task_id": "zz"}, "not found: 'zz' is not a task id: give the id"),
    ("get_task", {"task_id": "abcdef0123"}, "not found: no task 'abcdef0123' in this workspace"),
    ("get_task", {}, "task_id: Field required"),
    ("task_output", {"task_id": "0" * 32, "max_bytes": 0}, "max_bytes"),
    ("list_tasks", {"state": "sleeping"}, "state: Input should be"),
    ("wait_for_tasks", {"task_ids": []}, "task_ids is empty"),
    ("wait_for_tasks", {"task_ids": ["a" * 32] * 2000}, "the limit is 1000"),
    ("wait_for_tasks", {"task_ids": ["a" * 32], "timeout_seconds": -1}, "timeout_seconds must be"),
    ("wait_for_tasks", {"task_ids": ["a" * 32], "mode": "most"}, "mode: Input should be"),
    ("purge_tasks", {"older_than": -1}, "older_than must be"),
    ("nonexistent_tool", {}, "Unknown tool"),
]


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    REFUSALS,
    ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(REFUSALS)],
)
def test_every_refusal_names_the_cause(
    workspace: Path, tool: str, arguments: dict[str, Any], expected: str
) -> None:
    async def scenario() -> None:
        async with Client(idle_server(workspace)) as client:
            with anyio.fail_after(30):
                result = await client.call_tool(tool, arguments)
            text = error_text(result)
            assert expected in text
            assert len(text) < 1000
            assert "input_value" not in text  # the values sent are never echoed back

    anyio.run(scenario)


def test_policy_refusal_says_how_to_fix_it(workspace: Path) -> None:
    async def scenario() -> None:
        async with Client(idle_server(workspace, deny=("rm -rf",))) as client:
            refused = await client.call_tool("submit_task", {"command": "rm -rf build"})
            text = error_text(refused)
            assert "refused by policy" in text and "rm -rf" in text
            assert "OFFLOAD_ALLOW/OFFLOAD_DENY" in text
            allowed = await call(client, "submit_task", command="make build")
            assert allowed["state"] == "pending"
        async with Client(idle_server(workspace, allow=("^pytest",))) as client:
            text = error_text(
                await client.call_tool("submit_task", {"command": "pytest && curl x"})
            )
            assert "is not allowed by any OFFLOAD_ALLOW pattern" in text

    anyio.run(scenario)


def test_llm_fields_are_validated_and_stored(workspace: Path) -> None:
    (workspace / "src.py").write_text("print(1)\n")

    async def scenario() -> None:
        async with Client(idle_server(workspace)) as client:
            ref = await call(
                client,
                "submit_task",
                task_type="test_gen",
                spec="tests for src.py",
                output_path="tests/test_src.py",
                context_files=["src.py"],
                model="auto",
                large_context=True,
                priority=2,
                timeout_seconds=600,
            )
            view = await call(client, "get_task", task_id=ref["task_id"])
            assert (view["type"], view["state"], view["model"]) == ("test_gen", "pending", "auto")
        store = store_of(load_settings())
        try:
            task = store.get(ref["task_id"])
        finally:
            store.close()
        assert task.output_path == str(workspace.resolve() / "tests" / "test_src.py")
        assert task.context_files == (str(workspace.resolve() / "src.py"),)
        assert (task.large_context, task.priority, task.timeout_seconds) == (True, 2, 600)

    anyio.run(scenario)


def test_batch_is_all_or_nothing_and_dependencies_resolve(workspace: Path) -> None:
    async def scenario() -> None:
        async with Client(idle_server(workspace)) as client:
            first = await call(client, "submit_task", command="make")
            created = await call(
                client,
                "submit_batch",
                tasks=[
                    {"command": "make test", "depends_on": [first["task_id"][:8]], "group": "ci"},
                    {"task_type": "shell", "command": ["echo", "argv"], "priority": 1},
                ],
            )
            assert len(created["task_ids"]) == 2
            refused = await client.call_tool(
                "submit_batch",
                {
                    "tasks": [
                        {"command": "true"},
                        {"command": "true", "cwd": "/etc"},
                    ]
                },
            )
            assert "task 2 of the batch: " in error_text(refused)
            listed = await call(client, "list_tasks", limit=10**9)
            assert len(listed["tasks"]) == 3
            view = await call(client, "get_task", task_id=created["task_ids"][0])
            assert view["depends_on"] == [first["task_id"]]

    anyio.run(scenario)
