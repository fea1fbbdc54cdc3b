"""Fuzzing every tool's arguments: the server answers each call, never crashes or hangs.

Arguments are drawn from any JSON value, mixed with plausible ones (real-looking ids,
paths inside and outside the workspace, huge numbers), so both the schema validation and
the layers behind it are reached. A crash would show as the SDK's generic, text-less
"Error executing tool X"; a refusal must say what was wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp.client import Client
from mcp_types import CallToolResult, TextContent

from test_mcp_support import make_server

CALL_SECONDS = 20
EXAMPLES_PER_TOOL = 30

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ids = st.text("0123456789abcdef", min_size=0, max_size=40) | st.text(max_size=12)
paths = st.sampled_from(
    [".", "..", "/", "/etc", "sub", "missing/dir", "a\x00b", "~", ""]
) | st.text(max_size=20)
commands = (
    st.sampled_from(["true", "echo hi", "rm -rf /", "", "   ", "sleep 1 &", "$(true)"])
    | st.lists(st.text(max_size=10), max_size=4)
    | st.text(max_size=200)
)
small_timeouts = st.floats(min_value=-1, max_value=0.2) | st.just(float("nan"))


def anything_or(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy | json_values


def arguments(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    known = st.fixed_dictionaries({}, optional={k: anything_or(v) for k, v in fields.items()})
    stray = st.dictionaries(st.text(max_size=8), json_values, max_size=2)
    return st.builds(lambda a, b: {**b, **a}, known, stray)


submission = {
    "command": commands,
    "task_type": st.sampled_from(["shell", "review", "docs", "agent", "poem"]),
    "spec": st.text(max_size=50),
    "cwd": paths,
    "timeout_seconds": scalars,
    "priority": st.integers(-5, 20),
    "group": st.text(max_size=70),
    "depends_on": st.lists(ids, max_size=3),
    "env": st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=3),
    "name": st.text(),
    "output_path": paths,
    "context_files": st.lists(paths, max_size=3),
    "model": st.text(max_size=10),
    "large_context": st.booleans(),
    "max_turns": st.integers(-(2**40), 2**40),
}
TOOLS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "submit_task": arguments(submission),
    "submit_batch": arguments({"tasks": st.lists(arguments(submission), max_size=4)}),
    "get_task": arguments({"task_id": ids}),
    "task_output": arguments(
        {
            "task_id": ids,
            "tail_lines": st.integers(-(2**63), 2**63),
            "max_bytes": st.integers(-(2**63), 2**63),
        }
    ),
    "list_tasks": arguments(
        {
            "state": st.sampled_from(["pending", "finished", "zombie"]),
            "limit": st.integers(-(2**63), 2**63),
            "all_workspaces": st.booleans(),
        }
    ),
    "wait_for_tasks": arguments(
        {
            "task_ids": st.lists(ids, max_size=5),
            "mode": st.sampled_from(["all", "any", "some"]),
            "timeout_seconds": small_timeouts,
        }
    ),
    "cancel_task": arguments({"task_id": ids}),
    "retry_task": arguments({"task_id": ids}),
    "retry_failed": arguments({}),
    "purge_tasks": arguments({"older_than": scalars}),
    "queue_stats": arguments({}),
}


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BlockingPortal, Client]]:
    """One server and client for all examples (a fresh one per example would be slow)."""
    root = tmp_path_factory.mktemp("fuzz")
    workspace = root / "ws"
    (workspace / "sub").mkdir(parents=True)
    mp = pytest.MonkeyPatch()
    mp.setenv("OFFLOAD_HOME", str(root / "home"))
    try:
        server = make_server(workspace, wake=lambda: None)
        with start_blocking_portal() as portal:
            with portal.wrap_async_context_manager(Client(server)) as client:
                yield portal, client
    finally:
        mp.undo()


def _fits_the_wait_cap(tool: str, args: dict[str, Any]) -> bool:
    """Waits on ids that resolve could block up to the 55 s cap; keep examples short."""
    timeout = args.get("timeout_seconds", 30)
    return tool != "wait_for_tasks" or (isinstance(timeout, int | float) and timeout <= 0.2)


@pytest.mark.parametrize("tool", sorted(TOOLS))
@settings(
    max_examples=EXAMPLES_PER_TOOL,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_arguments_get_an_answer(
    session: tuple[BlockingPortal, Client], tool: str, data: st.DataObject
) -> None:
    portal, client = session
    args = data.draw(TOOLS[tool], label="arguments")
    if not _fits_the_wait_cap(tool, args):
        args["timeout_seconds"] = 0

    async def one_call() -> CallToolResult:
        with anyio.fail_after(CALL_SECONDS):
            return await client.call_tool(tool, args)

    result = portal.call(one_call)
    texts = [c.text for c in result.content if isinstance(c, TextContent)]
    if result.is_error:
        assert texts and texts[0] != f"Error executing tool {tool}", "a crash, not a refusal"
        assert 10 < len(texts[0]) < 2000
    else:
        assert isinstance(result.structured_content, dict)


def test_the_fuzzed_server_still_serves(
    session: tuple[BlockingPortal, Client], tmp_path: Path
) -> None:
    portal, client = session
    result = portal.call(client.call_tool, "queue_stats", {})
    assert not result.is_error
