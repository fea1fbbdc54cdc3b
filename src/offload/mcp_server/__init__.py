"""The MCP server, `offload mcp`: the agent's door to the queue.

Importing this package is cheap; pydantic and the MCP SDK load only when `main` runs,
so the rest of the CLI stays fast.
"""

from __future__ import annotations

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
    from offload.mcp_server.server import run

    return run(settings, workspace)
