"""Running one agent task: a tool-calling loop of at most `max_turns` model calls.

Each turn: check the daily budget (this task's own spending included), call the routed
provider with the conversation (retries, fallback for `auto`), bill the call, run the
tool calls it asked for, and append the turn to the transcript. A reply without tool
calls ends the loop: the staged files are applied to the workspace in one step and the
model's summary becomes the result. Any failure (turn limit, provider error, budget,
refused apply) leaves the workspace untouched and the staging directory in place beside
the transcript, for inspection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offload.config import with_task_settings
from offload.errors import OffloadError
from offload.policies.enforce import stored_policy
from offload.queue.models import Task
from offload.workers.agent.apply import apply_changes
from offload.workers.agent.caller import Caller
from offload.workers.agent.prompt import first_message, system_prompt
from offload.workers.agent.schemas import TOOLS
from offload.workers.agent.staging import Staging
from offload.workers.agent.tools import ToolBox
from offload.workers.agent.transcript import Transcript, transcript_path
from offload.workers.budget import BudgetExceeded, spent_today
from offload.workers.context import display_path, read_context
from offload.workers.llm import Outcome, WorkerContext, task_roots
from offload.workers.providers import (
    Message,
    ProviderError,
    Reply,
    Stop,
    ToolCall,
    ToolResult,
)
from offload.workers.steering import load_rules

__all__ = ["AgentFailed", "run_agent_task", "staging_path"]

_CUT_OFF_NUDGE = (
    "Your reply was cut off at the output-token limit. Go on; write large files in smaller steps."
)
_MALFORMED_NUDGE = "Your last tool call was malformed and could not be read. Send it again."
MAX_SAME_FAILURES = 3  # the same failing tool call this often ends the task


class AgentFailed(OffloadError):
    """The agent could not finish (turn limit, a refusal); nothing was applied."""


def staging_path(task: Task, logs_dir: Path) -> Path:
    """The staging directory of an agent task."""
    return logs_dir / f"{task.id}.staging"


@dataclass
class _Agent:
    task: Task
    ctx: WorkerContext
    staging: Staging
    tools: ToolBox
    caller: Caller
    transcript: Transcript
    system: str
    max_turns: int
    messages: list[Message] = field(default_factory=list)
    spent_usd: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)  # failing call -> times seen
    malformed: int = 0

    # -- one turn ---------------------------------------------------------------------
    def _check_budget(self) -> None:
        limit = self.ctx.settings.max_daily_cost_usd
        if limit is None:
            return
        spent = spent_today(self.ctx.store, self.task.id, self.ctx.now_ms()) + self.spent_usd
        if spent >= limit:
            raise BudgetExceeded(
                f"daily LLM budget reached: ${spent:.4f} spent today (UTC) counting this "
                f"task's turns, max_daily_cost_usd is ${limit:.2f}; raise it or retry the "
                "task after midnight UTC"
            )

    def _record(self, index: int, reply: Reply | None, **extra: Any) -> None:
        record: dict[str, Any] = {
            "index": index,
            "attempt": self.task.attempt,
            "at": self.ctx.now_ms(),
            "provider": self.caller.route.provider,
            "model": self.caller.route.model,
            "text": "",
            "stop": None,
            "tool_calls": [],
            "tokens_in": 0,
            "tokens_out": 0,
            "tokens_cached": 0,
            "cost_usd": None,
            "error": None,
        }
        if reply is not None:
            record.update(
                provider=reply.provider,
                model=reply.model,
                text=reply.text,
                stop=reply.stop.value,
                tokens_in=reply.usage.tokens_in,
                tokens_out=reply.usage.tokens_out,
                tokens_cached=reply.usage.cached_in,
            )
        record.update(extra)
        self.transcript.append(record)

    def _call(self, index: int) -> tuple[Reply, float | None]:
        self.ctx.say(f"[{index}/{self.max_turns}] turn {index}: calling {self.caller.route}")
        try:
            self._check_budget()
            reply = self.caller.converse(
                self.system, self.messages, TOOLS, self.ctx.settings.max_output_tokens
            )
        except ProviderError as exc:
            self._record(index, None, error=str(exc))
            raise
        except BudgetExceeded as exc:
            self._record(index, None, provider=None, model=None, error=str(exc))
            raise
        cost = self.caller.bill(reply)
        self.spent_usd += cost or 0.0
        return reply, cost

    def _run_tools(self, index: int, reply: Reply) -> list[dict[str, Any]]:
        last = index >= self.max_turns
        results: list[ToolResult] = []
        for call in reply.tool_calls:
            if last:
                result = ToolResult(
                    call.id, f"not run: the turn limit ({self.max_turns}) was reached", True
                )
            else:
                result = self.tools.run(call)
                outcome = "error" if result.is_error else "ok"
                self.ctx.say(f"  {call.name} {_brief(call.arguments)} -> {outcome}")
                if result.is_error:
                    self._count_failure(call, result)
            results.append(result)
        self.messages.append(Message.user(results=tuple(results)))
        return [
            {
                "id": call.id,
                "name": call.name,
                "arguments": call.arguments,
                "result": result.content,
                "is_error": result.is_error,
            }
            for call, result in zip(reply.tool_calls, results, strict=True)
        ]

    def _count_failure(self, call: ToolCall, result: ToolResult) -> None:
        """Ends the task when the model repeats the same failing call MAX_SAME_FAILURES times."""
        key = json.dumps([call.name, call.arguments, call.invalid], sort_keys=True, default=str)
        self.failures[key] = self.failures.get(key, 0) + 1
        if self.failures[key] >= MAX_SAME_FAILURES:
            raise AgentFailed(
                f"the model repeated the same failing tool call {MAX_SAME_FAILURES} times: "
                f"{call.name} {_brief(call.arguments)} -> {_brief(result.content)}; nothing "
                "was applied"
            )

    def _stopped_short(self, reply: Reply) -> bool:
        """Handles a reply that stopped without finishing; True to go on with the loop."""
        if reply.stop is Stop.REFUSED:
            raise AgentFailed(f"the model declined to go on: {_brief(reply.text)}")
        if reply.stop is Stop.CONTEXT_EXCEEDED:
            raise AgentFailed(
                "the conversation outgrew the model's context window; nothing was applied: "
                "split the task or use a model with a larger context (large_context)"
            )
        if reply.stop is Stop.MALFORMED:
            self.malformed += 1
            if self.malformed >= MAX_SAME_FAILURES:
                raise AgentFailed(
                    f"the model's tool calls were malformed {self.malformed} times; nothing "
                    "was applied"
                )
            self.messages.append(Message.user(_MALFORMED_NUDGE))
            return True
        if reply.stop is Stop.MAX_TOKENS:
            self.messages.append(Message.user(_CUT_OFF_NUDGE))
            return True
        return False

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> Outcome:
        for index in range(1, self.max_turns + 1):
            reply, cost = self._call(index)
            self.messages.append(reply.as_message())
            if reply.tool_calls:
                asked = [_asked(call) for call in reply.tool_calls]
                self._record(index, reply, tool_calls=asked, cost_usd=cost)  # before they run
                calls = self._run_tools(index, reply)
                self._record(index, reply, tool_calls=calls, cost_usd=cost)
                continue
            self._record(index, reply, cost_usd=cost)
            if self._stopped_short(reply):
                continue
            return self._finish(reply.text, index)
        raise AgentFailed(
            f"turn limit reached: {self.max_turns} turn(s) used and the model had not "
            "finished; nothing was applied"
        )

    def _finish(self, summary: str, turns: int) -> Outcome:
        changes, created = self.staging.changes()
        if created:
            shown = ", ".join(created[:10]) + (" ..." if len(created) > 10 else "")
            self.ctx.say(f"not applied (created by commands, not by write_file): {shown}")
        self.ctx.say(f"applying {len(changes)} staged file(s) to the workspace")
        written = apply_changes(changes, self.staging.workspace)
        self.staging.discard()
        names = ", ".join(display_path(p, self.staging.workspace) for p in written)
        applied = f"applied {names}" if written else "no files changed"
        self.ctx.say(f"done after {turns} turn(s): {applied}")
        text = summary.strip() or "(the model gave no summary)"
        return Outcome(f"{text}\n\n{applied}", [str(p) for p in written])


def _asked(call: ToolCall) -> dict[str, Any]:
    """A call as recorded before it runs: no result yet."""
    return {"id": call.id, "name": call.name, "arguments": call.arguments, "result": None}


def _wake(home: Path) -> None:
    """Tells the supervisor (which runs this task) that a sub-task is waiting."""
    from offload.supervisor.wake import poke

    poke(home)


def _brief(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _prepare(task: Task, ctx: WorkerContext) -> _Agent:
    settings = ctx.settings
    workspace = Path(task.workspace).resolve()
    roots = task_roots(task, settings)
    rules = load_rules(workspace, roots, settings.rules_files, settings.max_rules_bytes, ctx.say)
    context = read_context(
        task.context_files,
        [workspace],
        workspace,
        per_file_bytes=settings.max_context_file_bytes,
        total_bytes=settings.max_context_total_bytes,
    )
    max_turns = min(task.max_turns or settings.agent_max_turns, settings.agent_max_turns)
    if rules is not None:
        used = "rules from " + ", ".join(display_path(p, workspace) for p in rules.sources)
    else:
        used = "no rules file"
    ctx.say(
        f"agent: {used}; {len(context)} context file(s); up to {max_turns} turns; "
        f"commands run in {settings.agent_run_commands_in}"
    )
    caller = Caller.for_task(task, ctx)  # a bad model or routing table fails here, early
    policy = stored_policy(task, settings)  # the submitter's policy, never this process's
    staging = Staging.fresh(
        workspace,
        staging_path(task, settings.logs_dir),
        settings.agent_link_dirs,
        private=settings.home,
    )
    for item in context:
        staging.read_bytes(item.display, 0)  # remembers what the model was shown
    tools = ToolBox(
        task=task,
        settings=settings,
        staging=staging,
        policy=policy,
        store=ctx.store,
        environ=ctx.environ,
        wake=lambda: _wake(settings.home),
        note=ctx.say,
    )
    agent = _Agent(
        task=task,
        ctx=ctx,
        staging=staging,
        tools=tools,
        caller=caller,
        transcript=Transcript(transcript_path(settings, task.id)),
        system=system_prompt(rules, max_turns, settings.agent_run_commands_in),
        max_turns=max_turns,
    )
    agent.messages.append(Message.user(first_message(task.spec or "", context)))
    return agent


def run_agent_task(task: Task, ctx: WorkerContext) -> Outcome:
    """Runs one agent task to its outcome.

    Raises:
        OffloadError: why the task failed (turn limit, provider error, budget, a refused
            apply, a bad rules or context file); the workspace was not touched and the
            staged files are kept in `<logs_dir>/<task-id>.staging/`.
    """
    ctx.settings = with_task_settings(ctx.settings, task.env)
    agent = _prepare(task, ctx)
    try:
        return agent.run()
    except OffloadError:
        ctx.say(
            f"nothing was applied; staged files kept in {agent.staging.root}; "
            f"every turn: offload show {task.id[:12]} --turns"
        )
        raise
