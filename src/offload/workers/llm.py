"""Running one LLM task: prepare the prompt, call the routed provider, honour the contract.

Steps (each a progress line in the task log, which the supervisor turns into progress):
1. read the steering rules and context files, check the daily budget;
2. call the model (retries, fallback, one `record_usage` per successful call);
3. check the answer against the task type's contract and write the files, all or nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from offload.config import Settings, with_task_settings
from offload.errors import OffloadError
from offload.policies.paths import resolve_inside
from offload.queue.models import Task
from offload.queue.store import Store
from offload.workers.answers import AnswerRejected, check_promises, file_content, parse_files
from offload.workers.budget import check_budget
from offload.workers.context import ContextFile, display_path, read_context, read_one
from offload.workers.files import FileWrite, Snapshot, write_files
from offload.workers.live import LiveText
from offload.workers.prompts import build_prompt
from offload.workers.providers import (
    Completion,
    Prompt,
    Provider,
    ProviderError,
    Usage,
    call_options,
    make_provider,
)
from offload.workers.providers.pricing import PriceTable, load_prices
from offload.workers.providers.retry import RetryPolicy, call_with_retries
from offload.workers.providers.routing import Plan, Route, plan_route, should_fall_back
from offload.workers.redact import scrub
from offload.workers.steering import Rules, load_rules
from offload.workers.tasktypes import Contract, TaskType, task_type

__all__ = ["Outcome", "WorkerContext", "bill_call", "run_llm_task", "task_roots"]

STEPS = 3
ANSWER_LOG_CHARS = 4000


@dataclass(frozen=True)
class Outcome:
    """What a task produced: its text result and the files it wrote."""

    result: str | None
    files_written: list[str] = field(default_factory=list)


@dataclass
class WorkerContext:
    """Everything a task run needs from outside, passed in so tests can drive it."""

    settings: Settings
    store: Store
    environ: Mapping[str, str]
    out: TextIO
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000)
    sleep: Callable[[float], None] = time.sleep
    provider_factory: Callable[[str], Provider] | None = None
    bedrock_available: Callable[[], bool] | None = None
    _providers: dict[str, Provider] = field(default_factory=dict)

    def say(self, line: str) -> None:
        """Writes one (scrubbed) line to the task log."""
        print(scrub(line), file=self.out, flush=True)

    def provider(self, name: str) -> Provider:
        """The client of provider `name`, built once."""
        if name not in self._providers:
            factory = self.provider_factory or (
                lambda n: make_provider(n, self.settings, self.environ)
            )
            self._providers[name] = factory(name)
        return self._providers[name]

    def close(self) -> None:
        """Closes every provider built so far (their connection pools); safe to repeat."""
        providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            provider.close()

    def __enter__(self) -> WorkerContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def has_bedrock_credentials(self) -> bool:
        """Whether AWS credentials (or a Bedrock API key) exist, for `auto` routing."""
        if self.bedrock_available is not None:
            return self.bedrock_available()
        from offload.workers.providers.bedrock import bedrock_credentials_available

        return bedrock_credentials_available(self.environ)


def task_roots(task: Task, settings: Settings) -> list[Path]:
    """The directories a task's files must stay inside: its workspace and configured roots."""
    extra = [Path(root).expanduser().resolve() for root in settings.workspace_roots]
    return [Path(task.workspace).resolve(), *extra]


def _kb(size: int) -> str:
    return f"{size / 1024:.1f} KB"


@dataclass
class _Prepared:
    kind: TaskType
    prompt: Prompt
    output: Path | None
    workspace: Path
    roots: list[Path]
    forbidden: list[Path]  # offload's data dir: never read or written, even inside a root
    snapshot: Snapshot  # the files as they were before the call: edits made meanwhile win


def _prepare(task: Task, ctx: WorkerContext) -> _Prepared:
    settings = ctx.settings
    kind = task_type(task.type)
    workspace = Path(task.workspace).resolve()
    roots = task_roots(task, settings)
    rules = load_rules(workspace, roots, settings.rules_files, settings.max_rules_bytes, ctx.say)
    forbidden = [settings.home]
    output = _output_path(task, kind, roots, workspace, forbidden)
    current = _current_output(task, kind, output, roots, workspace, settings)
    context = read_context(
        task.context_files,
        roots,
        workspace,
        per_file_bytes=settings.max_context_file_bytes,
        total_bytes=settings.max_context_total_bytes,
        already_used=current.size if current else 0,
        forbidden=forbidden,
    )
    ctx.say(f"[1/{STEPS}] preparing: {_describe(rules, context, workspace)}")
    check_budget(ctx.store, task.id, settings.max_daily_cost_usd, ctx.now_ms())
    seen = [c.path for c in context] + ([output] if output is not None else [])
    snapshot = Snapshot(seen)
    prompt = build_prompt(
        kind,
        task.spec or "",
        rules=rules,
        context=context,
        output_display=display_path(output, workspace) if output else None,
        current_output=current,
        max_tokens=settings.max_output_tokens,
    )
    return _Prepared(kind, prompt, output, workspace, roots, forbidden, snapshot)


def _output_path(
    task: Task, kind: TaskType, roots: list[Path], workspace: Path, forbidden: list[Path]
) -> Path | None:
    if not task.output_path:
        if kind.needs_output:
            raise AnswerRejected(f"a {kind.name} task needs output_path: the file it writes")
        return None
    base = Path(task.cwd or workspace)
    return resolve_inside(task.output_path, roots, base=base, forbidden=forbidden)


def _current_output(
    task: Task,
    kind: TaskType,
    output: Path | None,
    roots: list[Path],
    workspace: Path,
    settings: Settings,
) -> ContextFile | None:
    """The output file's present contents, so the model can extend rather than clobber it."""
    if output is None or kind.contract is not Contract.FILE or not output.is_file():
        return None
    if str(output) in task.context_files:
        return None
    return read_one(str(output), roots, workspace, settings.max_context_file_bytes, "output file")


def _describe(rules: Rules | None, context: list[ContextFile], workspace: Path) -> str:
    if rules:
        used = "rules from " + ", ".join(display_path(p, workspace) for p in rules.sources)
    else:
        used = "no rules file"
    size = sum(c.size for c in context)
    return f"{used}; {len(context)} context file(s), {_kb(size)}"


class _Caller:
    """Runs a routing plan: retries per route, fallback between routes, billing per call."""

    def __init__(self, task: Task, ctx: WorkerContext, prices: PriceTable) -> None:
        self.task, self.ctx, self.prices = task, ctx, prices
        self.policy = RetryPolicy.from_settings(ctx.settings)

    def run(self, plan: Plan, prompt: Prompt) -> Completion:
        routes = [plan.primary, *([plan.fallback] if plan.fallback else [])]
        first_error: ProviderError | None = None
        for index, route in enumerate(routes):
            self.ctx.say(f"[2/{STEPS}] calling {route.provider} {route.model} ({plan.reason})")
            try:
                return self._call(route, prompt)
            except ProviderError as exc:
                if index + 1 < len(routes) and should_fall_back(exc):
                    self.ctx.say(f"{exc}; falling back to {routes[index + 1]}")
                    first_error = exc
                    continue
                if first_error is not None:
                    raise exc.after_fallback(first_error) from None
                raise
        raise AssertionError("unreachable: a plan has at least one route")

    def _call(self, route: Route, prompt: Prompt) -> Completion:
        provider = self.ctx.provider(route.provider)

        def on_retry(error: ProviderError, attempt: int, seconds: float) -> None:
            self.ctx.say(
                f"{error}; retrying in {seconds:.2f} s "
                f"(attempt {attempt + 1}, llm_max_attempts is {self.policy.max_attempts})"
            )

        live = LiveText(self.ctx.say)
        options = call_options(
            self.ctx.settings, large_context=self.task.large_context, on_text=live
        )

        def attempt() -> Completion:
            try:
                return provider.complete(route.model, prompt, options)
            finally:
                live.flush()

        completion = call_with_retries(
            attempt, self.policy, on_retry=on_retry, sleep=self.ctx.sleep
        )
        bill_call(
            self.ctx,
            self.task.id,
            self.prices,
            route.provider,
            route.model,
            completion.usage,
            completion.response_model,
        )
        return completion


def _packaged_prices_apply(ctx: WorkerContext, provider: str) -> bool:
    """False for an OpenAI-compatible server that is not OpenAI's own: the packaged table
    holds OpenAI's prices, not a local or third-party server's."""
    if ctx.settings.openai_base_url_is_openai:
        return True
    client = ctx._providers.get(provider)
    return bool(getattr(client, "official", True))


def _model_used(model: str, response_model: str | None) -> str:
    if response_model and not response_model.startswith(model):
        return f"{model} (answered by {response_model})"
    return model


def bill_call(
    ctx: WorkerContext,
    task_id: str,
    prices: PriceTable,
    provider: str,
    model: str,
    usage: Usage,
    response_model: str | None,
) -> float | None:
    """Records one provider call's tokens and cost on the task and says so in its log.

    Every LLM and agent call is billed here, once, so cached tokens and the price source
    are recorded the same way for both. A model without a price is charged a conservative
    estimate (`unpriced_*_usd_per_mtok`, by default the dearest mainstream model's
    prices), so a daily budget still stops it; its `model_used` says `[unpriced,
    estimated]`, which `offload stats` shows next to the cost. Returns the cost.
    """
    packaged = _packaged_prices_apply(ctx, provider)
    cost = prices.cost(provider, model, usage, response_model, packaged=packaged)
    used = _model_used(model, response_model)
    settings = ctx.settings
    if usage.reported_cost_usd is not None:
        shown = f"${cost:.6f} (reported by the provider)"
    elif cost is None:
        rate_in, rate_out = (
            settings.unpriced_input_usd_per_mtok,
            settings.unpriced_output_usd_per_mtok,
        )
        cost = (usage.tokens_in * rate_in + usage.tokens_out * rate_out) / 1_000_000
        used += " [unpriced, estimated]"
        shown = (
            f"~${cost:.6f} estimated (no price for this model; charged at ${rate_in:g}/"
            f"${rate_out:g} per 1M tokens against the budget; add its price under [prices])"
        )
    else:
        shown = f"${cost:.6f} (prices as of {prices.as_of})"
    ctx.store.record_usage(
        task_id,
        tokens_in=usage.tokens_in,
        tokens_out=usage.tokens_out,
        cost_usd=cost,
        model_used=used,
        tokens_cached=usage.cached_in,
    )
    ctx.say(
        f"usage: {usage.tokens_in} tokens in ({usage.cached_in} cached, "
        f"{usage.cache_write_in} written to the cache), {usage.tokens_out} out; cost {shown}"
    )
    return cost


def _check_answer(completion: Completion, settings: Settings) -> str:
    if completion.refusal:
        raise AnswerRejected(f"the model declined the task: {completion.refusal}")
    if completion.failure:
        raise AnswerRejected(completion.failure)
    if completion.truncated:
        raise AnswerRejected(
            f"the answer was cut off at max_output_tokens ({settings.max_output_tokens}); "
            "nothing was written: raise max_output_tokens or split the task"
        )
    if not completion.text.strip():
        raise AnswerRejected("the model returned an empty answer; nothing was written")
    return completion.text


def _deliver(task: Task, prep: _Prepared, text: str, ctx: WorkerContext) -> Outcome:
    """Applies the output contract: writes the file(s) or keeps the text."""
    kind = prep.kind
    if kind.contract is Contract.TEXT:
        written = []
        if prep.output is not None:
            ctx.say(f"[3/{STEPS}] writing {display_path(prep.output, prep.workspace)}")
            content = text if text.endswith("\n") else text + "\n"
            written = write_files(
                [FileWrite(str(prep.output), content)],
                prep.roots,
                prep.workspace,
                forbidden=prep.forbidden,
                snapshot=prep.snapshot,
            )
        else:
            ctx.say(f"[3/{STEPS}] storing the answer as the task's result")
        return Outcome(text, [str(p) for p in written])
    if kind.contract is Contract.FILE:
        assert prep.output is not None
        writes = [FileWrite(str(prep.output), file_content(text))]
        summary = ""
    else:
        answer = parse_files(text)
        writes, summary = answer.files, answer.summary
    shown_names = [
        display_path(prep.output, prep.workspace)
        if kind.contract is Contract.FILE and prep.output
        else w.path
        for w in writes
    ]
    check_promises([FileWrite(n, w.content) for n, w in zip(shown_names, writes, strict=True)])
    ctx.say(f"[3/{STEPS}] writing {len(writes)} file(s): {', '.join(shown_names)}")
    written = write_files(
        writes, prep.roots, prep.workspace, forbidden=prep.forbidden, snapshot=prep.snapshot
    )
    shown = ", ".join(display_path(p, prep.workspace) for p in written)
    result = f"wrote {shown}" + (f"\n\n{summary}" if summary else "")
    return Outcome(result, [str(p) for p in written])


def run_llm_task(task: Task, ctx: WorkerContext) -> Outcome:
    """Runs one LLM task to its outcome.

    Raises:
        OffloadError: any reason the task failed (budget, context rule, provider error,
            answer that breaks the contract, path escape); nothing was written.
    """
    ctx.settings = with_task_settings(ctx.settings, task.env)
    prep = _prepare(task, ctx)
    plan = plan_route(task.model, task.large_context, ctx.settings, ctx.has_bedrock_credentials)
    prices = load_prices(ctx.settings.prices)
    completion = _Caller(task, ctx, prices).run(plan, prep.prompt)
    try:
        text = _check_answer(completion, ctx.settings)
        outcome = _deliver(task, prep, text, ctx)
    except OffloadError:
        ctx.say("the answer was:\n" + completion.text[:ANSWER_LOG_CHARS])
        raise
    ctx.say(f"done: {outcome.result.splitlines()[0] if outcome.result else 'no result'}")
    return outcome
