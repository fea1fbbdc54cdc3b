"""pytest fixtures around the fake provider servers.

Load them in a test module with `pytest_plugins = ["fakes.fixtures"]` (or from a
conftest) and do not import this module yourself. `llm_env` points the standard SDK
environment (OPENAI_*, AWS_*) at the fakes through monkeypatch, so a supervisor or CLI
started afterwards, and the task workers it spawns, talk only to loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.bedrock_server import FakeBedrock
from fakes.environment import LlmEnv, point_sdks_at
from fakes.openai_server import FakeOpenAI

__all__ = ["fake_bedrock", "fake_openai", "llm_env"]


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A started fake OpenAI server, closed after the test."""
    server = FakeOpenAI()
    server.start()
    yield server
    server.close()


@pytest.fixture
def fake_bedrock() -> Iterator[FakeBedrock]:
    """A started fake Bedrock runtime, closed after the test."""
    server = FakeBedrock()
    server.start()
    yield server
    server.close()


@pytest.fixture
def llm_env(
    fake_openai: FakeOpenAI,
    fake_bedrock: FakeBedrock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> LlmEnv:
    """Points OPENAI_* and AWS_* at the fakes, with fake keys and no metadata probing."""
    return point_sdks_at(fake_openai, fake_bedrock, tmp_path, monkeypatch)
