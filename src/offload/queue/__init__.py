"""The durable queue: the Store interface, its SQLite implementation and the records."""

from offload.queue.models import FINAL_STATES, State, Task, TaskSpec
from offload.queue.store import Stats, Store

__all__ = ["FINAL_STATES", "State", "Stats", "Store", "Task", "TaskSpec"]
