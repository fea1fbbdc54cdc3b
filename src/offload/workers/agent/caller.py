"""The agent's provider calls: routed like other LLM tasks, retried, billed per turn.

The route is planned once per task. For `auto`, an error that allows fallback (access,
throttling or an outage that outlasted the retries) moves the rest of the conversation to
the fallback route; the conversation is provider-neutral, so it carries over.
"""

from __future__ import annotations

from collections.abc import Sequence

from offload.queue.models import Task
from offload.workers.live import LiveText
from offload.workers.llm import WorkerContext, bill_call
from offload.workers.providers import Message, ProviderError, Reply, Tool, call_options
from offload.workers.providers.pricing import PriceTable, load_prices
from offload.workers.providers.retry import RetryPolicy, call_with_retries
from offload.workers.providers.routing import Route, plan_route, should_fall_back

__all__ = ["Caller"]


class Caller:
    """Sends the conversation to the current route; see the module docstring."""

    def __init__(
        self, task: Task, ctx: WorkerContext, routes: list[Route], prices: PriceTable
    ) -> None:
        self.task, self.ctx, self.routes, self.prices = task, ctx, routes, prices
        self.policy = RetryPolicy.from_settings(ctx.settings)
        self.first_error: ProviderError | None = None

    @classmethod
    def for_task(cls, task: Task, ctx: WorkerContext) -> Caller:
        """Plans the task's route (and fallback) and loads the price table.

        Raises:
            InvalidInput, ConfigError: for a model name or routing table that cannot work.
        """
        settings = ctx.settings
        plan = plan_route(task.model, task.large_context, settings, ctx.has_bedrock_credentials)
        ctx.say(f"route: {plan.primary} ({plan.reason})")
        routes = [plan.primary, *([plan.fallback] if plan.fallback else [])]
        return cls(task, ctx, routes, load_prices(settings.prices))

    @property
    def route(self) -> Route:
        """The route the next turn goes to."""
        return self.routes[0]

    def converse(
        self, system: str, messages: Sequence[Message], tools: Sequence[Tool], max_tokens: int
    ) -> Reply:
        """One turn: the current route with retries, then the fallback if allowed.

        Raises:
            ProviderError: the last error, naming the first one after a fallback.
        """
        while True:
            try:
                return self._attempt(self.route, system, messages, tools, max_tokens)
            except ProviderError as exc:
                if len(self.routes) > 1 and should_fall_back(exc):
                    self.ctx.say(f"{exc}; falling back to {self.routes[1]}")
                    self.first_error = exc
                    self.routes = self.routes[1:]
                    continue
                if self.first_error is not None:
                    raise exc.after_fallback(self.first_error) from None
                raise

    def _attempt(
        self,
        route: Route,
        system: str,
        messages: Sequence[Message],
        tools: Sequence[Tool],
        max_tokens: int,
    ) -> Reply:
        provider = self.ctx.provider(route.provider)
        live = LiveText(self.ctx.say)
        options = call_options(
            self.ctx.settings, large_context=self.task.large_context, on_text=live
        )

        def attempt() -> Reply:
            try:
                return provider.converse(route.model, system, messages, tools, max_tokens, options)
            finally:
                live.flush()

        return call_with_retries(
            attempt, self.policy, on_retry=self._on_retry, sleep=self.ctx.sleep
        )

    def _on_retry(self, error: ProviderError, attempt: int, seconds: float) -> None:
        self.ctx.say(
            f"{error}; retrying in {seconds:.2f} s "
            f"(attempt {attempt + 1}, llm_max_attempts is {self.policy.max_attempts})"
        )

    def bill(self, reply: Reply) -> float | None:
        """Records the turn's tokens and cost on the task; returns the cost (None: unknown)."""
        return bill_call(
            self.ctx,
            self.task.id,
            self.prices,
            reply.provider,
            reply.model,
            reply.usage,
            reply.response_model,
        )
