"""Official npm clients over Streamable HTTP: the TypeScript SDK client and the MCP
Inspector CLI, against the real `offload serve` /mcp. Needs `scripts/npm-deps` (CI runs it);
skipped only when no node is installed here."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from offload.config import load_settings
from offload.web.serve import Prepared, ServerThread, prepare

ROOT = Path(__file__).resolve().parent.parent
DEPS = ROOT / ".npm-deps"
NODE = DEPS / "bin" / "node"
INSPECTOR = DEPS / "node_modules" / ".bin" / "mcp-inspector"


def _node() -> str:
    if NODE.exists():
        return str(NODE)
    if shutil.which("node") is None:
        pytest.skip("node is not installed (CI installs it with scripts/npm-deps)")
    pytest.fail("node is here but the npm tools are not: run scripts/npm-deps")


@pytest.fixture
def served(workspace: Path) -> Iterator[Prepared]:
    prepared = prepare(load_settings(), "127.0.0.1", 0, False, workspace=workspace)
    with ServerThread(prepared):
        yield prepared


@pytest.mark.slow
def test_typescript_sdk_and_inspector_cli_over_http(served: Prepared) -> None:
    node = _node()
    url = f"http://127.0.0.1:{served.port}/mcp"
    ts = subprocess.run(
        [node, str(ROOT / "tests" / "node" / "sdk_http_client.mjs"), url, served.token],
        capture_output=True,
        text=True,
        timeout=90,
        env={"OFFLOAD_NPM_DEPS": str(DEPS), "PATH": "/usr/bin:/bin"},
        cwd=DEPS,
    )
    assert ts.returncode == 0, ts.stderr
    seen = json.loads(ts.stdout.strip().splitlines()[-1])
    assert len(seen["tools"]) == 11 and "submit_task" in seen["tools"]
    assert seen["info"]["id"] == seen["submitted"]["task_id"]

    inspector = subprocess.run(
        [node, str(INSPECTOR), "--cli", url, "--transport", "http", "--method", "tools/list"]
        + ["--header", f"Authorization: Bearer {served.token}"],
        capture_output=True,
        text=True,
        timeout=90,
        env={"PATH": f"{NODE.parent}:/usr/bin:/bin", "HOME": str(DEPS)},
        cwd=DEPS,
    )
    assert inspector.returncode == 0, inspector.stderr
    listed = json.loads(inspector.stdout)
    assert {t["name"] for t in listed["tools"]} >= {"submit_task", "wait_for_tasks"}
    refused = subprocess.run(
        [node, str(INSPECTOR), "--cli", url, "--transport", "http", "--method", "tools/list"],
        capture_output=True,
        text=True,
        timeout=90,
        env={"PATH": f"{NODE.parent}:/usr/bin:/bin", "HOME": str(DEPS)},
        cwd=DEPS,
    )
    assert refused.returncode != 0  # no token, no tools
