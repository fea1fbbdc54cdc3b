"""`PostgresStore`: the Store on PostgreSQL, for several hosts sharing one queue.

Put together from the plumbing (db.py: pool, migrations, events, errors), the supervisor's
side (running.py: the claim and the records of runs, fenced by fencing.py), the task verbs
(tasks.py), members and leases (members.py) and shipped output (output.py), plus
LISTEN/NOTIFY waits (notify.py). `as_shared()` is this Store's several-hosts side.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from offload.errors import StoreError
from offload.queue.models import State, Task
from offload.queue.postgres.db import POOL_SIZE
from offload.queue.postgres.notify import Listener
from offload.queue.postgres.output import DEFAULT_MAX_OUTPUT_BYTES, PgOutput
from offload.queue.shared import SharedQueue
from offload.queue.store import Store

__all__ = ["PostgresStore"]


class PostgresStore(PgOutput, Store):
    """Store backed by a PostgreSQL database (`postgresql://user@host/db`).

    Raises:
        StoreError: at construction, when the server is unreachable, older than 13, or
            holds a queue of a newer schema; the message shows the URL without password.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], int] | None = None,
        pool_size: int = POOL_SIZE,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    ) -> None:
        super().__init__(url, clock=clock, pool_size=pool_size)
        self.max_output_bytes = max_output_bytes
        self._listener: Listener | None = None
        self._listener_lock = threading.Lock()

    def as_shared(self) -> SharedQueue:
        return self

    def now_ms(self) -> int:
        return self._clock()

    def listen(self) -> None:
        """Starts listening now, so no notification after this call is missed."""
        with self._listener_lock:
            if self._listener is None:
                self._listener = Listener(self.connect(autocommit=True), self.channel)

    def wait_for_event(self, cursor: int, timeout: float) -> bool:
        self.listen()
        if self.last_event_seq() > cursor:
            return True
        assert self._listener is not None
        self._listener.wait(timeout)
        return self.last_event_seq() > cursor

    def wake_fileno(self) -> int:
        self.listen()
        assert self._listener is not None
        return self._listener.fileno()

    def take_wakes(self) -> set[str]:
        with self._listener_lock:
            listener = self._listener
        if listener is None:
            return set()
        try:
            return listener.take()
        except StoreError:
            with self._listener_lock:  # a broken connection: the next listen() reconnects
                if self._listener is listener:
                    self._listener = None
            listener.close()
            raise

    def tasks_of_members(self, member_ids: Iterable[str], states: Iterable[State]) -> list[Task]:
        ids, names = list(member_ids), sorted(State(s).value for s in states)
        return self._read(
            lambda tx: self._tasks(
                tx,
                tx.rows(
                    "SELECT * FROM tasks WHERE supervisor_id = ANY(%s) AND state = ANY(%s) "
                    "ORDER BY seq",
                    (ids, names),
                ),
            )
        )

    def close(self) -> None:
        with self._listener_lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        super().close()
