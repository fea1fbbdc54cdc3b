"""The SDK environment that points the real openai and boto3 clients at the fakes.

Kept apart from `fakes.fixtures` so test modules can import these names while pytest
loads the fixtures as a plugin (`pytest_plugins = ["fakes.fixtures"]`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from fakes.bedrock_server import FakeBedrock
from fakes.openai_server import FakeOpenAI

__all__ = [
    "FAKE_AWS_KEY_ID",
    "FAKE_AWS_SECRET",
    "FAKE_OPENAI_KEY",
    "LlmEnv",
    "point_sdks_at",
]

FAKE_OPENAI_KEY = "sk-test-offload-fake-key-0123456789"
FAKE_AWS_KEY_ID = "AKIAOFFLOADFAKEKEY01"
FAKE_AWS_SECRET = "offloadFakeSecretAccessKey0123456789abcd"
_AWS_CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
_CLEARED = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_BEARER_TOKEN_BEDROCK",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "OPENAI_LOG",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


@dataclass
class LlmEnv:
    """The fakes and the environment that points the SDKs at them."""

    openai: FakeOpenAI
    bedrock: FakeBedrock
    monkeypatch: pytest.MonkeyPatch

    def without_aws(self) -> None:
        """Removes the AWS credentials, so `auto` routes to OpenAI."""
        for name in _AWS_CREDENTIAL_VARS:
            self.monkeypatch.delenv(name, raising=False)

    def without_openai_key(self) -> None:
        """Removes OPENAI_API_KEY (the fake does not check it)."""
        self.monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every fake credential: none of them may appear in a log, error or the DB."""
        return (FAKE_OPENAI_KEY, FAKE_AWS_KEY_ID, FAKE_AWS_SECRET)


def point_sdks_at(
    fake_openai: FakeOpenAI,
    fake_bedrock: FakeBedrock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> LlmEnv:
    """Points OPENAI_* and AWS_* at the fakes, with fake keys and no metadata probing."""
    aws_dir = tmp_path / "aws"
    aws_dir.mkdir()
    (aws_dir / "config").write_text("")
    (aws_dir / "credentials").write_text("")
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    settings = {
        "OPENAI_BASE_URL": fake_openai.base_url,
        "OPENAI_API_KEY": FAKE_OPENAI_KEY,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(aws_dir / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(aws_dir / "credentials"),
        "AWS_ACCESS_KEY_ID": FAKE_AWS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_AWS_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": fake_bedrock.url,
        "OFFLOAD_OPENAI_BASE_URL_IS_OPENAI": "1",  # the fake stands for OpenAI itself
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return LlmEnv(fake_openai, fake_bedrock, monkeypatch)
