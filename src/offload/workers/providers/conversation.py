"""The provider-neutral shape of a tool-calling conversation (what agent tasks speak).

A conversation is a system prompt, a list of `Message`s alternating user and assistant,
and the `Tool`s the model may call. An assistant message may carry `ToolCall`s; the next
user message then carries one `ToolResult` per call. Each provider maps this onto its own
wire format (OpenAI `tool_calls` + `role: tool` messages, Bedrock `toolUse`/`toolResult`
content blocks) and answers with a `Reply`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from offload.workers.providers.base import Usage

__all__ = ["Message", "Reply", "Stop", "Tool", "ToolCall", "ToolResult"]


class Stop(StrEnum):
    """Why the model stopped answering."""

    END = "end"  # a final answer: no tool calls
    TOOL_USE = "tool_use"  # it asked for tool calls and waits for their results
    MAX_TOKENS = "max_tokens"  # cut off at the output-token cap
    REFUSED = "refused"  # a content filter or guardrail stopped it
    MALFORMED = "malformed"  # the model's tool call or output could not be parsed
    CONTEXT_EXCEEDED = "context_exceeded"  # the conversation outgrew the context window


@dataclass(frozen=True)
class Tool:
    """A tool the model may call: its name, what it does and its JSON-schema parameters."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """One call the model asked for.

    Attributes:
        id: The provider's id of the call; the result must carry it back.
        name: The tool's name.
        arguments: The parsed arguments (empty when they were not a JSON object).
        invalid: Why the raw arguments could not be used, when they could not.
    """

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    invalid: str | None = None


@dataclass(frozen=True)
class ToolResult:
    """What a tool call returned, as text, and whether it failed."""

    call_id: str
    content: str
    is_error: bool = False


@dataclass(frozen=True)
class Message:
    """One message of the conversation.

    A user message holds text and/or the results of the previous turn's tool calls; an
    assistant message holds the model's text and/or its tool calls.
    """

    role: str  # "user" or "assistant"
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_results: tuple[ToolResult, ...] = ()
    # Provider blocks that must be sent back as they came (Bedrock reasoning with its
    # signature, required when thinking and tools are used together); others ignore them.
    reasoning: tuple[dict[str, Any], ...] = ()

    @classmethod
    def user(cls, text: str = "", results: tuple[ToolResult, ...] = ()) -> Message:
        """A user message."""
        return cls("user", text, (), results)

    @classmethod
    def assistant(
        cls,
        text: str = "",
        calls: tuple[ToolCall, ...] = (),
        reasoning: tuple[dict[str, Any], ...] = (),
    ) -> Message:
        """An assistant message."""
        return cls("assistant", text, calls, (), reasoning)


@dataclass(frozen=True)
class Reply:
    """A provider's answer to one conversation turn.

    Attributes:
        text: The model's text (all text parts joined).
        tool_calls: The calls it asked for, in order.
        stop: Why it stopped.
        provider: `bedrock` or `openai`.
        model: The model id the request named.
        response_model: The model the response says answered, when it says.
        usage: Tokens and any reported cost.
    """

    text: str
    tool_calls: tuple[ToolCall, ...]
    stop: Stop
    provider: str
    model: str
    response_model: str | None
    usage: Usage
    reasoning: tuple[dict[str, Any], ...] = ()

    def as_message(self) -> Message:
        """The assistant message to append to the conversation."""
        return Message.assistant(self.text, self.tool_calls, self.reasoning)
