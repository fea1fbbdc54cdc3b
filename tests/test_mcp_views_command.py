"""MCP task views carry the command beside the name, so an agent sees what a named task runs."""

from __future__ import annotations

from pathlib import Path

from offload.mcp_server.views import TITLE_MAX_CHARS, brief, info
from offload.queue.models import TaskSpec
from offload.queue.sqlite import SqliteStore


def test_a_named_task_shows_its_command_capped(store: SqliteStore, workspace: Path) -> None:
    long = "pytest " + "tests/x " * 100
    named, plain = store.submit(
        [
            TaskSpec(command=long, name="the tests", cwd=str(workspace), workspace=str(workspace)),
            TaskSpec(command="make", cwd=str(workspace), workspace=str(workspace)),
        ]
    )
    shown = info(named, 0)
    assert shown.title == "the tests"
    assert shown.command is not None and shown.command.startswith("pytest tests/x")
    assert len(shown.command) == TITLE_MAX_CHARS and shown.command.endswith("…")
    assert brief(named, title=True).command == shown.command
    assert info(plain, 0).command is None  # the title already is the command: no repeat
    assert brief(named).command is None  # a brief without a title stays an id and a state
