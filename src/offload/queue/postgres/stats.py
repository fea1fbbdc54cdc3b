"""Read-only aggregate queries behind `offload stats` on PostgreSQL (as queue/stats.py)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from offload.queue.models import FINAL_STATES
from offload.queue.store import DayCost, HostFigures, Stats

if TYPE_CHECKING:
    from offload.queue.postgres.db import Tx

__all__ = ["read_stats"]

_DAY_MS = 86_400_000


def _day(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))


def read_stats(tx: Tx, now_ms: int, days: int) -> Stats:
    """Counts by state, token totals, and cost per UTC day (by model and type) for `days` days."""
    counts = {
        r["state"]: int(r["n"])
        for r in tx.rows("SELECT state, count(*) AS n FROM tasks GROUP BY state")
    }
    totals = tx.execute(
        "SELECT coalesce(sum(cost_usd), 0) AS cost, coalesce(sum(tokens_in), 0) AS tin, "
        "coalesce(sum(tokens_out), 0) AS tout FROM tasks"
    ) or {"cost": 0, "tin": 0, "tout": 0}
    today_start = now_ms - now_ms % _DAY_MS
    since = today_start - (days - 1) * _DAY_MS
    per_day = {
        _day(since + i * _DAY_MS): DayCost(day=_day(since + i * _DAY_MS), finished=0, cost_usd=0.0)
        for i in range(days)
    }
    rows = tx.rows(
        "SELECT finished_at / %(day)s AS d, coalesce(model_used, '') AS model, type, "
        "count(*) AS n, coalesce(sum(cost_usd), 0) AS cost FROM tasks "
        "WHERE finished_at >= %(since)s GROUP BY d, model_used, type",
        {"day": _DAY_MS, "since": since},
    )
    for row in rows:
        key = _day(int(row["d"]) * _DAY_MS)
        cost = float(row["cost"])
        old = per_day.get(key) or DayCost(day=key, finished=0, cost_usd=0.0)
        by_model = dict(old.by_model)
        by_type = dict(old.by_type)
        if cost:
            model = row["model"] or "unknown"
            by_model[model] = by_model.get(model, 0.0) + cost
            by_type[row["type"]] = by_type.get(row["type"], 0.0) + cost
        per_day[key] = DayCost(
            key, old.finished + int(row["n"]), old.cost_usd + cost, by_model, by_type
        )
    today = per_day.get(_day(today_start))
    return Stats(
        counts=counts,
        total=sum(counts.values()),
        cost_today_usd=today.cost_usd if today else 0.0,
        cost_total_usd=float(totals["cost"]),
        tokens_in=int(totals["tin"]),
        tokens_out=int(totals["tout"]),
        days=list(per_day.values()),
        hosts=_hosts(tx),
    )


def _hosts(tx: Tx) -> list[HostFigures]:
    """Running and finished tasks per host: each task's supervisor is a member of a host."""
    rows = tx.rows(
        "SELECT m.host, count(*) FILTER (WHERE t.state = 'running') AS running, "
        "count(*) FILTER (WHERE t.state = ANY(%(final)s)) AS finished "
        "FROM tasks t LEFT JOIN members m ON m.id = t.supervisor_id "
        "WHERE t.supervisor_id IS NOT NULL GROUP BY m.host",
        {"final": sorted(s.value for s in FINAL_STATES)},
    )
    found = [HostFigures(r["host"], int(r["running"]), int(r["finished"])) for r in rows]
    return sorted(found, key=lambda h: (h.host is None, -h.running, -h.finished, h.host or ""))
