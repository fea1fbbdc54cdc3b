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
# The supervisor's provider keys arrive on this fd, never in its environment: /proc/PID/
# environ shows the environment a process started with, readable by its tasks.
_KEYS_FD = 3


def ensure_supervisor(home: Path) -> bool:
    """Wakes the supervisor of `home`, starting a detached one if none runs.

    Returns True if a new supervisor was started. Never waits for it: the submission is
    already stored, and the new supervisor claims it as soon as it is up. A race with
    another front end starting one at the same moment is settled by the lock file: the
    loser exits quietly.
    """
    if poke(home):
        return False
    from offload.supervisor.keys import KEYS_FD_VAR, is_key_name, keys_pipe  # only to start one

    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    out = str(home / "supervisor.out")
    keys = {k: v for k, v in os.environ.items() if is_key_name(k)}
    env = {k: v for k, v in os.environ.items() if k not in keys}
    env["OFFLOAD_HOME"] = str(home.resolve())
    keys_fd = keys_pipe(keys) if keys else None
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    if keys_fd is not None:
        actions.append((os.POSIX_SPAWN_DUP2, keys_fd, _KEYS_FD))
        env[KEYS_FD_VAR] = str(_KEYS_FD)
    argv = [*_DETACH, sys.executable, "-P", "-m", "offload", "supervisor", "--detached"]
    try:
        pid = os.posix_spawn(_DETACH[0], argv, env, file_actions=actions, setsid=True)
    finally:
        if keys_fd is not None:
            os.close(keys_fd)
    os.waitpid(pid, 0)  # the shell exits as soon as it has forked the supervisor
    return True
