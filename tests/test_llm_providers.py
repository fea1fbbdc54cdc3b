"""Providers at their own level: the real openai and boto3 clients against the loopback
fakes (request shape, usage, error classification, no SDK retries, credentials)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

import pytest

from fakes import FakeBedrock, FakeOpenAI
from fakes.environment import FAKE_OPENAI_KEY, LlmEnv
from offload import records
from offload.config import Settings
from offload.workers.providers import ErrorKind, Prompt, Provider, ProviderError, Usage
from offload.workers.providers import make_provider as _make_provider
from offload.workers.providers.bedrock import bedrock_credentials_available, classify_code
from offload.workers.providers.openai_chat import classify_status
from offload.workers.providers.routing import should_fall_back

pytest_plugins = ["fakes.fixtures"]

PROMPT = Prompt(system="be brief", user="say ok", max_tokens=64)
SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"


_built: list[Provider] = []


def make_provider(name: str, settings: Settings, environ: Mapping[str, str]) -> Provider:
    """Builds a provider that is closed when the test ends (no socket left to the GC)."""
    provider = _make_provider(name, settings, environ)
    _built.append(provider)
    return provider


@pytest.fixture(autouse=True)
def _close_providers() -> Iterator[None]:
    yield
    while _built:
        _built.pop().close()


def _settings(**kw: object) -> Settings:
    return records.replace(Settings(), **kw)


# -- the real SDK clients against the fakes -------------------------------------------------
def test_openai_client_sends_chat_completion_and_reads_usage(llm_env: LlmEnv) -> None:
    llm_env.openai.reply_text("hello", prompt_tokens=100, completion_tokens=20, cached_tokens=40)
    provider = make_provider("openai", Settings(), os.environ)
    answer = provider.complete("gpt-4o-mini", PROMPT)
    assert answer.text == "hello" and not answer.truncated
    assert answer.usage == Usage(tokens_in=100, tokens_out=20, cached_in=40)
    [request] = llm_env.openai.requests
    assert request.headers["authorization"] == f"Bearer {FAKE_OPENAI_KEY}"
    body = request.json()
    assert body["max_completion_tokens"] == 64 and "max_tokens" not in body
    assert body["messages"][0] == {"role": "system", "content": "be brief"}


def test_openai_reported_cost_and_length_cutoff(llm_env: LlmEnv) -> None:
    llm_env.openai.reply_text("partial", cost=0.0123, finish_reason="length")
    answer = make_provider("openai", Settings(), os.environ).complete("any-model", PROMPT)
    assert answer.usage.reported_cost_usd == 0.0123
    assert answer.truncated


def test_openai_max_tokens_param_is_configurable(llm_env: LlmEnv) -> None:
    settings = _settings(openai_max_tokens_param="max_tokens")
    make_provider("openai", settings, os.environ).complete("m", PROMPT)
    assert llm_env.openai.bodies()[0]["max_tokens"] == 64


def test_config_base_url_wins_over_environment(llm_env: LlmEnv) -> None:
    other = FakeOpenAI().start()
    try:
        settings = _settings(openai_base_url=other.base_url)
        make_provider("openai", settings, os.environ).complete("m", PROMPT)
        assert len(other.requests) == 1 and llm_env.openai.requests == []
    finally:
        other.close()


def test_keyless_local_server_needs_no_api_key(llm_env: LlmEnv) -> None:
    llm_env.without_openai_key()
    make_provider("openai", Settings(), os.environ).complete("llama3.1:8b", PROMPT)
    assert llm_env.openai.requests[0].headers["authorization"] == "Bearer offload-no-key"


@pytest.mark.parametrize(
    ("reply", "kind", "text"),
    [
        (FakeOpenAI.rate_limited(), ErrorKind.THROTTLED, "openai 429 rate_limit_exceeded"),
        (FakeOpenAI.error(400, "Unsupported parameter: 'x'"), ErrorKind.INVALID, "'x'"),
        (FakeOpenAI.error(401, "Incorrect API key"), ErrorKind.DENIED, "Incorrect API key"),
        (FakeOpenAI.error(404, "model not found"), ErrorKind.DENIED, "model not found"),
        (FakeOpenAI.error(503, "overloaded", type="server_error"), ErrorKind.TRANSIENT, "503"),
    ],
)
def test_openai_errors_are_classified_once_without_sdk_retries(
    llm_env: LlmEnv, reply: object, kind: ErrorKind, text: str
) -> None:
    llm_env.openai.push(reply)
    provider = make_provider("openai", Settings(), os.environ)
    with pytest.raises(ProviderError) as caught:
        provider.complete("gpt-4o", PROMPT)
    assert caught.value.kind is kind and text in str(caught.value)
    assert len(llm_env.openai.requests) == 1


def test_openai_retry_after_ms_is_read(llm_env: LlmEnv) -> None:
    llm_env.openai.push(FakeOpenAI.rate_limited(retry_after_ms=250))
    with pytest.raises(ProviderError) as caught:
        make_provider("openai", Settings(), os.environ).complete("gpt-4o", PROMPT)
    assert caught.value.retry_after == pytest.approx(0.25)


def test_openai_unreachable_server_is_transient(llm_env: LlmEnv) -> None:
    dead = FakeOpenAI().start()
    url = dead.base_url
    dead.close()
    settings = _settings(openai_base_url=url, llm_request_timeout_seconds=5.0)
    with pytest.raises(ProviderError) as caught:
        make_provider("openai", settings, os.environ).complete("m", PROMPT)
    assert caught.value.kind is ErrorKind.TRANSIENT


def test_bedrock_client_signs_converse_and_reads_usage(llm_env: LlmEnv) -> None:
    llm_env.bedrock.reply_text("hi", input_tokens=30, output_tokens=9, cache_read=70)
    answer = make_provider("bedrock", Settings(), os.environ).complete(SONNET, PROMPT)
    assert answer.text == "hi"
    assert answer.usage == Usage(tokens_in=100, tokens_out=9, cached_in=70)
    [request] = llm_env.bedrock.requests
    assert request.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIA")
    assert llm_env.bedrock.model_ids() == [SONNET]
    body = request.json()
    assert body["system"] == [{"text": "be brief"}, {"cachePoint": {"type": "default"}}]
    assert body["inferenceConfig"] == {"maxTokens": 64}


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (429, "ThrottlingException", ErrorKind.THROTTLED),
        (400, "ValidationException", ErrorKind.INVALID),
        (403, "AccessDeniedException", ErrorKind.DENIED),
        (404, "ResourceNotFoundException", ErrorKind.DENIED),
        (403, "UnrecognizedClientException", ErrorKind.DENIED),
        (403, "ExpiredTokenException", ErrorKind.DENIED),
        (503, "ServiceUnavailableException", ErrorKind.TRANSIENT),
        (500, "InternalServerException", ErrorKind.TRANSIENT),
        (424, "ModelErrorException", ErrorKind.INVALID),
    ],
)
def test_bedrock_errors_are_classified_once_without_sdk_retries(
    llm_env: LlmEnv, status: int, code: str, kind: ErrorKind
) -> None:
    llm_env.bedrock.reply_error(status, code, f"{code} happened")
    with pytest.raises(ProviderError) as caught:
        make_provider("bedrock", Settings(), os.environ).complete(SONNET, PROMPT)
    assert caught.value.kind is kind
    assert str(caught.value) == f"bedrock {status} {code}: {code} happened"
    assert len(llm_env.bedrock.requests) == 1


def test_bedrock_tool_use_reply_and_stop_reason(fake_bedrock: FakeBedrock) -> None:
    fake_bedrock.reply_tool_use("read_file", {"path": "a.py"})
    body = fake_bedrock.tool_use("x", {}).render(None)
    assert b'"toolUse"' in body and b'"stopReason": "tool_use"' in body


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, True),  # the fake keys of llm_env
        ({"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}, False),
        (
            {
                "AWS_ACCESS_KEY_ID": None,
                "AWS_SECRET_ACCESS_KEY": None,
                "AWS_BEARER_TOKEN_BEDROCK": "bedrock-api-key-123",
            },
            True,
        ),
        ({"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_PROFILE": "nope"}, False),
    ],
)
def test_bedrock_credential_detection(
    llm_env: LlmEnv, monkeypatch: pytest.MonkeyPatch, env: dict[str, str | None], expected: bool
) -> None:
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert bedrock_credentials_available(os.environ) is expected


# -- classification and fallback tables -----------------------------------------------------
@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, "throttled"),
        (408, "transient"),
        (409, "transient"),
        (500, "transient"),
        (502, "transient"),
        (400, "invalid"),
        (422, "invalid"),
        (401, "denied"),
        (403, "denied"),
    ],
)
def test_openai_status_table(status: int, kind: str) -> None:
    assert classify_status(status) == kind


@pytest.mark.parametrize(
    ("kind", "falls_back"),
    [
        ("throttled", True),
        ("transient", True),
        ("denied", True),
        ("invalid", False),
        ("other", False),
    ],
)
def test_fallback_table(kind: str, falls_back: bool) -> None:
    error = ProviderError("x", provider="bedrock", kind=ErrorKind(kind))
    assert should_fall_back(error) is falls_back


def test_unknown_bedrock_code_with_5xx_is_transient() -> None:
    assert classify_code("SomethingNew", 502) is ErrorKind.TRANSIENT
    assert classify_code("SomethingNew", None) is ErrorKind.OTHER


def test_no_openai_key_and_no_base_url_is_a_clear_error(
    llm_env: LlmEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm_env.without_openai_key()
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(ProviderError, match="set OPENAI_API_KEY") as caught:
        make_provider("openai", Settings(), os.environ)
    assert caught.value.kind is ErrorKind.DENIED
