"""The optional daily LLM budget (`max_daily_cost_usd`), checked before a task calls out."""

from __future__ import annotations

from offload.errors import OffloadError
from offload.queue.store import Store

__all__ = ["BudgetExceeded", "check_budget", "spent_today"]


class BudgetExceeded(OffloadError):
    """Today's LLM spending has reached `max_daily_cost_usd`."""


def spent_today(store: Store, task_id: str, now_ms: int) -> float:
    """USD spent today (UTC): tasks finished today plus what running ones have spent so far."""
    finished = store.stats(now_ms, days=1).cost_today_usd
    running = sum(t.cost_usd or 0.0 for t in store.running() if t.id != task_id)
    return finished + running


def check_budget(store: Store, task_id: str, limit: float | None, now_ms: int) -> None:
    """Refuses to start when the day's spending has reached `limit` (None: no budget).

    Raises:
        BudgetExceeded: with what was spent and how to go on.
    """
    if limit is None:
        return
    spent = spent_today(store, task_id, now_ms)
    if spent >= limit:
        raise BudgetExceeded(
            f"daily LLM budget reached: ${spent:.4f} spent today (UTC), max_daily_cost_usd is "
            f"${limit:.2f}; raise it or retry the task after midnight UTC"
        )
