"""`python -m offload.mcp_server [--workspace DIR]`: the MCP server without the CLI in front.

`offload mcp` is the documented entry point; this one serves tests and debugging.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from offload.config import load_settings
from offload.errors import OffloadError
from offload.mcp_server import main


def _cli() -> int:
    parser = argparse.ArgumentParser(prog="python -m offload.mcp_server")
    parser.add_argument("--workspace", default=".", help="workspace directory (default: cwd)")
    args = parser.parse_args()
    try:
        return main(load_settings(), Path(args.workspace))
    except OffloadError as exc:
        sys.stderr.write(f"offload: {exc}\n")
        return 1


raise SystemExit(_cli())
