"""Routing by host labels: which pending tasks no live supervisor can take, and why.

A task submitted with `on` labels (`submit --on gpu`) runs only on a supervisor that has
every one of them (`offload supervisor --labels gpu,linux`). When no live supervisor has
them, the task would wait in silence; every door shows the note `waiting` makes instead.
The rule is here once: the doors only render it.

Who counts as live: on a queue several hosts share, every member whose lease holds; on
one host's SQLite queue, the supervisor of this data dir — the labels it recorded when it
started (`announce_labels`), else the labels this data dir's settings give (which a
supervisor started on demand runs with).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from offload.config import Settings
from offload.errors import OffloadError
from offload.queue.models import State, Task
from offload.queue.store import Store

if TYPE_CHECKING:
    from offload.supervisor.liveness import Liveness

__all__ = [
    "LOCAL_MEMBER_PREFIX",
    "announce_labels",
    "covered",
    "live_label_sets",
    "local_labels",
    "waiting_note",
    "waiting_notes",
    "withdraw_labels",
]

LOCAL_MEMBER_PREFIX = "local-"  # the record a supervisor of a one-host queue leaves


def covered(run_on: Sequence[str], label_sets: Iterable[Sequence[str]]) -> bool:
    """True when one of the label sets holds every label in `run_on`."""
    needed = set(run_on)
    return any(needed <= set(labels) for labels in label_sets)


def waiting_note(run_on: Sequence[str]) -> str:
    """The one line a task no live supervisor can take shows, with the fix."""
    which = f"label {run_on[0]}" if len(run_on) == 1 else f"all of the labels {', '.join(run_on)}"
    return (
        f"waiting: no live supervisor has {which} — start one with "
        f"`offload supervisor --labels {','.join(run_on)}`"
    )


def live_label_sets(settings: Settings, store: Store) -> list[tuple[str, ...]]:
    """The labels of each supervisor that is live now and may claim this queue's tasks.

    Leases are judged by the queue's own clock, which every host stamps them by.
    """
    shared = store.as_shared()
    if shared is not None:
        now = shared.now_ms()
        return [m.labels for m in store.members() if m.alive_at(now)]
    return [local_labels(settings, store)]


def announce_labels(settings: Settings, store: Store) -> str | None:
    """Records the labels of the supervisor about to run in this process, on a queue only
    this host uses, so `show` and `supervisor status` tell them from another shell (on a
    shared queue the supervisor's membership carries them). Records whose process is gone
    are dropped. Returns the record's id, for `withdraw_labels` when the run ends.
    """
    if store.as_shared() is not None:
        return None
    import os
    import socket

    from offload.supervisor.liveness import process_start

    member_id = f"{LOCAL_MEMBER_PREFIX}{os.getpid()}"
    try:
        for member in store.members():
            if member.id.startswith(LOCAL_MEMBER_PREFIX) and process_start(member.pid) is None:
                store.retire_member(member.id)
        store.register_member(
            member_id,
            host=settings.host_name or socket.gethostname(),
            pid=os.getpid(),
            labels=settings.labels,
            capacity=settings.max_concurrent,
        )
    except OffloadError:  # only a note for readers: the supervisor runs without it
        return None
    return member_id


def withdraw_labels(store: Store, member_id: str | None) -> None:
    """Removes the record `announce_labels` left (it never claims a task); one left behind
    (a busy database at exit, a crash) is dropped by the next `announce_labels`."""
    if member_id is None:
        return
    try:
        store.retire_member(member_id)
    except OffloadError:
        pass


def local_labels(
    settings: Settings, store: Store, found: Liveness | None = None
) -> tuple[str, ...]:
    """The labels of this data dir's supervisor: its member record's, else the settings'.

    Args:
        found: Its liveness when the caller has read it already.
    """
    from offload.supervisor.liveness import supervisor_state

    found = found or supervisor_state(settings.home, store)
    if found.alive:
        mine = [m for m in store.members() if m.pid == found.pid]
        if mine:
            return mine[-1].labels
    return settings.labels


def waiting_notes(tasks: Iterable[Task], settings: Settings, store: Store) -> dict[str, str]:
    """The `waiting` note of each pending task whose labels no live supervisor has.

    Reads the members only when some task is pending with labels, so a page without
    such tasks costs nothing.
    """
    held = [t for t in tasks if t.state is State.PENDING and t.run_on]
    if not held:
        return {}
    label_sets = live_label_sets(settings, store)
    return {t.id: waiting_note(t.run_on) for t in held if not covered(t.run_on, label_sets)}
