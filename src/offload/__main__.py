"""`python -m offload` is the `offload` command."""

from offload.cli import run

run()
