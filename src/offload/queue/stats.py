"""Read-only aggregate queries behind `offload stats` and `queue_stats`."""

from __future__ import annotations

import sqlite3
import time

from offload.queue.store import DayCost, Stats

__all__ = ["read_stats"]

_DAY_MS = 86_400_000


def _day(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))


def read_stats(db: sqlite3.Connection, now_ms: int, days: int) -> Stats:
    """Counts by state, token totals, and cost per UTC day (by model and type) for `days` days."""
    counts = {
        row[0]: row[1] for row in db.execute("SELECT state, count(*) FROM tasks GROUP BY state")
    }
    totals = db.execute(
        "SELECT coalesce(sum(cost_usd), 0), coalesce(sum(tokens_in), 0), "
        "coalesce(sum(tokens_out), 0) FROM tasks"
    ).fetchone()
    today_start = now_ms - now_ms % _DAY_MS
    since = today_start - (days - 1) * _DAY_MS
    per_day: dict[str, DayCost] = {}
    for i in range(days):
        key = _day(since + i * _DAY_MS)
        per_day[key] = DayCost(day=key, finished=0, cost_usd=0.0)
    rows = db.execute(
        "SELECT finished_at / :day AS d, coalesce(model_used, ''), type, count(*), "
        "coalesce(sum(cost_usd), 0) FROM tasks WHERE finished_at >= :since "
        "GROUP BY d, model_used, type",
        {"day": _DAY_MS, "since": since},
    )
    for day_index, model, task_type, n, cost in rows:
        key = _day(day_index * _DAY_MS)
        old = per_day.get(key) or DayCost(day=key, finished=0, cost_usd=0.0)
        by_model = dict(old.by_model)
        by_type = dict(old.by_type)
        if cost:
            by_model[model or "unknown"] = by_model.get(model or "unknown", 0.0) + cost
            by_type[task_type] = by_type.get(task_type, 0.0) + cost
        per_day[key] = DayCost(key, old.finished + n, old.cost_usd + cost, by_model, by_type)
    today = per_day.get(_day(today_start))
    return Stats(
        counts=counts,
        total=sum(counts.values()),
        cost_today_usd=today.cost_usd if today else 0.0,
        cost_total_usd=float(totals[0]),
        tokens_in=int(totals[1]),
        tokens_out=int(totals[2]),
        days=list(per_day.values()),
    )
