"""The Converse request and response shapes: building a request, reading an answer, and
assembling a streamed answer (ConverseStream events) into the same shape.

What a request carries depends on the model, because Bedrock refuses fields a model does
not support:
- `cachePoint` blocks (prompt caching) only for the Claude and Nova families that cache:
  after the system prompt, after the tool list and at the end of the conversation, at most
  the four cache points Converse allows;
- `toolResult.status` only for Claude and Nova (others refuse the field; the error then
  goes into the result's text);
- `additionalModelRequestFields`: the configured extra fields, Claude's extended thinking
  (`thinking.budget_tokens`, added on top of the output cap, which it counts in) and the
  1M-token context beta for `large_context` tasks on Claude.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from offload.workers.providers.base import CallOptions, Usage
from offload.workers.providers.conversation import Message, Stop, Tool, ToolCall

__all__ = [
    "LONG_CONTEXT_BETA",
    "Answer",
    "build_request",
    "read_answer",
    "read_stream",
    "wire_message",
]

LONG_CONTEXT_BETA = "context-1m-2025-08-07"
_CACHE_POINT = {"cachePoint": {"type": "default"}}
_CLAUDE = re.compile(r"(^|[.:/])anthropic\.claude-")
_NOVA = re.compile(r"(^|[.:/])amazon\.nova-")
# Claude models that cache prompts on Bedrock (Claude 3.5 Haiku, 3.7 Sonnet and every 4.x).
_CLAUDE_CACHES = re.compile(r"anthropic\.claude-(3-5-haiku|3-7-sonnet|sonnet-4|opus-4|haiku-4)")
_STOPS = {
    "tool_use": Stop.TOOL_USE,
    "max_tokens": Stop.MAX_TOKENS,
    "guardrail_intervened": Stop.REFUSED,
    "content_filtered": Stop.REFUSED,
    "malformed_tool_use": Stop.MALFORMED,
    "malformed_model_output": Stop.MALFORMED,
    "model_context_window_exceeded": Stop.CONTEXT_EXCEEDED,
}


def is_claude(model: str) -> bool:
    """True for Anthropic Claude model ids and inference profiles."""
    return bool(_CLAUDE.search(model))


def takes_status(model: str) -> bool:
    """True for the models whose Converse accepts `toolResult.status` (Claude, Nova)."""
    return is_claude(model) or bool(_NOVA.search(model))


def caches(model: str) -> bool:
    """True for the models that honour `cachePoint` blocks."""
    return bool(_CLAUDE_CACHES.search(model) or _NOVA.search(model))


def wire_message(message: Message, model: str, *, cache: bool = False) -> dict[str, Any]:
    """One message as Converse content blocks (`text`, `toolUse`, `toolResult`)."""
    content: list[dict[str, Any]] = list(message.reasoning) if is_claude(model) else []
    status = takes_status(model)
    for result in message.tool_results:
        text = result.content or "(no output)"
        block: dict[str, Any] = {"toolUseId": result.call_id, "content": []}
        if status:
            block["status"] = "error" if result.is_error else "success"
        elif result.is_error:
            text = f"error: {text}"
        block["content"].append({"text": text})
        content.append({"toolResult": block})
    if message.text:
        content.append({"text": message.text})
    for call in message.tool_calls:
        content.append(
            {"toolUse": {"toolUseId": call.id, "name": call.name, "input": call.arguments}}
        )
    if not any(key in b for b in content for key in ("text", "toolUse", "toolResult")):
        content.append({"text": "(empty)"})  # Converse refuses a message with no content
    if cache:
        content.append(dict(_CACHE_POINT))
    return {"role": message.role, "content": content}


def _tool_config(tools: Sequence[Tool], cache: bool) -> dict[str, Any]:
    specs: list[dict[str, Any]] = [
        {
            "toolSpec": {
                "name": tool.name,
                "description": tool.description,
                "inputSchema": {"json": tool.parameters},
            }
        }
        for tool in tools
    ]
    if cache:
        specs.append(dict(_CACHE_POINT))
    return {"tools": specs}


def _additional_fields(model: str, options: CallOptions) -> dict[str, Any]:
    extra: dict[str, Any] = dict(options.additional_fields)
    if is_claude(model):
        if options.thinking_budget_tokens > 0:
            extra["thinking"] = {"type": "enabled", "budget_tokens": options.thinking_budget_tokens}
        if options.large_context:
            betas = list(extra.get("anthropic_beta") or [])
            extra["anthropic_beta"] = [
                *betas,
                *([LONG_CONTEXT_BETA] * (LONG_CONTEXT_BETA not in betas)),
            ]
    return extra


def build_request(
    model: str,
    system: str,
    messages: Sequence[Message],
    tools: Sequence[Tool],
    max_tokens: int,
    options: CallOptions,
    *,
    cache_history: bool,
) -> dict[str, Any]:
    """The keyword arguments of one `converse`/`converse_stream` call.

    Args:
        cache_history: Put a cache point at the end of the conversation too (agent turns,
            which resend it all); single-shot prompts cache only the system prompt.
    """
    cache = options.prompt_cache and caches(model)
    wired = [
        wire_message(m, model, cache=cache and cache_history and i == len(messages) - 1)
        for i, m in enumerate(messages)
    ]
    thinking = options.thinking_budget_tokens if is_claude(model) else 0
    request: dict[str, Any] = {
        "modelId": model,
        "system": [{"text": system}, *([dict(_CACHE_POINT)] if cache else [])],
        "messages": wired,
        "inferenceConfig": {"maxTokens": max_tokens + max(0, thinking)},
    }
    if tools:
        request["toolConfig"] = _tool_config(tools, cache)
    extra = _additional_fields(model, options)
    if extra:
        request["additionalModelRequestFields"] = extra
    return request


@dataclass
class Answer:
    """A Converse answer, streamed or not: its blocks, why it stopped, its usage."""

    text: str
    tool_calls: tuple[ToolCall, ...]
    reasoning: tuple[dict[str, Any], ...]
    stop_reason: str
    usage: Usage

    @property
    def stop(self) -> Stop:
        """The neutral stop reason (tool calls imply TOOL_USE)."""
        stop = _STOPS.get(self.stop_reason, Stop.END)
        return Stop.TOOL_USE if self.tool_calls and stop is Stop.END else stop


def _usage(raw: Mapping[str, Any]) -> Usage:
    """Token counts; Converse's `inputTokens` excludes cache reads and writes."""
    plain = int(raw.get("inputTokens") or 0)
    cached = int(raw.get("cacheReadInputTokens") or 0)
    written = int(raw.get("cacheWriteInputTokens") or 0)
    return Usage(
        tokens_in=plain + cached + written,
        tokens_out=int(raw.get("outputTokens") or 0),
        cached_in=cached,
        cache_write_in=written,
    )


def _tool_call(block: Mapping[str, Any]) -> ToolCall:
    call_id = str(block.get("toolUseId") or "")
    name = str(block.get("name") or "")
    arguments = block.get("input")
    if isinstance(arguments, str):  # streamed input arrives as JSON text
        try:
            arguments = json.loads(arguments or "{}")
        except json.JSONDecodeError as exc:
            return ToolCall(call_id, name, invalid=f"arguments are not valid JSON ({exc})")
    if not isinstance(arguments, dict):
        return ToolCall(call_id, name, invalid="arguments must be a JSON object")
    return ToolCall(call_id, name, arguments)


def read_answer(response: Mapping[str, Any]) -> Answer:
    """Reads a `converse` response."""
    content = response.get("output", {}).get("message", {}).get("content", [])
    blocks = [part for part in content if isinstance(part, dict)]
    return Answer(
        text="".join(str(b.get("text", "")) for b in blocks if "text" in b),
        tool_calls=tuple(
            _tool_call(b["toolUse"]) for b in blocks if isinstance(b.get("toolUse"), dict)
        ),
        reasoning=tuple(b for b in blocks if "reasoningContent" in b),
        stop_reason=str(response.get("stopReason") or ""),
        usage=_usage(response.get("usage", {})),
    )


@dataclass
class _Block:
    kind: str  # text, toolUse, reasoning
    text: list[str] = field(default_factory=list)
    signature: str = ""
    tool: dict[str, Any] = field(default_factory=dict)


def _delta(
    blocks: dict[int, _Block], event: Mapping[str, Any], on_text: Callable[[str], None] | None
) -> None:
    index = int(event.get("contentBlockIndex") or 0)
    delta = event.get("delta") or {}
    if "text" in delta:
        block = blocks.setdefault(index, _Block("text"))
        block.text.append(str(delta["text"]))
        if on_text is not None:
            on_text(str(delta["text"]))
    elif "toolUse" in delta:
        block = blocks.setdefault(index, _Block("toolUse"))
        block.text.append(str(delta["toolUse"].get("input") or ""))
    elif "reasoningContent" in delta:
        block = blocks.setdefault(index, _Block("reasoning"))
        part = delta["reasoningContent"]
        block.text.append(str(part.get("text") or ""))
        block.signature += str(part.get("signature") or "")


def read_stream(
    events: Iterable[Mapping[str, Any]], on_text: Callable[[str], None] | None
) -> Answer:
    """Assembles ConverseStream events into an answer, telling `on_text` each text piece.

    Raises:
        botocore's EventStreamError (a ClientError) for an error event mid-stream.
    """
    blocks: dict[int, _Block] = {}
    stop, usage = "", Usage()
    for event in events:
        if "contentBlockStart" in event:
            start = event["contentBlockStart"]
            tool = (start.get("start") or {}).get("toolUse")
            if isinstance(tool, dict):
                index = int(start.get("contentBlockIndex") or 0)
                blocks[index] = _Block("toolUse", tool=dict(tool))
        elif "contentBlockDelta" in event:
            _delta(blocks, event["contentBlockDelta"], on_text)
        elif "messageStop" in event:
            stop = str(event["messageStop"].get("stopReason") or "")
        elif "metadata" in event:
            usage = _usage(event["metadata"].get("usage") or {})
    ordered = [blocks[i] for i in sorted(blocks)]
    calls = tuple(
        _tool_call({**b.tool, "input": "".join(b.text)}) for b in ordered if b.kind == "toolUse"
    )
    reasoning = tuple(
        {"reasoningContent": {"reasoningText": {"text": "".join(b.text), "signature": b.signature}}}
        for b in ordered
        if b.kind == "reasoning"
    )
    text = "".join("".join(b.text) for b in ordered if b.kind == "text")
    return Answer(text, calls, reasoning, stop, usage)
