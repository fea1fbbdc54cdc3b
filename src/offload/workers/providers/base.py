"""What every provider speaks: a prompt in, a completion with its usage out, and one error
type whose `kind` tells the worker whether to retry, fall back or give up.

Provider SDK exceptions never leave a provider module: they become a `ProviderError` with
a one-line, secret-free message at the boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from offload.errors import OffloadError
from offload.workers.redact import scrub

if TYPE_CHECKING:
    from offload.workers.providers.conversation import Message, Reply, Tool

__all__ = [
    "CallOptions",
    "Completion",
    "ErrorKind",
    "Prompt",
    "Provider",
    "ProviderError",
    "Usage",
]


class ErrorKind(StrEnum):
    """How a failed provider call may be handled."""

    THROTTLED = "throttled"  # rate limit: retry with backoff, then fall back
    TRANSIENT = "transient"  # 5xx, timeout, connection reset: retry, then fall back
    DENIED = "denied"  # no or bad credentials, no model access, unknown model: fall back
    INVALID = "invalid"  # the request itself is wrong (400, ValidationException): give up
    OTHER = "other"  # anything else: give up


class ProviderError(OffloadError):
    """A provider call failed; the message is one line and never holds a secret.

    Attributes:
        provider: `bedrock` or `openai`.
        kind: What the worker may do about it (see `ErrorKind`).
        status: The HTTP status, when there was a response.
        code: The provider's error code or type (`ThrottlingException`, `rate_limit_error`).
        retry_after: Seconds the provider asked us to wait, if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        kind: ErrorKind,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        detail = " ".join(scrub(message).split()) or "no message"
        label = " ".join(str(p) for p in (status, code) if p not in (None, ""))
        super().__init__(f"{provider} {label}: {detail}" if label else f"{provider}: {detail}")
        self.detail = detail
        self.provider = provider
        self.kind = kind
        self.status = status
        self.code = code
        self.retry_after = retry_after

    def after_fallback(self, first: ProviderError) -> ProviderError:
        """This error, saying which error of the first route made the task fall back."""
        return ProviderError(
            f"{self.detail} (after falling back from: {first})",
            provider=self.provider,
            kind=self.kind,
            status=self.status,
            code=self.code,
        )


@dataclass(frozen=True)
class Prompt:
    """One single-turn request: a system prompt, the user's message and an output cap."""

    system: str
    user: str
    max_tokens: int


@dataclass(frozen=True)
class CallOptions:
    """How to call: streaming, thinking and effort controls (from settings or the task).

    Attributes:
        stream: Stream the answer (output shown live; `idle_timeout_seconds` applies).
        on_text: Told each piece of streamed answer text, as it arrives.
        thinking_budget_tokens: Bedrock Claude extended thinking budget (0: off).
        reasoning_effort: OpenAI reasoning models' effort (`minimal` ... `high`), or None.
        additional_fields: Extra Bedrock `additionalModelRequestFields`, sent as they are.
        large_context: The task asked for a large context (Bedrock Claude: the 1M beta).
        prompt_cache: Mark Bedrock cache points on the system prompt, tools and history.
    """

    stream: bool = False
    on_text: Callable[[str], None] | None = None
    thinking_budget_tokens: int = 0
    reasoning_effort: str | None = None
    additional_fields: Mapping[str, Any] = field(default_factory=dict)
    large_context: bool = False
    prompt_cache: bool = True


@dataclass(frozen=True)
class Usage:
    """Tokens one call consumed, and the cost the response itself reported, if any.

    `tokens_in` counts every input token, cached or not; `cached_in` and `cache_write_in`
    are the parts read from or written to a prompt cache (priced differently).
    """

    tokens_in: int = 0
    tokens_out: int = 0
    cached_in: int = 0
    cache_write_in: int = 0
    reported_cost_usd: float | None = None


@dataclass(frozen=True)
class Completion:
    """A provider's answer.

    Attributes:
        text: The answer's text (all text parts joined).
        provider: `bedrock` or `openai`.
        model: The model id the request named (what prices and stats are keyed by).
        response_model: The model the response says answered (may carry a date suffix).
        usage: Tokens and any reported cost.
        truncated: True when the answer stopped at the output-token cap.
        refusal: The model's refusal text, when it declined to answer.
        failure: Why the answer cannot be used although the call succeeded (the context
            window overflowed, the model's output was malformed).
    """

    text: str
    provider: str
    model: str
    response_model: str | None
    usage: Usage
    truncated: bool = False
    refusal: str | None = None
    failure: str | None = None


class Provider(Protocol):
    """A chat model endpoint.

    `complete` sends one prompt and returns the answer; `converse` sends a tool-calling
    conversation and returns the next assistant turn; `close` releases the client's
    connections (call it once the provider is no longer needed).
    """

    name: str

    def complete(
        self, model: str, prompt: Prompt, options: CallOptions | None = None
    ) -> Completion:
        """Sends `prompt` to `model`.

        Raises:
            ProviderError: classified by kind, with a secret-free message.
        """
        ...

    def converse(
        self,
        model: str,
        system: str,
        messages: Sequence[Message],
        tools: Sequence[Tool],
        max_tokens: int,
        options: CallOptions | None = None,
    ) -> Reply:
        """Sends a conversation to `model` and returns its next turn.

        Args:
            model: The model id.
            system: The system prompt.
            messages: The conversation so far, starting with a user message.
            tools: The tools the model may call.
            max_tokens: The answer's token cap.
            options: Streaming, thinking, effort and caching controls.

        Raises:
            ProviderError: classified by kind, with a secret-free message.
        """
        ...

    def close(self) -> None:
        """Releases the client's connections; the provider is not used afterwards."""
        ...
