"""The HTTP API and live dashboard behind `offload serve`.

FastAPI and uvicorn are imported only when a server is actually started, so the CLI's
other commands never pay for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from offload.config import Settings

__all__ = ["DEFAULT_PORT", "serve"]

DEFAULT_PORT = 8765


def serve(settings: Settings, host: str, port: int, allow_remote: bool) -> int:
    """Runs the HTTP server until interrupted; returns the process exit code.

    Prints the dashboard's URL with the token (``http://127.0.0.1:8765/?token=…``).
    Refuses an address beyond loopback unless ``allow_remote`` is set, and warns when it is.

    Args:
        settings: offload's settings; the data dir holds the queue and the token.
        host: The address to bind (127.0.0.1 by default).
        port: The TCP port; 0 picks a free one.
        allow_remote: Permit binding an address other machines can reach.

    Returns:
        0 after a clean stop (Ctrl-C), 1 when the server cannot start, 2 for an address
        refused without ``allow_remote``.
    """
    from offload.web.serve import run

    return run(settings, host, port, allow_remote)
