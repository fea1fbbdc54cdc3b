"""The issue's seed batch through the agent's door: MCP submit_batch + wait_for_tasks, with
the real supervisor spawning LLM workers whose real boto3 clients talk to the fake."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client

import test_llm_e2e as e2e
from fakes.environment import LlmEnv
from test_mcp_support import call, make_server

pytest_plugins = ["fakes.fixtures"]


def test_seed_batch_through_mcp_writes_both_files_and_bills_them(
    llm_env: LlmEnv, workspace: Path, start_supervisor: Callable[..., Any]
) -> None:
    (workspace / "src/auth").mkdir(parents=True)
    (workspace / "src/auth/tokens.py").write_text("def issue(user):\n    return 'tok-' + user\n")
    llm_env.bedrock.respond_with(e2e._seed_responder(llm_env.bedrock))
    start_supervisor(openai_base_url_is_openai="1")

    async def scenario() -> dict[str, Any]:
        async with Client(make_server(workspace)) as client:
            submitted = await call(client, "submit_batch", tasks=e2e.SEED_BATCH)
            ids = submitted["task_ids"]
            assert len(ids) == 2
            for _ in range(4):  # each wait is capped at 55 s; the tasks take about one
                waited = await call(client, "wait_for_tasks", task_ids=ids, timeout_seconds=30)
                if waited["met"]:
                    break
            assert waited["met"], waited
            details = [await call(client, "get_task", task_id=i) for i in ids]
            stats = await call(client, "queue_stats")
            return {"details": details, "stats": stats}

    result = anyio.run(scenario)
    assert [d["state"] for d in result["details"]] == ["completed", "completed"]
    assert (workspace / "tests/test_tokens.py").read_text().startswith("from auth.tokens import")
    assert "refactor(auth)" in (workspace / "CHANGELOG.md").read_text()
    cost = (2000 * 3 + 300 * 15) / 1e6  # Sonnet 4.5, global profile: no regional markup
    assert sum(d["cost_usd"] for d in result["details"]) == pytest.approx(2 * cost)
    assert result["stats"]["cost_today_usd"] == pytest.approx(2 * cost, abs=1e-6)
    assert llm_env.bedrock.model_ids() == [e2e.SONNET, e2e.SONNET]
