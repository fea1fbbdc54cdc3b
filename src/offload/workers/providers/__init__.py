"""LLM providers: Bedrock (Converse) and OpenAI-compatible Chat Completions, single-turn
(`complete`) and tool-calling (`converse`), with routing, one retry policy and pricing.
The SDKs are imported only when a provider is built, so importing this package costs
nothing a CLI call would notice.
"""

from __future__ import annotations

from collections.abc import Mapping

from offload.config import Settings
from offload.workers.providers.base import (
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
    "make_provider",
]


def make_provider(name: str, settings: Settings, environ: Mapping[str, str]) -> Provider:
    """Builds the client of provider `name` from settings and the SDKs' own environment.

    Raises:
        ProviderError: when the client cannot be built (no key, no region).
        ValueError: for a provider offload does not have.
    """
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
        from offload.workers.providers.bedrock import BedrockConverse

        return BedrockConverse(
            region=settings.bedrock_region,
            endpoint_url=settings.bedrock_endpoint_url,
            timeout_seconds=timeout,
        )
    raise ValueError(f"unknown provider {name!r}")
