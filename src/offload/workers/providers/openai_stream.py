"""A Chat Completions answer in one shape whether it came whole or streamed.

A stream is read chunk by chunk: text pieces go to `on_text` as they arrive (the task's
log shows them live), tool-call fragments are joined by index, and the final chunk's
usage (`stream_options.include_usage`) is kept. The SDK reads the stream through httpx,
whose read timeout then bounds the silence between chunks, not the whole answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Streamed", "read_chunks"]


@dataclass
class _Function:
    name: str = ""
    arguments: str = ""


@dataclass
class _Call:
    id: str = ""
    type: str = "function"
    function: _Function = field(default_factory=_Function)


@dataclass
class Streamed:
    """What an answer said: text, tool calls, why it stopped, usage and the model."""

    text: str = ""
    tool_calls: list[Any] = field(default_factory=list)
    finish_reason: str | None = None
    refusal: str | None = None
    model: str | None = None
    usage: Any = None

    @classmethod
    def from_completion(cls, response: Any) -> Streamed:
        """Reads a whole (not streamed) ChatCompletion."""
        from offload.workers.providers.base import ErrorKind, ProviderError

        if not response.choices:
            raise ProviderError(
                "the response had no choices", provider="openai", kind=ErrorKind.OTHER
            )
        choice = response.choices[0]
        return cls(
            text=choice.message.content or "",
            tool_calls=list(choice.message.tool_calls or ()),
            finish_reason=choice.finish_reason,
            refusal=getattr(choice.message, "refusal", None) or None,
            model=response.model,
            usage=response.usage,
        )


def read_chunks(chunks: Iterable[Any], on_text: Callable[[str], None] | None) -> Streamed:
    """Joins ChatCompletionChunks into one answer, telling `on_text` each text piece."""
    out = Streamed()
    text: list[str] = []
    refusal: list[str] = []
    calls: dict[int, _Call] = {}
    for chunk in chunks:
        out.model = out.model or getattr(chunk, "model", None)
        if getattr(chunk, "usage", None) is not None:
            out.usage = chunk.usage
        for choice in getattr(chunk, "choices", None) or ():
            delta = choice.delta
            if delta.content:
                text.append(delta.content)
                if on_text is not None:
                    on_text(delta.content)
            if getattr(delta, "refusal", None):
                refusal.append(delta.refusal)
            for part in delta.tool_calls or ():
                call = calls.setdefault(part.index, _Call())
                call.id = part.id or call.id
                if part.function is not None:
                    call.function.name += part.function.name or ""
                    call.function.arguments += part.function.arguments or ""
            if choice.finish_reason:
                out.finish_reason = choice.finish_reason
    out.text = "".join(text)
    out.refusal = "".join(refusal) or None
    out.tool_calls = [calls[i] for i in sorted(calls)]
    return out
