"""`python -m offload` is the `offload` command."""

from offload.entry import run

run()
