"""A workspace is untrusted: nothing in it may shadow a module offload's own processes
import (the supervisor holds, and LLM workers use, the provider secrets)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import wait_until
from fakes.environment import LlmEnv
from offload.queue.models import State
from offload.queue.sqlite import SqliteStore

pytest_plugins = ["fakes.fixtures"]

HIJACK = "import os, sys\nprint('HIJACKED', os.environ.get('OPENAI_API_KEY'))\nsys.exit(7)\n"


def plant(workspace: Path) -> None:
    for name in ("json.py", "secrets.py", "logging.py", "selectors.py"):
        (workspace / name).write_text(HIJACK)


def test_on_demand_supervisor_ignores_modules_in_the_workspace(
    workspace: Path, offload_home: Path, monkeypatch: Any
) -> None:
    plant(workspace)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-123")
    offload = str(Path(sys.executable).parent / "offload")
    result = subprocess.run(
        [offload, "submit", "--wait", "--", "echo", "ok"],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"  # with --wait the id goes to stderr
    out = offload_home / "supervisor.out"
    assert "HIJACKED" not in (out.read_text() if out.exists() else "")


def test_llm_worker_ignores_modules_in_the_workspace(
    llm_env: LlmEnv,
    workspace: Path,
    store: SqliteStore,
    start_supervisor: Callable[..., Any],
    cli: Callable[..., Any],
) -> None:
    llm_env.without_aws()
    llm_env.openai.respond_with(lambda request: llm_env.openai.text("# Notes\n"))
    plant(workspace)
    start_supervisor()
    task_id = cli("submit", "--type", "docs", "--spec", "notes", "--output", "NOTES.md").stdout
    task = wait_until(lambda: (t := store.get(task_id.strip())).is_final and t, timeout=60)
    log = Path(task.log_path or "").read_text()
    assert "HIJACKED" not in log and "sk-" not in log
    assert task.state is State.COMPLETED, task.error
    assert (workspace / "NOTES.md").read_text().startswith("# Notes")
