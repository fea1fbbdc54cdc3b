"""Amazon Bedrock through boto3's `bedrock-runtime` Converse API.

boto3 finds credentials, region and endpoint in its standard environment (`AWS_*`,
`~/.aws`, `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`, `AWS_BEARER_TOKEN_BEDROCK`); the config
file's `bedrock_region` and `bedrock_endpoint_url` win when set. botocore's own retries
are off (one attempt): one tenacity policy owns retries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from offload.workers.providers.base import Completion, ErrorKind, Prompt, ProviderError, Usage
from offload.workers.providers.conversation import Message, Reply, Stop, Tool, ToolCall

__all__ = ["BedrockConverse", "bedrock_credentials_available", "classify_code"]

_NAME = "bedrock"
_THROTTLED = frozenset({"ThrottlingException", "TooManyRequestsException"})
_TRANSIENT = frozenset(
    {
        "ServiceUnavailableException",
        "InternalServerException",
        "ModelNotReadyException",
        "ModelTimeoutException",
    }
)
_DENIED = frozenset(
    {
        "AccessDeniedException",
        "ResourceNotFoundException",
        "UnrecognizedClientException",
        "ExpiredTokenException",
        "InvalidSignatureException",
    }
)
_INVALID = frozenset({"ValidationException"})


def classify_code(code: str, status: int | None) -> ErrorKind:
    """The kind of a Bedrock error from its code (`x-amzn-ErrorType`) and HTTP status."""
    if code in _THROTTLED or status == 429:
        return ErrorKind.THROTTLED
    if code in _DENIED:
        return ErrorKind.DENIED
    if code in _INVALID:
        return ErrorKind.INVALID
    if code in _TRANSIENT or (status is not None and status >= 500):
        return ErrorKind.TRANSIENT
    if status is not None and 400 <= status < 500:
        return ErrorKind.INVALID
    return ErrorKind.OTHER


def bedrock_credentials_available(environ: Mapping[str, str]) -> bool:
    """True when boto3 finds AWS credentials or a Bedrock API key is set.

    Never raises: a broken AWS config counts as no credentials.
    """
    if environ.get("AWS_BEARER_TOKEN_BEDROCK"):
        return True
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        return boto3.Session().get_credentials() is not None
    except BotoCoreError:
        return False


def _translate(exc: Exception) -> ProviderError:
    """Turns a botocore exception into a ProviderError."""
    from botocore import exceptions as bx

    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return ProviderError(
            str(error.get("Message") or exc),
            provider=_NAME,
            kind=classify_code(code, status),
            status=status,
            code=code or None,
        )
    if isinstance(exc, bx.NoCredentialsError):
        return ProviderError(
            "no AWS credentials found; set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, or AWS_BEARER_TOKEN_BEDROCK",
            provider=_NAME,
            kind=ErrorKind.DENIED,
        )
    if isinstance(exc, bx.NoRegionError):
        return ProviderError(
            "no AWS region; set AWS_REGION or bedrock_region in the config file",
            provider=_NAME,
            kind=ErrorKind.DENIED,
        )
    transient = (bx.ConnectionError, bx.HTTPClientError, bx.ReadTimeoutError)
    if isinstance(exc, transient):
        return ProviderError(str(exc), provider=_NAME, kind=ErrorKind.TRANSIENT)
    return ProviderError(str(exc), provider=_NAME, kind=ErrorKind.OTHER)


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


_STOPS = {
    "tool_use": Stop.TOOL_USE,
    "max_tokens": Stop.MAX_TOKENS,
    "guardrail_intervened": Stop.REFUSED,
    "content_filtered": Stop.REFUSED,
}


def _wire_message(message: Message) -> dict[str, Any]:
    """One message as Converse content blocks (`text`, `toolUse`, `toolResult`)."""
    content: list[dict[str, Any]] = []
    for result in message.tool_results:
        content.append(
            {
                "toolResult": {
                    "toolUseId": result.call_id,
                    "content": [{"text": result.content or "(no output)"}],
                    "status": "error" if result.is_error else "success",
                }
            }
        )
    if message.text:
        content.append({"text": message.text})
    for call in message.tool_calls:
        content.append(
            {"toolUse": {"toolUseId": call.id, "name": call.name, "input": call.arguments}}
        )
    if not content:
        content.append({"text": "(empty)"})  # Converse refuses a message with no content
    return {"role": message.role, "content": content}


def _wire_tools(tools: Sequence[Tool]) -> dict[str, Any]:
    return {
        "tools": [
            {
                "toolSpec": {
                    "name": tool.name,
                    "description": tool.description,
                    "inputSchema": {"json": tool.parameters},
                }
            }
            for tool in tools
        ]
    }


def _tool_call(block: Mapping[str, Any]) -> ToolCall:
    call_id = str(block.get("toolUseId") or "")
    name = str(block.get("name") or "")
    arguments = block.get("input")
    if not isinstance(arguments, dict):
        return ToolCall(call_id, name, invalid="arguments must be a JSON object")
    return ToolCall(call_id, name, arguments)


class BedrockConverse:
    """Converse client for the models Bedrock serves."""

    name = _NAME

    def __init__(
        self, *, region: str | None, endpoint_url: str | None, timeout_seconds: float
    ) -> None:
        """Creates the boto3 client (imported here: the CLI never pays for it).

        Raises:
            ProviderError: when boto3 cannot build a client (no region, bad config).
        """
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError

        config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=min(timeout_seconds, 30.0),
            read_timeout=timeout_seconds,
        )
        try:
            self._client = boto3.Session().client(
                "bedrock-runtime",
                region_name=region or None,
                endpoint_url=endpoint_url or None,
                config=config,
            )
        except BotoCoreError as exc:
            raise _translate(exc) from None

    def complete(self, model: str, prompt: Prompt) -> Completion:
        """Sends one system + user turn; see `Provider.complete`."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.converse(
                modelId=model,
                system=[{"text": prompt.system}],
                messages=[{"role": "user", "content": [{"text": prompt.user}]}],
                inferenceConfig={"maxTokens": prompt.max_tokens},
            )
        except (BotoCoreError, ClientError) as exc:
            raise _translate(exc) from None
        content = response.get("output", {}).get("message", {}).get("content", [])
        text = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        stop = response.get("stopReason")
        filtered = stop in ("guardrail_intervened", "content_filtered")
        return Completion(
            text=text,
            provider=_NAME,
            model=model,
            response_model=None,
            usage=_usage(response.get("usage", {})),
            truncated=stop == "max_tokens",
            refusal="the content was filtered" if filtered else None,
        )

    def converse(
        self,
        model: str,
        system: str,
        messages: Sequence[Message],
        tools: Sequence[Tool],
        max_tokens: int,
    ) -> Reply:
        """Sends a tool-calling conversation; see `Provider.converse`."""
        from botocore.exceptions import BotoCoreError, ClientError

        extra: dict[str, Any] = {"toolConfig": _wire_tools(tools)} if tools else {}
        try:
            response = self._client.converse(
                modelId=model,
                system=[{"text": system}],
                messages=[_wire_message(m) for m in messages],
                inferenceConfig={"maxTokens": max_tokens},
                **extra,
            )
        except (BotoCoreError, ClientError) as exc:
            raise _translate(exc) from None
        content = response.get("output", {}).get("message", {}).get("content", [])
        blocks = [part for part in content if isinstance(part, dict)]
        calls = tuple(
            _tool_call(b["toolUse"]) for b in blocks if isinstance(b.get("toolUse"), dict)
        )
        stop = _STOPS.get(str(response.get("stopReason") or ""), Stop.END)
        if calls and stop is Stop.END:
            stop = Stop.TOOL_USE
        return Reply(
            text="".join(str(b.get("text", "")) for b in blocks),
            tool_calls=calls,
            stop=stop,
            provider=_NAME,
            model=model,
            response_model=None,
            usage=_usage(response.get("usage", {})),
        )

    def close(self) -> None:
        """Closes the boto3 client's connection pool."""
        self._client.close()
