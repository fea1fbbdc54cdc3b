"""LLM providers: Bedrock (Converse) and OpenAI-compatible Chat Completions, single-turn
(`complete`) and tool-calling (`converse`), with routing, one retry policy and pricing.
The SDKs are imported only when a provider is built, so importing this package costs
nothing a CLI call would notice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from offload.config import Settings
from offload.workers.providers.base import (
    CallOptions,
    Completion,
    ErrorKind,
    Prompt,
    Provider,
    ProviderError,
    Usage,
)
from offload.workers.providers.conversation import (
    Message,
    Reply,
    Stop,
    Tool,
    ToolCall,
    ToolResult,
)

__all__ = [
    "CallOptions",
    "Completion",
    "ErrorKind",
    "Message",
    "Prompt",
    "Provider",
    "ProviderError",
    "Reply",
    "Stop",
    "Tool",
    "ToolCall",
    "ToolResult",
    "Usage",
    "call_options",
    "make_provider",
]


def make_provider(name: str, settings: Settings, environ: Mapping[str, str]) -> Provider:
    """Builds the client of provider `name` from settings and the SDKs' own environment.

    Raises:
        ProviderError: when the client cannot be built (no key, no region).
        ValueError: for a provider offload does not have.
    """
    # A socket read timeout: while streaming, the longest silence; otherwise the whole call.
    if settings.llm_stream:
        timeout = settings.llm_idle_timeout_seconds
    else:
        timeout = settings.llm_request_timeout_seconds
    if name == "openai":
        from offload.workers.providers.openai_chat import OpenAIChat

        return OpenAIChat(
            base_url=settings.openai_base_url or environ.get("OPENAI_BASE_URL") or None,
            api_key=environ.get("OPENAI_API_KEY") or None,
            timeout_seconds=timeout,
            max_tokens_param=settings.openai_max_tokens_param,
        )
    if name == "bedrock":
        from offload.workers.providers.bedrock import BedrockConverse, bedrock_region

        return BedrockConverse(
            region=bedrock_region(settings.bedrock_region, environ),
            endpoint_url=settings.bedrock_endpoint_url,
            timeout_seconds=timeout,
        )
    raise ValueError(f"unknown provider {name!r}")


def call_options(
    settings: Settings, *, large_context: bool = False, on_text: Callable[[str], None] | None = None
) -> CallOptions:
    """The call controls a task's (already task-adjusted) settings ask for."""
    return CallOptions(
        stream=settings.llm_stream,
        on_text=on_text if settings.llm_stream else None,
        thinking_budget_tokens=settings.bedrock_thinking_budget_tokens,
        reasoning_effort=settings.openai_reasoning_effort,
        additional_fields=dict(settings.bedrock_additional_fields),
        large_context=large_context,
        prompt_cache=settings.bedrock_prompt_cache,
    )
