"""The supervisor's side of the PostgreSQL Store: claiming tasks and recording their runs.

The claim is one `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT n) RETURNING`
so claimers on every host take disjoint tasks without waiting for each other. Group limits
cannot be judged from a count of running tasks alone: under READ COMMITTED two claimers
would each see the last free slot. So, in the same transaction and just before, a claimer
takes the row locks (SKIP LOCKED) of the groups that have pending tasks; the claim's
snapshot, taken after, counts every claim committed by the group's previous holder, and a
group another claimer holds is skipped this round. Writes that name a supervisor are fenced.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from offload.queue.models import State, Task
from offload.queue.postgres.db import Tx
from offload.queue.postgres.fencing import PgFencing

__all__ = ["PgRunning"]

_LOCK_GROUPS = """
SELECT g.grp FROM groups g
 WHERE EXISTS (SELECT 1 FROM tasks t WHERE t.grp = g.grp AND t.state = 'pending')
   FOR UPDATE SKIP LOCKED
"""

# Ready: every dependency completed, and every label the task asks for (`--on`) is one
# of the claiming supervisor's.
_READY = """NOT EXISTS (SELECT 1 FROM deps d JOIN tasks p ON p.id = d.depends_on
                        WHERE d.task_id = t.id AND p.state <> 'completed')
       AND (t.run_on IS NULL OR t.run_on::jsonb <@ %(labels)s::jsonb)"""

# `held` are the groups whose row locks this transaction holds; from each, only its first
# ready tasks, as many as it has free slots, may be taken (an index walk of `free` rows).
_CLAIM = f"""
WITH slots AS (
    SELECT h.grp,
           coalesce(l.lim, %(default_limit)s)
             - (SELECT count(*) FROM tasks r WHERE r.grp = h.grp AND r.state = 'running')
             AS free
      FROM unnest(%(held)s::text[]) AS h (grp)
      LEFT JOIN unnest(%(names)s::text[], %(limits)s::int[]) AS l (grp, lim) ON l.grp = h.grp
), eligible AS (
    SELECT e.id FROM slots s CROSS JOIN LATERAL (
        SELECT t.id FROM tasks t
         WHERE t.grp = s.grp AND t.state = 'pending' AND {_READY}
         ORDER BY t.priority, t.seq
         LIMIT greatest(s.free, 0)) AS e
)
UPDATE tasks
   SET state = 'running', started_at = %(now)s, updated_at = %(now)s,
       supervisor_id = %(sup)s, finished_at = NULL, progress = NULL,
       progress_message = NULL, cancel_requested = false
 WHERE id IN (
    SELECT t.id FROM tasks t
     WHERE t.state = 'pending'
       AND (t.grp IS NULL OR t.id IN (SELECT id FROM eligible))
       AND {_READY}
     ORDER BY t.priority, t.seq
     LIMIT %(n)s
       FOR UPDATE OF t SKIP LOCKED)
RETURNING *
"""


class PgRunning(PgFencing):
    """The Store verbs of the supervisor's side, on PostgreSQL."""

    def claim(
        self,
        n: int,
        supervisor_id: str,
        group_limits: Mapping[str, int],
        default_group_limit: int = 1,
        labels: Sequence[str] = (),
    ) -> list[Task]:
        if n <= 0:
            return []
        now = self._clock()
        with self._tx() as tx:
            self._fence_claim(tx, supervisor_id, now)
            held = [r["grp"] for r in tx.rows(_LOCK_GROUPS)]
            rows = tx.rows(
                _CLAIM,
                {
                    "default_limit": default_group_limit,
                    "held": held,
                    "names": list(group_limits),
                    "limits": [int(v) for v in group_limits.values()],
                    "now": now,
                    "sup": supervisor_id,
                    "n": n,
                    "labels": json.dumps(list(labels)),
                },
            )
            rows.sort(key=lambda r: (r["priority"], r["seq"]))
            for row in rows:
                tx.event(row["id"], "started", now, state="running", attempt=row["attempt"])
            return self._tasks(tx, rows)

    def mark_started(
        self,
        task_id: str,
        *,
        pid: int,
        pgid: int,
        proc_start: float | None,
        cgroup: str | None,
        log_path: str,
        containment: str | None = None,
        supervisor_id: str | None = None,
    ) -> None:
        now = self._clock()
        with self._tx(durable=False) as tx:
            self._fence(tx, task_id, supervisor_id, now)
            tx.execute(
                "UPDATE tasks SET pid = %s, pgid = %s, proc_start = %s, cgroup = %s, "
                "log_path = %s, containment = %s, updated_at = %s WHERE id = %s",
                (pid, pgid, proc_start, cgroup, log_path, containment, now, task_id),
            )

    def finish(
        self,
        task_id: str,
        state: State,
        *,
        exit_code: int | None = None,
        signal: int | None = None,
        error: str | None = None,
        supervisor_id: str | None = None,
    ) -> None:
        now = self._clock()
        with self._tx() as tx:
            self._fence(tx, task_id, supervisor_id, now)
            self._transition(
                tx,
                task_id,
                {State.RUNNING},
                "finish",
                "state = %(state)s, finished_at = %(now)s, updated_at = %(now)s, "
                "exit_code = %(code)s, signal = %(sig)s, error = %(error)s, "
                "cancel_requested = false",
                {
                    "state": state.value,
                    "now": now,
                    "code": exit_code,
                    "sig": signal,
                    "error": error,
                },
            )
            tx.event(task_id, "finished", now, state=state.value, exit_code=exit_code, error=error)
            if state is not State.COMPLETED:
                self._fail_dependents(tx, task_id, state, now)

    def _fail_dependents(self, tx: Tx, task_id: str, state: State, now: int) -> None:
        frontier = [(task_id, state.value)]
        while frontier:
            dep, dep_state = frontier.pop()
            error = f"dependency {dep[:12]} ended {dep_state}"
            rows = tx.rows(
                "UPDATE tasks SET state = 'failed', error = %(error)s, finished_at = %(now)s, "
                "updated_at = %(now)s WHERE state = 'pending' AND id IN "
                "(SELECT task_id FROM deps WHERE depends_on = %(dep)s) RETURNING id",
                {"error": error, "now": now, "dep": dep},
            )
            for row in rows:
                tx.event(row["id"], "finished", now, state="failed", error=error)
                frontier.append((row["id"], "failed"))

    def cancel_requests(self) -> list[Task]:
        return self._read(
            lambda tx: self._tasks(
                tx,
                tx.rows(
                    "SELECT * FROM tasks WHERE state = 'running' AND cancel_requested ORDER BY seq"
                ),
            )
        )

    def set_progress(
        self,
        task_id: str,
        fraction: float | None,
        message: str | None,
        *,
        supervisor_id: str | None = None,
    ) -> None:
        now = self._clock()
        with self._tx(durable=False) as tx:
            self._fence(tx, task_id, supervisor_id, now)
            row = tx.execute(
                "UPDATE tasks SET progress = %(f)s, progress_message = %(m)s, updated_at = %(now)s "
                "WHERE id = %(id)s AND state = 'running' AND "
                "(progress IS DISTINCT FROM %(f)s OR progress_message IS DISTINCT FROM %(m)s) "
                "RETURNING id",
                {"f": fraction, "m": message, "now": now, "id": task_id},
            )
            if row is not None:
                tx.event(task_id, "progress", now, fraction=fraction, message=message)

    def record_usage(
        self,
        task_id: str,
        *,
        tokens_in: int,
        tokens_out: int,
        cost_usd: float | None,
        model_used: str,
        tokens_cached: int = 0,
    ) -> None:
        # Not fenced: the money was spent whoever reports it, so the bill stays complete.
        now = self._clock()
        with self._tx() as tx:
            tx.execute(
                "UPDATE tasks SET tokens_in = coalesce(tokens_in, 0) + %(tin)s, "
                "tokens_out = coalesce(tokens_out, 0) + %(tout)s, "
                "tokens_cached = coalesce(tokens_cached, 0) + %(tcached)s, "
                "cost_usd = CASE WHEN %(cost)s::double precision IS NULL THEN cost_usd "
                "ELSE coalesce(cost_usd, 0) + %(cost)s END, "
                "model_used = %(model)s, updated_at = %(now)s WHERE id = %(id)s",
                {
                    "tin": tokens_in,
                    "tout": tokens_out,
                    "tcached": tokens_cached,
                    "cost": cost_usd,
                    "model": model_used,
                    "now": now,
                    "id": task_id,
                },
            )
            tx.event(
                task_id,
                "usage",
                now,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                tokens_cached=tokens_cached,
                cost_usd=cost_usd,
                model=model_used,
            )

    def record_event(self, task_id: str, kind: str, **detail: Any) -> None:
        with self._tx() as tx:
            tx.event(task_id, kind, self._clock(), **detail)

    def record_result(
        self,
        task_id: str,
        *,
        result: str | None = None,
        files_written: Sequence[str] = (),
        error: str | None = None,
        supervisor_id: str | None = None,
    ) -> None:
        now = self._clock()
        with self._tx() as tx:
            self._fence(tx, task_id, supervisor_id, now)
            tx.execute(
                "UPDATE tasks SET result = %s, files_written = %s, error = %s, updated_at = %s "
                "WHERE id = %s",
                (result, json.dumps(list(files_written)), error, now, task_id),
            )

    def heartbeat(self, supervisor_id: str, pid: int) -> None:
        value = json.dumps({"id": supervisor_id, "pid": pid, "at": self._clock()})
        with self._tx() as tx:
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('supervisor', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (value,),
            )

    def supervisor_info(self) -> dict[str, str] | None:
        row = self._read(lambda tx: tx.execute("SELECT value FROM meta WHERE key = 'supervisor'"))
        return None if row is None else dict(json.loads(row["value"]))
