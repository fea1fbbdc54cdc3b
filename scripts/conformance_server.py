"""The real `offload mcp --http` app for the conformance suite, which cannot send a token.

The suite's client sends no `Authorization` header, so this wrapper adds the server's own
token to each request that has none, as a configured client would; every other check
(Host, Origin, sessions, limits) runs unchanged on the raw request. Test harness only:
`offload` itself never accepts a request without the token.

Prints the MCP URL on stdout, then serves until killed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from offload.config import load_settings
from offload.web.serve import make_server, prepare


def main() -> int:
    workspace = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
    prepared = prepare(load_settings(), "127.0.0.1", 0, False, workspace=workspace, mcp_only=True)
    inner = prepared.app
    header = (b"authorization", f"Bearer {prepared.token}".encode())

    async def with_token(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not any(k == b"authorization" for k, _ in scope["headers"]):
            scope = {**scope, "headers": [*scope["headers"], header]}
        await inner(scope, receive, send)

    prepared.app = with_token
    print(f"http://localhost:{prepared.port}/mcp", flush=True)
    make_server(prepared).run(sockets=[prepared.sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
