"""`offload supervisor status`: who runs this queue, and with what.

On one host's SQLite queue that is this data dir's supervisor (alive, stopped or dead,
its labels and containment). On a queue several hosts share it is every member: host,
id, pid, labels, capacity, how long its lease has left (or since when it is lost) and
how many tasks it runs. Exit status 0 while someone runs the queue, 3 when nobody does.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from offload.clock import now_ms
from offload.config import Settings
from offload.queue.members import Member
from offload.queue.models import State
from offload.queue.store import Store

__all__ = ["EXIT_NOBODY", "lease_text", "show_status"]

EXIT_NOBODY = 3  # as `systemctl status` for a unit that is not running


def show_status(settings: Settings, store: Store, as_json: bool) -> int:
    """Prints the status and returns the exit code."""
    by_state = store.stats(now_ms(), days=1).counts  # one GROUP BY, however many tasks
    counts = {s.value: by_state.get(s.value, 0) for s in (State.PENDING, State.RUNNING)}
    shared = store.as_shared()
    if shared is not None:
        return _members(store, shared.now_ms(), counts, as_json)
    return _local(settings, store, counts, as_json)


def _local(settings: Settings, store: Store, counts: dict[str, int], as_json: bool) -> int:
    from offload.desk.routing import local_labels
    from offload.supervisor.containment import read_status
    from offload.supervisor.liveness import supervisor_state

    found = supervisor_state(settings.home, store)
    info = store.supervisor_info() or {}
    layers = read_status(settings.home) if found.alive else None
    labels = local_labels(settings, store, found)
    if as_json:
        _json(
            {
                "running": found.state == "running",
                "state": found.state,
                "pid": found.pid if found.alive else None,
                "heartbeat_ms": info.get("at"),
                **counts,
                "labels": list(labels),
                "containment": layers,
            }
        )
    elif found.alive:
        what = "running" if found.state == "running" else "stopped (SIGSTOP: it runs nothing)"
        sys.stdout.write(
            f"supervisor {what} (pid {found.pid}); {counts['running']} running, "
            f"{counts['pending']} pending\n"
        )
        if found.state == "stopped":
            sys.stdout.write(f"`kill -CONT {found.pid}` resumes it\n")
        sys.stdout.write(f"  labels: {', '.join(labels) or 'none'}\n")
        for name, state in (layers or {}).items():
            shown = "yes" if state is True else f"no ({state})"
            sys.stdout.write(f"  {name.replace('_', ' ')}: {shown}\n")
    else:
        dead = f" (pid {found.pid} died)" if found.state == "dead" else ""
        sys.stdout.write(f"no supervisor running for {settings.home}{dead}\n")
    return 0 if found.state == "running" else EXIT_NOBODY


def lease_text(member: Member, now: int) -> str:
    """How the member's lease stands, as a person reads it: `24s left`, `lost 3m ago`."""
    from offload.cli.render import duration

    if member.lost_at is not None:
        return f"lost {duration(max(0, now - member.lost_at) / 1000)} ago"
    if member.alive_at(now):
        return f"{duration((member.lease_expires_at - now) / 1000)} left"
    return f"expired {duration(max(0, now - member.lease_expires_at) / 1000)} ago"


def _members(store: Store, now: int, counts: dict[str, int], as_json: bool) -> int:
    """Every member, its lease judged at `now` by the queue's clock."""
    members = store.members()
    running = Counter(t.supervisor_id for t in store.running())
    live = [m for m in members if m.alive_at(now)]
    if as_json:
        _json(
            {
                **counts,
                "members": [
                    {
                        "id": m.id,
                        "host": m.host,
                        "pid": m.pid,
                        "labels": list(m.labels),
                        "capacity": m.capacity,
                        "alive": m.alive_at(now),
                        "lease_expires_at": m.lease_expires_at,
                        "lease_left_seconds": max(0.0, (m.lease_expires_at - now) / 1000),
                        "lost_at": m.lost_at,
                        "running": running.get(m.id, 0),
                    }
                    for m in members
                ],
            }
        )
    elif not members:
        sys.stdout.write(
            "no supervisor has joined this queue; start one on a host with `offload supervisor`\n"
        )
    else:
        hosts = len({m.host for m in live})
        sys.stdout.write(
            f"{len(live)} live supervisor(s) on {hosts} host(s); {counts['running']} running, "
            f"{counts['pending']} pending\n"
        )
        _table(
            ["HOST", "ID", "PID", "LABELS", "CAPACITY", "LEASE", "RUNNING"],
            [
                [
                    m.host,
                    m.id,
                    str(m.pid),
                    ",".join(m.labels) or "-",
                    str(m.capacity),
                    lease_text(m, now),
                    str(running.get(m.id, 0)),
                ]
                for m in members
            ],
        )
    return 0 if live else EXIT_NOBODY


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        sys.stdout.write("\n")


def _json(value: Any) -> None:
    from offload.cli.render import print_json

    print_json(value)
