"""Amazon Bedrock through boto3's `bedrock-runtime` Converse API.

boto3 finds credentials, region and endpoint in its standard environment (`AWS_*`,
`~/.aws`, `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`, `AWS_BEARER_TOKEN_BEDROCK`); the config
file's `bedrock_region` and `bedrock_endpoint_url` win when set. botocore's own retries
are off (one attempt): one tenacity policy owns retries.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from offload.workers.providers.base import (
    CallOptions,
    Completion,
    ErrorKind,
    Prompt,
    ProviderError,
)
from offload.workers.providers.bedrock_wire import (
    Answer,
    build_request,
    read_answer,
    read_stream,
)
from offload.workers.providers.conversation import Message, Reply, Stop, Tool

__all__ = [
    "BedrockConverse",
    "bedrock_credentials_available",
    "bedrock_region",
    "classify_code",
    "profile_for",
]

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
_NEEDS_PROFILE = re.compile(r"inference profile", re.IGNORECASE)
_HAS_PROFILE = re.compile(r"^(global|us|us-gov|eu|apac|jp|au|ca)\.|^arn:")
_FAILURES = {
    Stop.CONTEXT_EXCEEDED: "the prompt and answer outgrew the model's context window "
    "(stop reason model_context_window_exceeded); nothing was written: send fewer "
    "context files or use large_context",
    Stop.MALFORMED: "the model's output was malformed (stop reason malformed_model_output); "
    "nothing was written",
}


def bedrock_region(configured: str | None, environ: Mapping[str, str]) -> str | None:
    """The region to call: `bedrock_region`, else `AWS_REGION`, else `AWS_DEFAULT_REGION`
    (botocore itself reads only the last; the AWS CLI and SDKs read `AWS_REGION`)."""
    return configured or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None


def _geo_prefix(region: str | None) -> str:
    region = region or ""
    for start, prefix in (("us-gov-", "us-gov"), ("us-", "us"), ("eu-", "eu"), ("ap-", "apac")):
        if region.startswith(start):
            return prefix
    return "global"


def profile_for(model: str, region: str | None, exc: Exception) -> str | None:
    """The inference-profile id to retry a bare model id with, when Bedrock refused the
    bare id for on-demand use (`ValidationException` naming an inference profile)."""
    error = getattr(exc, "response", {}).get("Error", {})
    if error.get("Code") != "ValidationException" or _HAS_PROFILE.match(model):
        return None
    if not _NEEDS_PROFILE.search(str(error.get("Message") or "")):
        return None
    return f"{_geo_prefix(region)}.{model}"


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
        message = str(error.get("Message") or exc)
        kind = classify_code(code, status)
        if kind is ErrorKind.INVALID and _NEEDS_PROFILE.search(message):
            kind = ErrorKind.DENIED  # this account cannot call the model so: fall back
        return ProviderError(
            message,
            provider=_NAME,
            kind=kind,
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


class BedrockConverse:
    """Converse client for the models Bedrock serves."""

    name = _NAME

    def __init__(
        self, *, region: str | None, endpoint_url: str | None, timeout_seconds: float
    ) -> None:
        """Creates the boto3 client (imported here: the CLI never pays for it).

        `timeout_seconds` bounds each socket read: for a streamed answer that is the
        longest silence allowed (an idle timeout), for a whole answer its total time.

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
        self._region = self._client.meta.region_name
        self._profiles: dict[str, str] = {}

    def _profiled(self, model: str) -> str:
        return self._profiles.get(model, model)

    def _send(self, request: dict[str, Any], options: CallOptions) -> Answer:
        """One call (streamed or not); a bare model id that needs an inference profile is
        retried once with the profile of the client's region, which is then kept."""
        from botocore.exceptions import BotoCoreError, ClientError

        model = request["modelId"]
        request = {**request, "modelId": self._profiled(model)}
        try:
            try:
                return self._invoke(request, options)
            except ClientError as exc:
                profile = profile_for(request["modelId"], self._region, exc)
                if profile is None:
                    raise
                self._profiles[model] = profile
                return self._invoke({**request, "modelId": profile}, options)
        except (BotoCoreError, ClientError) as exc:
            raise _translate(exc) from None

    def _invoke(self, request: dict[str, Any], options: CallOptions) -> Answer:
        if not options.stream:
            return read_answer(self._client.converse(**request))
        response = self._client.converse_stream(**request)
        answer = read_stream(response.get("stream") or (), options.on_text)
        if not answer.stop_reason:
            raise ProviderError(
                "the stream ended without a stop reason (messageStop): the answer is "
                "incomplete; set llm_stream = false if this endpoint does not stream",
                provider=_NAME,
                kind=ErrorKind.TRANSIENT,
            )
        return answer

    def complete(
        self, model: str, prompt: Prompt, options: CallOptions | None = None
    ) -> Completion:
        """Sends one system + user turn; see `Provider.complete`."""
        options = options or CallOptions()
        request = build_request(
            model,
            prompt.system,
            [Message.user(prompt.user)],
            (),
            prompt.max_tokens,
            options,
            cache_history=False,
        )
        answer = self._send(request, options)
        stop = answer.stop
        return Completion(
            text=answer.text,
            provider=_NAME,
            model=model,
            response_model=self._profiles.get(model),
            usage=answer.usage,
            truncated=stop is Stop.MAX_TOKENS,
            refusal="the content was filtered" if stop is Stop.REFUSED else None,
            failure=_FAILURES.get(stop),
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
        request = build_request(
            model, system, messages, tools, max_tokens, options, cache_history=True
        )
        answer = self._send(request, options)
        return Reply(
            text=answer.text,
            tool_calls=answer.tool_calls,
            stop=answer.stop,
            provider=_NAME,
            model=model,
            response_model=self._profiles.get(model),
            usage=answer.usage,
            reasoning=answer.reasoning,
        )

    def close(self) -> None:
        """Closes the boto3 client's connection pool."""
        self._client.close()
