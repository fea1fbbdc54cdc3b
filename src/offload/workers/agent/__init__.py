"""Agent tasks: a sandboxed, multi-turn tool-calling loop whose every turn can be read.

`run_agent_task` is the worker's entry point for task type `agent`. `load_turns` and
`format_turns` read an agent task's transcript for the front ends; they import nothing
heavy (no provider SDK), so the CLI can call them cheaply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from offload.workers.agent.transcript import format_turns, load_turns, transcript_path

if TYPE_CHECKING:
    from offload.queue.models import Task
    from offload.workers.llm import Outcome, WorkerContext

__all__ = ["format_turns", "load_turns", "run_agent_task", "transcript_path"]


def run_agent_task(task: Task, ctx: WorkerContext) -> Outcome:
    """Runs one agent task; see `offload.workers.agent.loop.run_agent_task`.

    Raises:
        OffloadError: why the task failed; the workspace was not touched.
    """
    from offload.workers.agent.loop import run_agent_task as run

    return run(task, ctx)
