"""The PostgreSQL backend of the queue (several hosts, one database)."""

from offload.queue.postgres.store import PostgresStore
from offload.queue.postgres.url import redact

__all__ = ["PostgresStore", "redact"]
