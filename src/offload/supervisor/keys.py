"""Provider keys held in memory, never in an environment a task can read.

`/proc/<pid>/environ` shows the environment block a process was *started* with, whatever
it later does to `os.environ`. So keys must not be in the supervisor's or a worker's
starting environment at all: the on-demand launcher starts the supervisor without them and
hands them over a pipe (`OFFLOAD_KEYS_FD`); the supervisor hands each LLM or agent worker
its keys the same way. A supervisor started by hand (a unit, a shell with the keys
exported) takes them out of its environment and wipes them from its starting block in
memory. Supervisor and workers also make themselves non-dumpable, so no other process of
the same user can read their memory through /proc or ptrace.

Keys are every name `is_secret_name` matches (AWS_*, OPENAI_*, *API_KEY, ...) except
offload's own `OFFLOAD_*` settings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping

from offload.policies.environment import is_secret_name

__all__ = [
    "KEYS_FD_VAR",
    "is_key_name",
    "keys_pipe",
    "make_undumpable",
    "read_keys_fd",
    "take_keys",
]

KEYS_FD_VAR = "OFFLOAD_KEYS_FD"
_PR_SET_DUMPABLE = 4
_MAX_KEYS_BYTES = 1 << 20


def is_key_name(name: str) -> bool:
    """True for names that hold provider credentials or endpoints (not offload settings)."""
    return is_secret_name(name) and not name.upper().startswith("OFFLOAD_")


def make_undumpable() -> bool:
    """`prctl(PR_SET_DUMPABLE, 0)`: no core dumps, no /proc/PID/mem or ptrace by peers."""
    try:
        import ctypes  # lazily: front ends import this module only to start a supervisor

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False  # not Linux


def keys_pipe(keys: Mapping[str, str]) -> int:
    """A pipe's read end that yields `keys` as JSON and then EOF (inheritable)."""
    data = json.dumps(dict(keys)).encode()
    read_fd, write_fd = os.pipe()
    try:
        if len(data) > 65_536:  # more than a pipe buffer would block us: refuse
            raise ValueError("provider keys exceed 64 KiB")
        os.write(write_fd, data)
    finally:
        os.close(write_fd)
    return read_fd


def read_keys_fd(environ: MutableMapping[str, str]) -> dict[str, str]:
    """Reads and closes the keys pipe named by `OFFLOAD_KEYS_FD` (removing that name)."""
    value = environ.pop(KEYS_FD_VAR, None)
    if not value or not value.isdigit():
        return {}
    fd = int(value)
    chunks: list[bytes] = []
    try:
        while sum(len(c) for c in chunks) < _MAX_KEYS_BYTES:
            chunk = os.read(fd, 65_536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:
        return {}
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        found = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        return {}
    if not isinstance(found, dict):
        return {}
    return {str(k): str(v) for k, v in found.items() if is_key_name(str(k))}


def take_keys(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Moves every provider key out of the environment into the returned dict.

    Reads the launcher's pipe first, then the environment (which wins, as a person's own
    export would). The names are removed from `environ` (and so from libc's environment)
    and, when `environ` is the real one, their bytes are wiped from the starting block
    that /proc/self/environ shows.
    """
    real = environ is None
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    keys = read_keys_fd(env)
    for name in [n for n in env if is_key_name(n)]:
        keys[name] = env.pop(name)
    if real and keys:
        _wipe_initial_environ(set(keys))
    return keys


def _env_block() -> tuple[int, int] | None:
    """Start and end address of this process's starting environment block (Linux)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rsplit(b")", 1)[-1].split()
    try:
        # fields 50 and 51 of proc(5) are env_start and env_end; after "comm)" the first
        # field is the 3rd, so they sit at indexes 47 and 48
        return int(fields[47]), int(fields[48])
    except (IndexError, ValueError):
        return None


def _wipe_initial_environ(names: set[str]) -> None:
    """Overwrites `NAME=value` entries of the starting block with NUL bytes, in place.

    The block is ordinary writable memory at the top of our stack (setproctitle writes
    argv the same way); after `os.environ.pop` nothing refers to these strings any more.
    """
    import ctypes

    block = _env_block()
    if block is None:
        return
    start, end = block
    if not 0 < start < end or end - start > 16 * 1024 * 1024:
        return
    raw = ctypes.string_at(start, end - start)
    offset = 0
    for entry in raw.split(b"\0"):
        name = entry.split(b"=", 1)[0].decode(errors="replace")
        if entry and name in names:
            ctypes.memset(start + offset, 0, len(entry))
        offset += len(entry) + 1
