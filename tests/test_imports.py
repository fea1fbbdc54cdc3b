"""The CLI's cold paths load only what they use.

`offload submit` and `offload list` are run as scripts and agents run them: hundreds of
times, each a fresh interpreter, so every import is paid every time. These tests run the
real CLI in a subprocess with `-X importtime` and fail when a heavy library (or one of
offload's own modules that has no business on the path) is loaded.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import _env

HEAVY = {
    "pydantic",
    "rich",
    "structlog",
    "boto3",
    "botocore",
    "openai",
    "httpx",
    "psutil",
    "mcp",
    "fastapi",
    "uvicorn",
    "tenacity",
    "psycopg",
    "asyncio",
    "tomllib",
    "secrets",
    "subprocess",
    "offload.workers",
    "offload.mcp_server",
    "offload.web",
    "offload.supervisor.daemon",
    # Standard modules that cost milliseconds of every call (issue 13): dataclasses pulls
    # in inspect, ast and dis; argparse's help formatter would pull in shutil and with it
    # three compression modules; typing alone is ~3 ms.
    "dataclasses",
    "inspect",
    "typing",
    "shutil",
    "threading",
    "ctypes",
    # A C extension: loading its shared object costs ~1 ms; only the supervisor sets limits.
    "resource",
}


def _imported(offload_home: Path, workspace: Path, *args: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-P", "-m", "offload", *args],
        env=_env(offload_home),
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    names = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    assert "offload.cli" in names
    return names


def _heavy(names: set[str]) -> set[str]:
    return {n for n in names if n in HEAVY or any(n.startswith(h + ".") for h in HEAVY)}


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["list", "--json"],
        ["show", "0123456789abcdef"],
        ["wait", "0123456789abcdef", "--timeout", "0"],
        ["cancel", "0123456789abcdef"],
        ["logs", "0123456789abcdef"],
        ["stats"],
    ],
)
def test_reading_commands_load_nothing_heavy(
    offload_home: Path, workspace: Path, args: list[str]
) -> None:
    names = _imported(offload_home, workspace, *args)
    assert _heavy(names) == set()
    assert "offload.policies.shell" not in names or args[0] == "submit"


def test_submit_loads_nothing_heavy(
    offload_home: Path, workspace: Path, start_supervisor: Any
) -> None:
    start_supervisor()  # the submit wakes it rather than starting one
    names = _imported(offload_home, workspace, "submit", "--", "make", "-j4", "test")
    assert _heavy(names) == set()
    assert "sqlite3" in names  # the check would pass vacuously if nothing were recorded
    # A plain command line under no allow or deny list needs no shell parser.
    assert not {"offload.policies.shell", "offload.policies.argv", "shlex"} & names


def test_the_mcp_server_starts_without_rich_or_the_sdk_client(
    offload_home: Path, workspace: Path, start_supervisor: Any
) -> None:
    """rich is in many environments (here the test tools bring it); the SDK's server would
    import it for its log handler, ~20 ms of every start. The SDK's package init would
    import its whole client side, ~28 ms more (tests/test_mcp_stdio.py talks to the
    server this starts)."""
    assert importlib.util.find_spec("rich") is not None  # else this passes vacuously
    start_supervisor()
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-P", "-m", "offload", "mcp"],
        env=_env(offload_home),
        cwd=workspace,
        stdin=subprocess.DEVNULL,  # end of input: the server starts, then ends
        capture_output=True,
        text=True,
        timeout=60,
    )
    names = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "offload.mcp_server.server" in names and "mcp_types" in names, result.stderr[-2000:]
    assert not {n for n in names if n == "rich" or n.startswith("rich.")}
    assert not {n for n in names if n == "mcp.client" or n.startswith("mcp.client.")}


@pytest.mark.slow  # about a second: not in the fast subset
def test_the_sdk_server_side_needs_nothing_from_the_package_init() -> None:
    """`offload mcp` skips the SDK package's `__init__` (see offload.mcp_server). That holds
    while no module of the server side, which it loads, imports a name from the package
    root; this fails on an SDK release that starts to."""
    import ast

    import mcp

    root = Path(mcp.__file__).parent
    sources = [
        p for part in ("server", "shared", "types", "os") for p in (root / part).rglob("*.py")
    ]
    assert len(sources) > 20  # else this passes vacuously
    found = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "mcp":
                found.append(f"{path.relative_to(root)}:{node.lineno}")
            if isinstance(node, ast.Import) and any(a.name == "mcp" for a in node.names):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
            depth = len(path.relative_to(root).parts)  # the level that reaches `mcp`
            if isinstance(node, ast.ImportFrom) and node.level == depth and not node.module:
                # `from .. import x` reaching the package root: fine for a submodule only
                names = [a.name for a in node.names]
                if not all((root / n).is_dir() or (root / f"{n}.py").is_file() for n in names):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert found == []
