"""Fake LLM provider servers over real loopback HTTP, for the real openai and boto3 clients.

- `FakeOpenAI`: `POST /v1/chat/completions` (text, tool_calls, errors, 429 + retry-after-ms).
- `FakeBedrock`: `POST /model/{modelId}/converse` (text, toolUse, `x-amzn-ErrorType` errors).
- Both: a queue of scripted replies (status, headers, delay), a default reply, and a
  record of every request. Fixtures (`fake_openai`, `fake_bedrock`, `llm_env`) live in
  `fakes.fixtures`.
"""

from fakes.bedrock_server import FakeBedrock
from fakes.http import Reply, Request, ScriptedServer
from fakes.openai_server import FakeOpenAI

__all__ = ["FakeBedrock", "FakeOpenAI", "Reply", "Request", "ScriptedServer"]
