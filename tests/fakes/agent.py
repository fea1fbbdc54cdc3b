"""Helpers of the agent tests: submitting agent tasks, running them in process, reading
what the fakes were sent back as tool results."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from offload import records
from offload.config import Settings, load_settings
from offload.queue.models import Task
from offload.queue.sqlite import SqliteStore
from offload.submission import Submitter
from offload.workers.agent import run_agent_task
from offload.workers.llm import Outcome, WorkerContext

__all__ = ["AgentRun", "bedrock_results", "openai_results", "submit_agent"]


def submit_agent(
    store: SqliteStore,
    workspace: Path,
    spec: str = "do it",
    *,
    settings: Settings | None = None,
    **fields: Any,
) -> Task:
    """Submits an agent task for `workspace` through the real validation.

    `settings` are the submitting front end's (default: the environment's); their policy
    is stored with the task and is what the worker enforces.
    """
    raw = {"type": "agent", "spec": spec, **fields}
    submitter = Submitter.for_workspace(settings or load_settings(), workspace)
    built = submitter.build(raw, lambda i: i)
    [task] = store.submit([built])
    return task


class AgentRun:
    """Runs an agent task in process (real store, real SDK clients) and keeps its log."""

    def __init__(self, store: SqliteStore, **settings: Any) -> None:
        self.store = store
        self.settings: Settings = records.replace(load_settings(), **settings)
        self.log = io.StringIO()
        self.sleeps: list[float] = []

    def __call__(self, task: Task) -> Outcome:
        with WorkerContext(
            settings=self.settings,
            store=self.store,
            environ=os.environ,
            out=self.log,
            sleep=self.sleeps.append,
        ) as ctx:
            return run_agent_task(self.store.get(task.id), ctx)

    def staging(self, task: Task) -> Path:
        """The task's staging directory."""
        return self.settings.logs_dir / f"{task.id}.staging"


def openai_results(body: dict[str, Any]) -> list[str]:
    """The tool results (`role: tool` contents) after the last assistant message of one
    chat completions request body: the results of the previous turn's calls."""
    messages = body["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] in ("assistant", "system"))
    return [m["content"] for m in messages[last + 1 :] if m["role"] == "tool"]


def bedrock_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The toolResult blocks of the last message of one Converse request body."""
    content = body["messages"][-1]["content"]
    return [block["toolResult"] for block in content if "toolResult" in block]
