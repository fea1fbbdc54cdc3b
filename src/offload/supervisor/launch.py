"""Front ends' side of the supervisor: wake it, or start one when none runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from offload.supervisor.wake import poke

__all__ = ["ensure_supervisor"]

# `sh -c '"$@" &'` forks the supervisor into the background and exits at once, so the
# supervisor is re-parented away from us: a long-lived front end (MCP, HTTP) that starts
# one never keeps it as a zombie after it idles out. It runs from / with -P, so no
# directory it was started from can shadow a module it imports.
_DETACH = ["/bin/sh", "-c", 'cd / && "$@" &', "offload-launch"]


def ensure_supervisor(home: Path) -> bool:
    """Wakes the supervisor of `home`, starting a detached one if none runs.

    Returns True if a new supervisor was started. Never waits for it: the submission is
    already stored, and the new supervisor claims it as soon as it is up. A race with
    another front end starting one at the same moment is settled by the lock file: the
    loser exits quietly.
    """
    if poke(home):
        return False
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    out = str(home / "supervisor.out")
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    env = {**os.environ, "OFFLOAD_HOME": str(home.resolve())}
    argv = [*_DETACH, sys.executable, "-P", "-m", "offload", "supervisor", "--detached"]
    pid = os.posix_spawn(_DETACH[0], argv, env, file_actions=actions, setsid=True)
    os.waitpid(pid, 0)  # the shell exits as soon as it has forked the supervisor
    return True
