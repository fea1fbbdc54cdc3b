"""The MCP server, `offload mcp`: the agent's door to the queue.

Importing this package is cheap; pydantic and the MCP SDK load only when `main` runs,
so the rest of the CLI stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from offload.config import Settings

__all__ = ["main"]


def main(settings: Settings, workspace: Path) -> int:
    """Serves MCP on stdin/stdout for `workspace` until the client disconnects.

    Args:
        settings: The loaded settings.
        workspace: The directory the agent works in; tasks run and stay inside it.

    Returns:
        The process exit code: 0 after a clean disconnect.

    Raises:
        ConfigError: An allow/deny pattern is not a valid regex.
        StoreError: The queue database cannot be opened.
    """
    _without_sdk_client()
    from offload.mcp_server.server import run

    return run(settings, workspace)


def _without_sdk_client() -> None:
    """Lets `offload mcp` load the SDK's server without the SDK's client.

    Any `import mcp.<module>` first runs the package's `__init__`, which imports the
    whole client side too (sessions, transports, its HTTP client): about 28 ms of every
    `offload mcp` start, for nothing a server uses. Registering the package as a plain
    module of its own directory, its `__init__` not run, lets the server's modules load
    on their own. Only this process does it (an `offload mcp` serves and exits); a
    process that has imported `mcp` already keeps it.
    """
    import importlib.util

    if "mcp" in sys.modules:
        return
    spec = importlib.util.find_spec("mcp")
    if spec is None or spec.submodule_search_locations is None:
        return  # not installed as a package: the import below says so
    sys.modules["mcp"] = importlib.util.module_from_spec(spec)
