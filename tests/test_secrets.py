"""Provider keys are out of every environment a task can read, and out of reach in memory.

`/proc/<pid>/environ` shows the environment a process was started with; a shell task can
read it for the supervisor and for an LLM worker (same user, no sandbox). The keys must
not be there: the on-demand launcher hands them to the supervisor over a pipe, the
supervisor to each worker the same way, and a supervisor started with them in its
environment wipes them from that block.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import run_to_end, wait_until
from fakes.environment import FAKE_AWS_SECRET, FAKE_OPENAI_KEY, LlmEnv
from fakes.http import Reply, Request
from offload.queue.models import State, TaskSpec
from offload.queue.sqlite import SqliteStore
from offload.supervisor.keys import is_key_name, take_keys
from offload.supervisor.wake import poke, supervisor_pid

pytest_plugins = ["fakes.fixtures"]


def _shell(store: SqliteStore, home: Path, workspace: Path, command: str) -> str:
    spec = TaskSpec(command=command, cwd=str(workspace), workspace=str(workspace))
    done, output = run_to_end(store, home, spec)
    assert done.state is State.COMPLETED, done.error
    return output


@pytest.mark.slow
def test_a_task_finds_no_key_in_the_supervisor_or_a_worker_environment(
    llm_env: LlmEnv,
    store: SqliteStore,
    offload_home: Path,
    workspace: Path,
    start_supervisor: Callable[..., Any],
) -> None:
    release = threading.Event()
    seen: list[str] = []

    def slow_answer(request: Request) -> Reply:
        seen.append(request.headers.get("authorization", ""))
        release.wait(30)  # keeps the worker alive while the task looks at it
        return llm_env.openai.text("# Notes\n")

    llm_env.without_aws()
    llm_env.monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_AWS_SECRET)
    llm_env.openai.respond_with(slow_answer)
    sup = start_supervisor(max_concurrent="2")
    llm = store.submit(
        [
            TaskSpec(
                type="docs",
                spec="notes",
                output_path="NOTES.md",
                cwd=str(workspace),
                workspace=str(workspace),
            )
        ]
    )[0]
    poke(offload_home)
    try:
        wait_until(lambda: seen, timeout=30, what="the worker's request")
        init = store.get(llm.id).pid
        assert init
        tree = psutil.Process(init).children(recursive=True)
        worker = next(p for p in tree if "offload.workers" in p.cmdline())
        out = _shell(
            store,
            offload_home,
            workspace,
            f"tr '\\0' '\\n' < /proc/{sup.proc.pid}/environ; echo ---; "
            f"tr '\\0' '\\n' < /proc/{worker.pid}/environ",
        )
    finally:
        release.set()
    assert f"OFFLOAD_HOME={offload_home}" in out  # the task could read both blocks ...
    assert out.count("PATH=") >= 2
    for secret in (FAKE_OPENAI_KEY, FAKE_AWS_SECRET):  # ... and no key is in them
        assert secret not in out
    assert "OPENAI_API_KEY" not in out and "AWS_SECRET_ACCESS_KEY" not in out
    assert seen == [f"Bearer {FAKE_OPENAI_KEY}"]  # while the worker did get its key
    done = wait_until(lambda: (t := store.get(llm.id)).is_final and t, timeout=30)
    assert done.state is State.COMPLETED, done.error


@pytest.mark.slow
def test_an_on_demand_supervisor_starts_without_keys_in_its_environment(
    offload_home: Path, workspace: Path, store: SqliteStore
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFLOAD_")}
    env.update(
        OFFLOAD_HOME=str(offload_home),
        OPENAI_API_KEY=FAKE_OPENAI_KEY,
        AWS_SECRET_ACCESS_KEY=FAKE_AWS_SECRET,
    )
    offload = [sys.executable, "-P", "-m", "offload"]
    first = subprocess.run(
        [*offload, "submit", "--wait", "--", "true"],
        env=env,
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert first.returncode == 0, first.stderr
    pid = wait_until(lambda: supervisor_pid(offload_home), what="supervisor pid")
    out = _shell(store, offload_home, workspace, f"tr '\\0' '\\n' < /proc/{pid}/environ")
    assert f"OFFLOAD_HOME={offload_home.resolve()}" in out
    assert FAKE_OPENAI_KEY not in out and FAKE_AWS_SECRET not in out
    log = (offload_home / "supervisor.log").read_text()
    assert '"undumpable": true' in log


def test_take_keys_moves_provider_names_and_keeps_settings() -> None:
    environ = {
        "OPENAI_API_KEY": "k1",
        "AWS_SECRET_ACCESS_KEY": "k2",
        "MY_SERVICE_TOKEN": "k3",
        "OFFLOAD_HOME": "/x",
        "PATH": "/bin",
    }
    keys = take_keys(environ)
    assert keys == {"OPENAI_API_KEY": "k1", "AWS_SECRET_ACCESS_KEY": "k2", "MY_SERVICE_TOKEN": "k3"}
    assert environ == {"OFFLOAD_HOME": "/x", "PATH": "/bin"}
    assert not is_key_name("OFFLOAD_API_TOKEN")


def test_a_supervisor_started_with_keys_wipes_them_from_its_starting_block(
    tmp_path: Path,
) -> None:
    code = (
        "import sys\n"
        "from offload.supervisor.keys import take_keys\n"
        "keys = take_keys()\n"
        "raw = open('/proc/self/environ', 'rb').read()\n"
        "print(sorted(keys), b'sk-wipe-me' in raw, b'PATH=' in raw)\n"
    )
    env = {"PATH": os.environ["PATH"], "OPENAI_API_KEY": "sk-wipe-me"}
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "['OPENAI_API_KEY'] False True", out.stderr
