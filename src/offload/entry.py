"""The `offload` command's entry point: the `offload` script and `python -m offload`.

It pauses the cyclic garbage collector before the CLI is even imported (importing it is
most of what a quick command allocates; see `offload.collector`), then runs the CLI.
"""

from __future__ import annotations

from offload.collector import pause

__all__ = ["run"]


def run() -> None:
    """Runs the `offload` command (`offload.cli.run`) with the collector paused."""
    pause()
    from offload.cli import run as run_cli

    run_cli()
