"""Every command the README shows works: its ```sh blocks run against a private OFFLOAD_HOME.

Blocks in another language are listed in SKIPPED with the reason they are not run here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import _env

README = Path(__file__).parents[1] / "README.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SKIPPED = {
    "python3 -m venv": "installs from the network into the home directory",
    "scripts/test": "is the test suite itself",
    "claude mcp add": "needs the Claude Code CLI",
    '{ "mcpServers"': "client configuration, not a command",
    "pending ──►": "a diagram",
    "export OFFLOAD_DATABASE_URL": "needs a PostgreSQL server and a supervisor per host; "
    "tests/test_hosts.py and tests/test_routing.py run these steps",
}


def _blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def test_the_readme_is_short_and_every_block_is_run_or_skipped_for_a_reason() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 300
    for language, body in _blocks():
        if language == "sh":
            continue
        assert any(body.lstrip().startswith(key) for key in SKIPPED), body


@pytest.mark.slow
def test_every_shell_block_of_the_readme_runs(offload_home: Path, workspace: Path) -> None:
    env = _env(offload_home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    blocks = [body for language, body in _blocks() if language == "sh"]
    assert len(blocks) >= 3
    try:
        for body in blocks:
            done = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", body],
                env=env,
                cwd=workspace,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, f"{body}\n--- stderr:\n{done.stderr}"
            assert "Traceback" not in done.stderr
    finally:
        subprocess.run(
            [sys.executable, "-m", "offload", "supervisor", "stop"],
            env=env,
            capture_output=True,
            timeout=60,
        )
