"""What an agent submits is shown to a person in a terminal: it must not drive it."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from offload.config import load_settings
from offload.desk import open_desk
from offload.queue.sqlite import SqliteStore

# OSC 52 sets the clipboard; ESC[2J clears the screen; U+202E turns the rest around.
HOSTILE = "build\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2Jhidden\u202eevil"


def _hostile_task(store: SqliteStore, workspace: Path) -> str:
    """Queued through an agent's door (the MCP server's desk), as a hostile agent would."""
    desk = open_desk(
        load_settings(),
        workspace=workspace,
        confined=True,
        store=store,
        agent=True,
        wake=lambda: None,
    )
    raw = {"command": "true", "name": HOSTILE, "env": {"X": HOSTILE}, "sandbox": True}
    return desk.submit([raw])[0].id


def _on_a_terminal(args: list[str], env: dict[str, str], cwd: Path) -> bytes:
    """The bytes `offload ARGS` writes to a real pseudo-terminal."""
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-P", "-m", "offload", *args],
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=follower,
            env={**env, "COLUMNS": "200"},
            cwd=cwd,
            timeout=60,
        )
        os.close(follower)
        follower = -1
        out = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the other side is closed and drained
                break
            if not chunk:
                break
            out += chunk
        assert done.returncode == 0, out
        return out
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)


def test_list_and_show_write_control_characters_out(
    store: SqliteStore, workspace: Path, offload_home: Path, cli: Callable[..., Any]
) -> None:
    task_id = _hostile_task(store, workspace)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFLOAD_")}
    env["OFFLOAD_HOME"] = str(offload_home)
    for args in (["list"], ["show", task_id]):
        shown = _on_a_terminal(args, env, workspace)
        assert b"\x1b]" not in shown and b"\x1b[2J" not in shown and b"\x07" not in shown
        assert "\u202e".encode() not in shown
        assert b"\\x1b]52" in shown  # written out, so the person sees what was there
    piped = cli("show", task_id).stdout
    assert "\x1b" not in piped and "X=build\\x1b]52" in piped
