"""OpenAI and every OpenAI-compatible server (Ollama, vLLM, llama.cpp, gateways) through
the openai SDK's Chat Completions API.

The SDK's own retries are off (`max_retries=0`): one tenacity policy owns retries. The SDK
reads `OPENAI_API_KEY` and `OPENAI_BASE_URL` itself; `openai_base_url` in the config file
wins over the environment. A local server needs no key, so with a base URL and no key a
placeholder is sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from offload.workers.providers.base import (
    CallOptions,
    Completion,
    ErrorKind,
    Prompt,
    ProviderError,
    Usage,
)
from offload.workers.providers.conversation import Message, Reply, Stop, Tool, ToolCall
from offload.workers.providers.openai_stream import Streamed, read_chunks

__all__ = [
    "NO_KEY_PLACEHOLDER",
    "OFFICIAL_URL",
    "OpenAIChat",
    "classify_status",
    "is_reasoning_model",
]

NO_KEY_PLACEHOLDER = "offload-no-key"
OFFICIAL_URL = "https://api.openai.com/v1"
_NAME = "openai"
# OpenAI's reasoning models take `reasoning_effort`; the others refuse it.
_REASONING = re.compile(r"^(o\d|gpt-5)")


def is_reasoning_model(model: str) -> bool:
    """True for OpenAI models that take `reasoning_effort` (o1, o3, o4-mini, gpt-5...)."""
    return bool(_REASONING.match(model))


def classify_status(status: int) -> ErrorKind:
    """The kind of an HTTP error status from an OpenAI-compatible server."""
    if status == 429:
        return ErrorKind.THROTTLED
    if status in (408, 409) or status >= 500:
        return ErrorKind.TRANSIENT
    if status in (401, 403, 404):
        return ErrorKind.DENIED
    if 400 <= status < 500:
        return ErrorKind.INVALID
    return ErrorKind.OTHER


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds), when present and numeric."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


def _translate(exc: Exception, url: str = OFFICIAL_URL) -> ProviderError:
    """Turns an openai SDK exception into a ProviderError (naming `url` when unreachable)."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        message = exc.message
        code = None
        if isinstance(body, Mapping):
            message = str(body.get("message") or message)
            code = body.get("code") or body.get("type")
        return ProviderError(
            message,
            provider=_NAME,
            kind=classify_status(exc.status_code),
            status=exc.status_code,
            code=str(code) if code else None,
            retry_after=_retry_after(exc.response.headers),
        )
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(
            f"request to {url} timed out (no data within the timeout)",
            provider=_NAME,
            kind=ErrorKind.TRANSIENT,
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f"cannot reach {url}: {exc.message}" + (f" ({cause})" if cause else "")
        return ProviderError(detail, provider=_NAME, kind=ErrorKind.TRANSIENT)
    return ProviderError(str(exc), provider=_NAME, kind=ErrorKind.OTHER)


def _usage(raw: Any) -> Usage:
    """Reads token counts, cached tokens and a gateway's `usage.cost` from a response."""
    if raw is None:
        return Usage()
    details = getattr(raw, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) or 0
    extra = getattr(raw, "model_extra", None) or {}
    cost = extra.get("cost")
    return Usage(
        tokens_in=int(raw.prompt_tokens or 0),
        tokens_out=int(raw.completion_tokens or 0),
        cached_in=int(cached),
        reported_cost_usd=float(cost) if isinstance(cost, int | float) else None,
    )


_STOPS = {"tool_calls": Stop.TOOL_USE, "length": Stop.MAX_TOKENS, "content_filter": Stop.REFUSED}


def _wire_messages(system: str, messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The conversation as Chat Completions messages (tool results as `role: tool`)."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for message in messages:
        if message.role == "assistant":
            empty = None if message.tool_calls else ""
            wire: dict[str, Any] = {"role": "assistant", "content": message.text or empty}
            if message.tool_calls:
                wire["tool_calls"] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                    }
                    for call in message.tool_calls
                ]
            out.append(wire)
            continue
        for result in message.tool_results:
            content = f"error: {result.content}" if result.is_error else result.content
            out.append({"role": "tool", "tool_call_id": result.call_id, "content": content})
        if message.text:
            out.append({"role": "user", "content": message.text})
    return out


def _wire_tools(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
            },
        }
        for tool in tools
    ]


def _tool_call(raw: Any) -> ToolCall:
    """A neutral ToolCall from an SDK tool call; bad JSON arguments are kept as `invalid`."""
    function = getattr(raw, "function", None)
    call_id = str(getattr(raw, "id", "") or "")
    if function is None:
        kind = getattr(raw, "type", "unknown")
        return ToolCall(call_id, str(kind), invalid=f"unsupported tool call type {kind!r}")
    text = function.arguments or "{}"
    try:
        arguments = json.loads(text)
    except json.JSONDecodeError as exc:
        return ToolCall(call_id, function.name, invalid=f"arguments are not valid JSON ({exc})")
    if not isinstance(arguments, dict):
        return ToolCall(call_id, function.name, invalid="arguments must be a JSON object")
    return ToolCall(call_id, function.name, arguments)


class OpenAIChat:
    """Chat Completions client for OpenAI or any OpenAI-compatible server."""

    name = _NAME

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str | None,
        timeout_seconds: float,
        max_tokens_param: str = "max_completion_tokens",
    ) -> None:
        """Creates the SDK client (imported here: the CLI never pays for it).

        Args:
            base_url: The server's URL (ending in `/v1`); None lets the SDK use
                `OPENAI_BASE_URL` or api.openai.com.
            api_key: The key; None lets the SDK read `OPENAI_API_KEY`.
            timeout_seconds: The longest wait for data: for a streamed answer the longest
                silence allowed (an idle timeout), for a whole answer its total time.
            max_tokens_param: `max_completion_tokens` (OpenAI, required by reasoning
                models) or `max_tokens` for older compatible servers.

        Raises:
            ProviderError: when there is no key and no base URL to a keyless server.
        """
        import openai

        if not api_key and base_url:
            api_key = NO_KEY_PLACEHOLDER
        timeout = openai.Timeout(timeout_seconds, connect=min(timeout_seconds, 30.0))
        try:
            self._client = openai.OpenAI(
                base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout
            )
        except openai.OpenAIError as exc:
            raise ProviderError(
                f"cannot create the client ({exc}); set OPENAI_API_KEY, or openai_base_url "
                "for a local OpenAI-compatible server",
                provider=_NAME,
                kind=ErrorKind.DENIED,
            ) from None
        self._max_tokens_param = max_tokens_param
        self.url = str(self._client.base_url).rstrip("/")
        self.official = self.url == OFFICIAL_URL

    def _params(self, model: str, max_tokens: int, options: CallOptions) -> dict[str, Any]:
        params: dict[str, Any] = {self._max_tokens_param: max_tokens}
        if options.reasoning_effort and is_reasoning_model(model):
            params["reasoning_effort"] = options.reasoning_effort
        if options.stream:
            params["stream"] = True
            params["stream_options"] = {"include_usage": True}
        return params

    def _create(
        self, model: str, messages: list[Any], params: dict[str, Any], options: CallOptions
    ) -> Streamed:
        """One Chat Completions call, streamed or not, read into one shape."""
        import openai

        try:
            response = self._client.chat.completions.create(
                model=model, messages=messages, **params
            )
            if options.stream:
                streamed = read_chunks(response, options.on_text)
                if streamed.finish_reason is None:
                    raise ProviderError(
                        f"{self.url} sent no complete streamed answer (no finish_reason; "
                        "the server may not stream this request): set llm_stream = false",
                        provider=_NAME,
                        kind=ErrorKind.OTHER,
                    )
                return streamed
            return Streamed.from_completion(response)
        except openai.OpenAIError as exc:
            raise _translate(exc, self.url) from None

    def complete(
        self, model: str, prompt: Prompt, options: CallOptions | None = None
    ) -> Completion:
        """Sends one system + user turn; see `Provider.complete`."""
        options = options or CallOptions()
        messages: list[Any] = [
            {"role": "system", "content": prompt.system},
            {"role": "user", "content": prompt.user},
        ]
        answer = self._create(
            model, messages, self._params(model, prompt.max_tokens, options), options
        )
        return Completion(
            text=answer.text,
            provider=_NAME,
            model=model,
            response_model=answer.model,
            usage=_usage(answer.usage),
            truncated=answer.finish_reason == "length",
            refusal=answer.refusal,
        )

    def converse(
        self,
        model: str,
        system: str,
        messages: Sequence[Message],
        tools: Sequence[Tool],
        max_tokens: int,
        options: CallOptions | None = None,
    ) -> Reply:
        """Sends a tool-calling conversation; see `Provider.converse`."""
        options = options or CallOptions()
        params = self._params(model, max_tokens, options)
        if tools:
            params["tools"] = _wire_tools(tools)
        answer = self._create(model, _wire_messages(system, messages), params, options)
        calls = tuple(_tool_call(c) for c in answer.tool_calls)
        stop = _STOPS.get(answer.finish_reason or "", Stop.END)
        if calls and stop is Stop.END:
            stop = Stop.TOOL_USE  # some compatible servers say "stop" with tool calls
        return Reply(
            text=answer.text or answer.refusal or "",
            tool_calls=calls,
            stop=Stop.REFUSED if answer.refusal else stop,
            provider=_NAME,
            model=model,
            response_model=answer.model,
            usage=_usage(answer.usage),
        )

    def close(self) -> None:
        """Closes the SDK client's connection pool."""
        self._client.close()
