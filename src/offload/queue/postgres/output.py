"""Task output shipped into PostgreSQL in chunks, so any host can read any task's output.

The executing host appends chunks at the byte offsets of its local log (which stays the
source there); readers ask for a byte range or the tail. Each task keeps at most
`max_output_bytes`: older chunks are dropped, so the tail, which people read, survives.
"""

from __future__ import annotations

from dataclasses import dataclass

from offload.queue.postgres.db import Tx
from offload.queue.postgres.members import PgMembers

__all__ = ["DEFAULT_MAX_OUTPUT_BYTES", "OutputSlice", "PgOutput"]

DEFAULT_MAX_OUTPUT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class OutputSlice:
    """Bytes `start`..`start + len(data)` of a task's output; `size` is all it ever wrote."""

    start: int
    data: bytes
    size: int


class PgOutput(PgMembers):
    """Appending and reading the shipped output of tasks."""

    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES

    def append_output(
        self, task_id: str, offset: int, data: bytes, *, supervisor_id: str | None = None
    ) -> int:
        """Stores `data` found at byte `offset` of the task's log; returns the new size.

        Idempotent: a chunk sent twice (after a reconnect) is kept once. With
        `supervisor_id` the write is fenced like every other (LeaseLost).
        """
        cap = self.max_output_bytes
        if len(data) > cap:  # keep only the tail of an oversized chunk
            offset, data = offset + len(data) - cap, data[-cap:]
        with self._tx(durable=False) as tx:
            if supervisor_id is not None:
                self._fence(tx, task_id, supervisor_id, self._clock())
            if data:
                tx.execute(
                    'INSERT INTO output_chunks (task_id, "offset", data) VALUES (%s, %s, %s) '
                    "ON CONFLICT DO NOTHING",
                    (task_id, offset, data),
                )
            size = self._size(tx, task_id)
            tx.execute(
                'DELETE FROM output_chunks WHERE task_id = %s AND "offset" + length(data) <= %s',
                (task_id, size - cap),
            )
            return size

    def output_size(self, task_id: str) -> int:
        """Bytes the task's output has reached (dropped older chunks included)."""
        return self._read(lambda tx: self._size(tx, task_id))

    def read_output(self, task_id: str, start: int = 0, limit: int | None = None) -> OutputSlice:
        """Up to `limit` bytes from byte `start` (moved forward past dropped chunks)."""
        end = None if limit is None else start + max(0, limit)

        def fetch(tx: Tx) -> OutputSlice:
            rows = tx.rows(
                'SELECT "offset", data FROM output_chunks WHERE task_id = %(id)s '
                'AND "offset" + length(data) > %(start)s '
                'AND (%(end)s::bigint IS NULL OR "offset" < %(end)s) ORDER BY "offset"',
                {"id": task_id, "start": start, "end": end},
            )
            size = self._size(tx, task_id)
            if not rows:
                return OutputSlice(start=min(start, size), data=b"", size=size)
            first = max(start, rows[0]["offset"])
            buf = bytearray()
            for row in rows:
                if row["offset"] > first + len(buf):
                    break  # a gap: return what is contiguous
                buf += bytes(row["data"])[first + len(buf) - row["offset"] :]
            data = bytes(buf if end is None else buf[: max(0, end - first)])
            return OutputSlice(start=first, data=data, size=size)

        return self._read(fetch)

    def output_tail(self, task_id: str, nbytes: int) -> bytes:
        """The last `nbytes` bytes of the task's output (fewer if it wrote or kept fewer)."""
        size = self.output_size(task_id)
        return self.read_output(task_id, max(0, size - max(0, nbytes))).data

    def _size(self, tx: Tx, task_id: str) -> int:
        rows = tx.rows(
            'SELECT coalesce(max("offset" + length(data)), 0) AS size FROM output_chunks '
            "WHERE task_id = %(id)s",
            {"id": task_id},
        )
        return int(rows[0]["size"])
