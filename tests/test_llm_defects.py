"""The defects found by running LLM and agent tasks against servers nobody here wrote, each
pinned by a test that failed before its fix, plus the request shapes a real provider would
be needed for (proven against botocore's service model and openai's own types)."""

from __future__ import annotations

import base64
import io
import os
import typing
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from fakes.agent import AgentRun, submit_agent
from fakes.environment import LlmEnv
from offload import records
from offload.config import Settings, load_settings, with_task_settings
from offload.errors import ConfigError, OffloadError, PolicyRefused
from offload.queue.sqlite import SqliteStore
from offload.submission import Submitter
from offload.workers.answers import AnswerRejected, broken_promise, parse_files
from offload.workers.llm import WorkerContext, run_llm_task
from offload.workers.providers import CallOptions, Message, Prompt, ProviderError, Tool, ToolResult
from offload.workers.providers.bedrock import BedrockConverse
from offload.workers.providers.bedrock_wire import LONG_CONTEXT_BETA, build_request
from offload.workers.providers.openai_chat import OpenAIChat
from offload.workers.redact import remember_secrets, scrub

pytest_plugins = ["fakes.fixtures"]

BARE = "anthropic.claude-sonnet-4-5-20250929-v1:0"
PROMPT = Prompt(system="be brief", user="hi", max_tokens=50)


def _submit(store: SqliteStore, workspace: Path, **fields: Any) -> Any:
    spec = Submitter.for_workspace(load_settings(), workspace).build(fields, lambda i: i)
    [task] = store.submit([spec])
    return task


def _run(store: SqliteStore, task: Any, **settings: Any) -> tuple[Any, str]:
    log = io.StringIO()
    ctx = WorkerContext(
        settings=records.replace(load_settings(), **settings),
        store=store,
        environ=os.environ,
        out=log,
        sleep=lambda _s: None,
    )
    with ctx:
        try:
            return run_llm_task(store.get(task.id), ctx), log.getvalue()
        except OffloadError as exc:
            return exc, log.getvalue()


def _stubbed(region: str = "us-east-1") -> tuple[BedrockConverse, Stubber]:
    provider = BedrockConverse(region=region, endpoint_url=None, timeout_seconds=5)
    return provider, Stubber(provider._client)


def _converse_ok(text: str = "ok", stop: str = "end_turn") -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": stop,
        "usage": {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5},
        "metrics": {"latencyMs": 1},
    }


# -- 1. AWS_REGION -----------------------------------------------------------------------------
def test_aws_region_alone_is_honoured(llm_env: LlmEnv) -> None:
    llm_env.monkeypatch.delenv("AWS_DEFAULT_REGION")
    llm_env.monkeypatch.setenv("AWS_REGION", "eu-west-3")
    from offload.workers.providers import make_provider

    provider = make_provider("bedrock", Settings(), os.environ)
    assert provider._client.meta.region_name == "eu-west-3"  # type: ignore[attr-defined]


# -- 2. inference profiles -------------------------------------------------------------------
def test_a_bare_claude_id_is_retried_with_the_regions_inference_profile(llm_env: LlmEnv) -> None:
    provider, stub = _stubbed("eu-central-1")
    message = (
        f"Invocation of model ID {BARE} with on-demand throughput isn't supported. Retry your "
        "request with the ID or ARN of an inference profile that contains this model."
    )
    stub.add_client_error("converse", "ValidationException", message, 400)
    stub.add_response(
        "converse",
        _converse_ok(),
        {
            "modelId": f"eu.{BARE}",
            "system": [{"text": "be brief"}, {"cachePoint": {"type": "default"}}],
            "messages": [{"role": "user", "content": [{"text": "hi"}]}],
            "inferenceConfig": {"maxTokens": 50},
        },
    )
    with stub:
        answer = provider.complete(BARE, PROMPT)
    assert answer.text == "ok" and answer.response_model == f"eu.{BARE}"


def test_default_bedrock_model_is_an_inference_profile() -> None:
    assert Settings().bedrock_model.startswith("global.anthropic.")


# -- 3. stop reasons ---------------------------------------------------------------------------
@pytest.mark.parametrize("stop", ["model_context_window_exceeded", "malformed_model_output"])
def test_unusable_bedrock_stops_fail_the_answer(llm_env: LlmEnv, stop: str) -> None:
    provider, stub = _stubbed()
    stub.add_response("converse", _converse_ok("half a fi", stop))
    with stub:
        answer = provider.complete(BARE, PROMPT)
    assert answer.failure and stop in answer.failure


def test_malformed_tool_use_never_ends_an_agent_normally(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    (workspace / "keep.txt").write_text("old\n")
    llm_env.bedrock.reply_tool_use("write_file", {"path": "keep.txt", "content": "new\n"})
    for _ in range(3):
        llm_env.bedrock.reply_text("", stop_reason="malformed_tool_use")
    task = submit_agent(store, workspace, "edit keep.txt")
    with pytest.raises(OffloadError, match="malformed 3 times"):
        AgentRun(store)(task)
    assert (workspace / "keep.txt").read_text() == "old\n"  # staged, never applied


# -- 4. unpriced models count against the budget -----------------------------------------------
@pytest.mark.slow
def test_unpriced_model_spends_the_daily_budget(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    llm_env.openai.reply_text("a", prompt_tokens=20_000, completion_tokens=2_000)
    first = _submit(store, workspace, type="review", spec="x", model="gpt-6-unknown")
    _run(store, first, max_daily_cost_usd=0.40)
    assert store.get(first.id).cost_usd == pytest.approx((20_000 * 15 + 2_000 * 75) / 1e6)
    import sqlite3
    import time

    with sqlite3.connect(load_settings().db_path) as db:  # finished, as the supervisor would
        db.execute(
            "UPDATE tasks SET state='completed', finished_at=? WHERE id=?",
            (int(time.time() * 1000), first.id),
        )
    second = _submit(store, workspace, type="review", spec="x", model="gpt-6-unknown")
    error, _log = _run(store, second, max_daily_cost_usd=0.40)
    assert "daily LLM budget reached" in str(error)


# -- 5. </file> inside content -----------------------------------------------------------------
def test_closing_tag_inside_a_file_does_not_cut_it() -> None:
    answer = (
        '<file path="m.py">\nMARK = "</file>"\nEND = 1\n</file>\n'
        '<file path="t.html">\n<p>x</p>\n</file>\ndone'
    )
    files = parse_files(answer)
    assert files.files[0].content == 'MARK = "</file>"\nEND = 1\n'
    assert files.files[1].content == "<p>x</p>\n" and files.summary == "done"
    with pytest.raises(AnswerRejected, match="no closing"):
        parse_files('<file path="a.py">\nx = 1\n')


# -- 6. never into .git ------------------------------------------------------------------------
def test_single_shot_answers_cannot_write_into_git(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    hooks = workspace / ".git" / "hooks"
    hooks.mkdir(parents=True)
    llm_env.openai.reply_text(
        '<file path="ok.txt">\nfine\n</file>\n<file path=".git/hooks/pre-push">\n'
        "#!/bin/sh\nid\n</file>"
    )
    task = _submit(store, workspace, type="code_task", spec="x")
    error, log = _run(store, task)
    assert isinstance(error, PolicyRefused) and ".git" in str(error), log
    assert not (hooks / "pre-push").exists() and not (workspace / "ok.txt").exists()


# -- 7. edits made while the model answered win --------------------------------------------
def test_write_file_keeps_an_edit_made_while_it_ran(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    target = workspace / "notes.md"
    target.write_text("v1\n")

    def answer(request: Any) -> Any:
        target.write_text("edited by a person\n")  # lands while the model "thinks"
        return llm_env.openai.text("v2 from the model")

    llm_env.openai.push(answer)
    task = _submit(store, workspace, type="write_file", spec="x", output_path="notes.md")
    error, _ = _run(store, task)
    assert "changed while the task ran" in str(error)
    assert target.read_text() == "edited by a person\n"


# -- 8. a local server is not billed at OpenAI's prices ------------------------------------
def test_local_server_records_the_answering_model_and_an_estimate(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    llm_env.openai.reply_text("fine", model="SmolLM2-135M-Instruct.Q4_1.gguf")
    task = _submit(store, workspace, type="review", spec="x")
    _run(store, task, openai_base_url_is_openai=False)
    done = store.get(task.id)
    assert done.model_used == (
        "gpt-4o-mini (answered by SmolLM2-135M-Instruct.Q4_1.gguf) [unpriced, estimated]"
    )
    assert done.cost_usd == pytest.approx((11 * 15 + 7 * 75) / 1e6)


# -- 9. smaller ---------------------------------------------------------------------------------
def test_fallback_error_names_the_provider_once(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.bedrock.reply_error(403, "AccessDeniedException", "no access")
    llm_env.openai.reply_error(401, "bad key")
    task = _submit(store, workspace, type="review", spec="x")
    error, _ = _run(store, task)
    assert "openai: openai" not in str(error) and "openai 401" in str(error)
    assert "after falling back from: bedrock 403" in str(error)


def test_masking_keeps_the_prose_after_an_error_code() -> None:
    text = "Error code: 401 - invalid_api_key: Incorrect API key provided: sk-abc12***"
    assert "invalid_api_key: Incorrect API key provided" in scrub(text)
    assert scrub("OPENAI_API_KEY=abcdefgh1") == "OPENAI_API_KEY=***"


@pytest.mark.slow  # about a second: not in the fast subset
def test_connection_refused_names_the_url() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    client = OpenAIChat(base_url=url, api_key=None, timeout_seconds=5)
    with pytest.raises(ProviderError, match=f"cannot reach {url}"):
        client.complete("m", PROMPT)
    client.close()


def test_tool_result_status_only_for_models_that_take_it() -> None:
    messages = [Message.user(results=(ToolResult("c1", "boom", True),))]
    claude = build_request(BARE, "s", messages, (), 10, CallOptions(), cache_history=False)
    llama = build_request(
        "meta.llama3-70b", "s", messages, (), 10, CallOptions(), cache_history=False
    )
    assert claude["messages"][0]["content"][0]["toolResult"]["status"] == "error"
    block = llama["messages"][0]["content"][0]["toolResult"]
    assert "status" not in block and block["content"] == [{"text": "error: boom"}]


# -- 10. caching, thinking, large context, effort, streaming --------------------------------
def test_agent_request_shape_with_cache_points_thinking_and_1m_beta_is_valid() -> None:
    tool = Tool("read_file", "reads", {"type": "object", "properties": {}})
    messages = [Message.user("go"), Message.assistant("", ()), Message.user("more")]
    options = CallOptions(thinking_budget_tokens=2048, large_context=True)
    request = build_request(BARE, "sys", messages, [tool], 100, options, cache_history=True)
    assert request["system"][-1] == {"cachePoint": {"type": "default"}}
    assert request["toolConfig"]["tools"][-1] == {"cachePoint": {"type": "default"}}
    assert request["messages"][-1]["content"][-1] == {"cachePoint": {"type": "default"}}
    extra = request["additionalModelRequestFields"]
    assert extra["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert extra["anthropic_beta"] == [LONG_CONTEXT_BETA]
    assert request["inferenceConfig"]["maxTokens"] == 2148
    client = boto3.client("bedrock-runtime", region_name="us-east-1")
    for operation in ("converse", "converse_stream"):
        stub = Stubber(client)
        stub.add_response(
            operation, {} if operation == "converse_stream" else _converse_ok(), request
        )
        with stub:  # botocore validates the request against the service model
            getattr(client, operation)(**request)
    # a model that does not cache gets no cache points (Bedrock would refuse them)
    plain = build_request(
        "meta.llama3-70b", "s", messages, [tool], 10, CallOptions(), cache_history=True
    )
    assert "cachePoint" not in str(plain)


def test_second_agent_turn_reads_the_cache(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.bedrock.reply_tool_use("list_dir", {"path": "."})
    llm_env.bedrock.reply_text("done", cache_read=900)
    task = submit_agent(store, workspace, "look around")
    run = AgentRun(store)
    run(task)
    bodies = llm_env.bedrock.bodies()
    assert all(b["system"][-1] == {"cachePoint": {"type": "default"}} for b in bodies)
    assert bodies[1]["messages"][-1]["content"][-1] == {"cachePoint": {"type": "default"}}
    assert store.get(task.id).tokens_cached == 900


def test_reasoning_effort_values_are_openais_and_sent_only_to_reasoning_models(
    llm_env: LlmEnv,
) -> None:
    from openai.types.shared import ReasoningEffort

    from offload.config_checks import REASONING_EFFORTS

    assert set(REASONING_EFFORTS) <= set(typing.get_args(typing.get_args(ReasoningEffort)[0]))
    client = OpenAIChat(base_url=llm_env.openai.base_url, api_key="k", timeout_seconds=5)
    client.complete("o4-mini", PROMPT, CallOptions(reasoning_effort="high"))
    client.complete("gpt-4o", PROMPT, CallOptions(reasoning_effort="high"))
    client.close()
    first, second = llm_env.openai.bodies()
    assert first["reasoning_effort"] == "high" and "reasoning_effort" not in second
    with pytest.raises(ConfigError, match="openai_reasoning_effort"):
        with_task_settings(Settings(), {"LLM_OPENAI_REASONING_EFFORT": "extreme"})


@pytest.mark.parametrize("provider", ["openai", "bedrock"])
def test_streamed_answers_show_live_and_are_billed(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path, provider: str
) -> None:
    if provider == "openai":
        llm_env.without_aws()
        llm_env.openai.reply_text("line one\n[2/3] not progress\nlast")
    else:
        llm_env.bedrock.reply_text("line one\n[2/3] not progress\nlast")
    task = _submit(store, workspace, type="review", spec="x", env={"LLM_STREAM": "1"})
    outcome, log = _run(store, task, llm_stream=False)  # the task's own setting wins
    assert outcome.result == "line one\n[2/3] not progress\nlast"
    assert "  | line one\n  | [2/3] not progress\n  | last\n" in log
    assert store.get(task.id).tokens_out > 0
    body = (llm_env.openai if provider == "openai" else llm_env.bedrock).requests[0]
    assert ("stream" in body.path) or (body.json() or {}).get("stream") is True


# -- the output must be what its type promises ----------------------------------------------
def test_an_answer_that_breaks_its_files_promise_writes_nothing(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    llm_env.openai.reply_text("def f(:\n    pass\n")
    task = _submit(store, workspace, type="write_file", spec="x", output_path="f.py")
    error, _ = _run(store, task)
    assert "f.py is not valid Python" in str(error) and not (workspace / "f.py").exists()
    assert broken_promise("a.json", "{") and broken_promise("a.py", "x = 1\n```\n")
    assert broken_promise("README.md", "```sh\nls\n```\n") is None


def test_an_agent_repeating_a_failing_call_stops(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    for _ in range(5):
        llm_env.openai.reply_tool_calls([("read_file", {"path": "missing.txt"})])
    task = submit_agent(store, workspace, "read it")
    with pytest.raises(OffloadError, match="repeated the same failing tool call 3 times"):
        AgentRun(store)(task)
    assert len(llm_env.openai.requests) == 3


# -- masking encodings (issue 10, item 5) -------------------------------------------------
def test_encoded_keys_are_masked() -> None:
    key = "sk-proj-Zq81encodedKEYvalue000111222"
    remember_secrets({"OPENAI_API_KEY": key})
    for shown in (
        base64.b64encode(key.encode() + b"\n").decode(),
        base64.b64encode(b"k=" + key.encode()).decode(),
        base64.urlsafe_b64encode(b"x" + key.encode()).decode(),
        key.encode().hex(),
        key.encode().hex().upper(),
    ):
        masked = scrub(f"out: {shown}")
        assert "***" in masked and len(masked) < len(f"out: {shown}") - 20, shown
