"""The durable queue: the Store interface, its backends and the records.

`open_store` is the one place that chooses a backend: PostgreSQL when the settings name a
`database_url`, else the embedded SQLite file in the data dir. Backends are imported only
when chosen, so a CLI call never pays for a driver it does not use.
"""

from __future__ import annotations

from offload.queue.models import FINAL_STATES, State, Task, TaskSpec
from offload.queue.store import Stats, Store

TYPE_CHECKING = False  # typing costs ~3 ms of every CLI call; mypy reads this as True
if TYPE_CHECKING:
    from offload.config import Settings

__all__ = ["FINAL_STATES", "State", "Stats", "Store", "Task", "TaskSpec", "open_store"]


def open_store(settings: Settings) -> Store:
    """The Store the settings name.

    Raises:
        StoreError: The database cannot be opened or reached.
    """
    url = getattr(settings, "database_url", None)
    if url:
        from offload.queue.postgres import PostgresStore

        return PostgresStore(url)
    from offload.queue.sqlite import SqliteStore

    return SqliteStore(settings.db_path)
