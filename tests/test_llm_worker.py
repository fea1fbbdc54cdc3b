"""One LLM task run in-process against a real Store and the real SDK clients over loopback:
contracts, confinement, caps, steering, routing with fallback, retries, billing, budget,
secrets, and the `python -m offload.workers` entry point's bookkeeping."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

from fakes import FakeBedrock, FakeOpenAI
from fakes.environment import LlmEnv
from offload import records
from offload.config import Settings, load_settings
from offload.errors import InvalidInput, OffloadError, PolicyRefused
from offload.queue.models import State, Task
from offload.queue.sqlite import SqliteStore
from offload.submission import Submitter
from offload.workers.__main__ import main as worker_main
from offload.workers.budget import BudgetExceeded
from offload.workers.llm import Outcome, WorkerContext, run_llm_task
from offload.workers.providers import ProviderError

pytest_plugins = ["fakes.fixtures"]

SONNET = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"  # the default: a profile
MINI_COST = (11 * 0.15 + 7 * 0.60) / 1_000_000  # the fake's default usage at gpt-4o-mini


def _submit(store: SqliteStore, workspace: Path, **fields: Any) -> Task:
    spec = Submitter.for_workspace(load_settings(), workspace).build(fields, lambda i: i)
    [task] = store.submit([spec])
    return task


class Run:
    """Runs a task in-process and keeps its log and the waits it would have slept."""

    def __init__(self, store: SqliteStore, **settings: Any) -> None:
        self.store = store
        self.settings: Settings = records.replace(load_settings(), **settings)
        self.log = io.StringIO()
        self.sleeps: list[float] = []

    def __call__(self, task: Task) -> Outcome:
        with WorkerContext(
            settings=self.settings,
            store=self.store,
            environ=os.environ,
            out=self.log,
            sleep=self.sleeps.append,
        ) as ctx:
            return run_llm_task(self.store.get(task.id), ctx)


def _system(fake: FakeOpenAI | FakeBedrock, index: int = 0) -> str:
    body = fake.bodies()[index]
    if isinstance(fake, FakeOpenAI):
        return str(body["messages"][0]["content"])
    return str(body["system"][0]["text"])


def _user(fake: FakeOpenAI, index: int = 0) -> str:
    return str(fake.bodies()[index]["messages"][1]["content"])


# -- contracts and billing ------------------------------------------------------------------
def test_write_file_sees_the_current_file_and_is_billed(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    (workspace / "CHANGELOG.md").write_text("## 0.1.0\n- first\n")
    llm_env.openai.reply_text("```markdown\n## 0.2.0\n- auth refactor\n\n## 0.1.0\n- first\n```")
    task = _submit(
        store, workspace, type="write_file", spec="add an entry", output_path="CHANGELOG.md"
    )
    outcome = Run(store)(task)
    assert (workspace / "CHANGELOG.md").read_text().startswith("## 0.2.0\n")
    assert outcome.files_written == [str(workspace / "CHANGELOG.md")]
    assert outcome.result == "wrote CHANGELOG.md"
    assert '<current path="CHANGELOG.md">\n## 0.1.0' in _user(llm_env.openai)
    done = store.get(task.id)
    assert (done.tokens_in, done.tokens_out, done.model_used) == (11, 7, "gpt-4o-mini")
    assert done.cost_usd == pytest.approx(MINI_COST)


def test_review_keeps_its_text_as_the_result(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    (workspace / "app.py").write_text("def f():\n    return 1\n")
    llm_env.openai.reply_text("Looks fine.\n\n- app.py:1 nit", cached_tokens=4)
    task = _submit(store, workspace, type="review", spec="review", context_files=["app.py"])
    outcome = Run(store)(task)
    assert outcome == Outcome("Looks fine.\n\n- app.py:1 nit", [])
    assert store.get(task.id).tokens_cached == 4  # billed like an agent turn
    assert '<context path="app.py">\ndef f():' in _user(llm_env.openai)


def test_rate_limit_then_success_is_retried_and_billed_once(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    llm_env.openai.reply_rate_limited(retry_after_ms=1)
    llm_env.openai.reply_text("# Docs\n", prompt_tokens=100, completion_tokens=50)
    task = _submit(store, workspace, type="docs", spec="document", output_path="README.md")
    run = Run(store)
    run(task)
    assert len(llm_env.openai.requests) == 2 and run.sleeps == [pytest.approx(0.001)]
    done = store.get(task.id)
    assert (done.tokens_in, done.tokens_out) == (100, 50)
    assert done.cost_usd == pytest.approx((100 * 0.15 + 50 * 0.6) / 1e6)
    retried = "Rate limit reached; retrying in 0.00 s (attempt 2, llm_max_attempts is 5)"
    assert retried in run.log.getvalue()
    assert len([e for e in store.events_since(0) if e.kind == "usage"]) == 1


def test_bad_request_fails_at_once_with_the_providers_message(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    llm_env.openai.reply_error(400, "Unsupported value: 'temperature' is not supported")
    task = _submit(store, workspace, type="write_file", spec="x", output_path="out.txt")
    run = Run(store)
    with pytest.raises(ProviderError, match="openai 400 .*'temperature' is not supported"):
        run(task)
    assert len(llm_env.openai.requests) == 1 and run.sleeps == []
    assert not (workspace / "out.txt").exists()
    assert store.get(task.id).tokens_in is None


def test_unknown_model_is_estimated_conservatively_and_a_reported_cost_wins(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.openai.reply_text("a")
    local = _submit(store, workspace, type="review", spec="x", model="llama3.1:8b")
    Run(store)(local)
    done = store.get(local.id)
    # 11 in, 7 out at the default unpriced rates ($15 / $75 per 1M tokens): never $0.
    assert done.cost_usd == pytest.approx((11 * 15 + 7 * 75) / 1e6)
    assert done.model_used == "llama3.1:8b [unpriced, estimated]"
    llm_env.openai.reply_text("b", cost=0.0425)
    gateway = _submit(store, workspace, type="review", spec="x", model="gpt-4o")
    Run(store)(gateway)
    assert store.get(gateway.id).cost_usd == pytest.approx(0.0425)


def test_cut_off_answer_writes_nothing_but_is_billed(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    llm_env.openai.reply_text("def half(", finish_reason="length")
    task = _submit(store, workspace, type="test_gen", spec="tests", output_path="t.py")
    with pytest.raises(OffloadError, match="cut off at max_output_tokens"):
        Run(store)(task)
    assert not (workspace / "t.py").exists() and store.get(task.id).tokens_out == 7


# -- confinement ------------------------------------------------------------------------------
def test_multi_file_answer_with_one_escaping_path_writes_nothing(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    llm_env.openai.reply_text(
        '<file path="src/good.py">\nX = 1\n</file>\n<file path="../../evil.py">\nboom\n</file>\n'
    )
    task = _submit(store, workspace, type="code_task", spec="add things")
    with pytest.raises(PolicyRefused, match="evil.py"):
        Run(store)(task)
    assert not (workspace / "src").exists()
    assert not (workspace.parent.parent / "evil.py").exists()


def test_refactor_writes_every_file_of_its_answer(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    (workspace / "a.py").write_text("A=1\n")
    llm_env.openai.reply_text(
        '<file path="a.py">\nA = 1\n</file>\n<file path="lib/b.py">\nB = 2\n</file>\nTidied.'
    )
    task = _submit(store, workspace, type="refactor", spec="tidy", context_files=["a.py"])
    outcome = Run(store)(task)
    assert (workspace / "a.py").read_text() == "A = 1\n"
    assert (workspace / "lib/b.py").read_text() == "B = 2\n"
    assert outcome.result == "wrote a.py, lib/b.py\n\nTidied."


def test_output_path_turned_into_an_outside_symlink_is_refused(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path, tmp_path: Path
) -> None:
    llm_env.without_aws()
    task = _submit(store, workspace, type="write_file", spec="x", output_path="notes.txt")
    outside = tmp_path / "outside.txt"
    (workspace / "notes.txt").symlink_to(outside)
    with pytest.raises(PolicyRefused, match="outside the workspace"):
        Run(store)(task)
    assert not outside.exists() and llm_env.openai.requests == []


def test_output_path_outside_is_refused_at_submit(store: SqliteStore, workspace: Path) -> None:
    with pytest.raises(PolicyRefused):
        _submit(store, workspace, type="write_file", spec="x", output_path="../x.txt")


# -- context files and steering -----------------------------------------------------------------
def test_context_caps_name_the_file_and_nothing_is_sent(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    (workspace / "big.py").write_text("x" * 2000)
    (workspace / "a.py").write_text("a" * 600)
    (workspace / "b.py").write_text("b" * 600)
    one = _submit(store, workspace, type="review", spec="x", context_files=["big.py"])
    with pytest.raises(InvalidInput, match=r"big.py is 2000 bytes; max_context_file_bytes is 1000"):
        Run(store, max_context_file_bytes=1000)(one)
    two = _submit(store, workspace, type="review", spec="x", context_files=["a.py", "b.py"])
    with pytest.raises(InvalidInput, match=r"reach 1200 bytes with b.py; max_context_total_bytes"):
        Run(store, max_context_file_bytes=1000, max_context_total_bytes=1000)(two)
    (workspace / "bin.dat").write_bytes(b"\xff\xfe\x00")
    three = _submit(store, workspace, type="review", spec="x", context_files=["bin.dat"])
    with pytest.raises(InvalidInput, match="bin.dat is not UTF-8 text"):
        Run(store)(three)
    assert llm_env.openai.requests == [] and llm_env.bedrock.requests == []


def test_steering_file_content_reaches_the_provider(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    (workspace / "CLAUDE.md").write_text("RULE-42: tabs, never spaces.\n")
    (workspace / "AGENTS.md").write_text("AGENTS-RULE\n")
    task = _submit(store, workspace, type="review", spec="x")
    run = Run(store)
    run(task)
    system = _system(llm_env.openai)
    assert system.startswith("Project rules") and "RULE-42: tabs, never spaces." in system
    assert "AGENTS-RULE" not in system
    assert "rules from CLAUDE.md" in run.log.getvalue()


def test_configured_rules_files_and_clinerules_directory(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path, tmp_path: Path
) -> None:
    llm_env.without_aws()
    (workspace / ".clinerules").mkdir()
    (workspace / ".clinerules" / "01-style.md").write_text("STYLE-RULE\n")
    (workspace / ".clinerules" / "02-tests.md").write_text("TEST-RULE\n")
    shared = tmp_path / "team-rules.md"
    shared.write_text("TEAM-RULE\n")
    _ = Run(store)(_submit(store, workspace, type="review", spec="x"))
    assert "STYLE-RULE\n\nTEST-RULE" in _system(llm_env.openai, 0)
    Run(store, rules_files=(str(shared), "missing.md"))(
        _submit(store, workspace, type="review", spec="x")
    )
    assert "TEAM-RULE" in _system(llm_env.openai, 1) and "STYLE-RULE" not in _system(
        llm_env.openai, 1
    )
    with pytest.raises(InvalidInput, match="max_rules_bytes is 5"):
        Run(store, max_rules_bytes=5)(_submit(store, workspace, type="review", spec="x"))


# -- routing ------------------------------------------------------------------------------------
def test_auto_uses_bedrock_when_aws_credentials_exist(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    (workspace / "CLAUDE.md").write_text("BEDROCK-RULE\n")
    task = _submit(store, workspace, type="review", spec="x")
    Run(store)(task)
    assert llm_env.bedrock.model_ids() == [SONNET] and llm_env.openai.requests == []
    assert "BEDROCK-RULE" in _system(llm_env.bedrock)
    done = store.get(task.id)
    assert done.model_used == SONNET
    assert done.cost_usd == pytest.approx((13 * 3 + 5 * 15) / 1e6)  # global: no markup


@pytest.mark.parametrize(
    "error",
    ["AccessDeniedException", "ResourceNotFoundException", "UnrecognizedClientException"],
)
def test_auto_falls_back_to_openai_on_access_errors(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path, error: str
) -> None:
    llm_env.bedrock.reply_error(403, error, "You don't have access to the model")
    task = _submit(store, workspace, type="review", spec="x")
    run = Run(store)
    assert run(task).result == "ok"
    assert len(llm_env.bedrock.requests) == 1 and len(llm_env.openai.requests) == 1
    assert store.get(task.id).model_used == "gpt-4o-mini"
    assert "falling back to openai:gpt-4o-mini" in run.log.getvalue()


def test_auto_falls_back_after_throttling_retries_run_out(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    for _ in range(2):
        llm_env.bedrock.reply_error(429, "ThrottlingException", "Too many requests")
    task = _submit(store, workspace, type="review", spec="x")
    run = Run(store, llm_max_attempts=2, llm_retry_initial_seconds=0.01)
    run(task)
    assert len(llm_env.bedrock.requests) == 2 and len(llm_env.openai.requests) == 1
    assert len(run.sleeps) == 1


def test_no_fallback_on_validation_exception(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.bedrock.reply_error(400, "ValidationException", "maxTokens exceeds the model limit")
    task = _submit(store, workspace, type="review", spec="x")
    with pytest.raises(ProviderError, match="ValidationException: maxTokens exceeds"):
        Run(store)(task)
    assert len(llm_env.bedrock.requests) == 1 and llm_env.openai.requests == []


def test_fallback_failure_reports_both_errors(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.bedrock.reply_error(403, "ExpiredTokenException", "The security token expired")
    llm_env.openai.reply_error(400, "bad model")
    task = _submit(store, workspace, type="review", spec="x")
    with pytest.raises(
        ProviderError, match="openai 400.*bad model.*after falling back from.*ExpiredTokenException"
    ):
        Run(store)(task)


@pytest.mark.parametrize(
    ("fields", "expected_model"),
    [
        ({"model": "gpt-4o"}, "gpt-4o"),
        ({"model": "fast"}, "o3-mini"),
    ],
)
def test_named_models_and_large_context_go_straight_to_openai(
    llm_env: LlmEnv,
    store: SqliteStore,
    workspace: Path,
    fields: dict[str, Any],
    expected_model: str,
) -> None:
    task = _submit(store, workspace, type="review", spec="x", **fields)
    Run(store, aliases={"fast": "o3-mini"})(task)
    assert llm_env.bedrock.requests == []
    assert llm_env.openai.bodies()[0]["model"] == expected_model
    assert store.get(task.id).model_used == expected_model


# -- budget and secrets ---------------------------------------------------------------------------
def test_budget_reached_refuses_before_any_call(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    spent = _submit(store, workspace, command="true")
    store.claim(1, "test", {})
    store.record_usage(spent.id, tokens_in=1, tokens_out=1, cost_usd=0.75, model_used="gpt-4o")
    store.finish(spent.id, State.COMPLETED, exit_code=0)
    task = _submit(store, workspace, type="review", spec="x")
    Run(store, max_daily_cost_usd=1.0)(task)  # 0.75 < 1.0: runs
    refused = r"\$0.7500 spent today .* max_daily_cost_usd is \$0.50"
    with pytest.raises(BudgetExceeded, match=refused):
        Run(store, max_daily_cost_usd=0.5)(task)
    assert len(llm_env.openai.requests) + len(llm_env.bedrock.requests) == 1


def test_no_secret_reaches_the_error_log_or_db(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path, offload_home: Path
) -> None:
    llm_env.without_aws()
    key = os.environ["OPENAI_API_KEY"]
    llm_env.openai.reply_error(401, f"Incorrect API key provided: {key}. Also Bearer {key}")
    task = _submit(store, workspace, type="write_file", spec="x", output_path="o.txt")
    assert worker_main([task.id]) == 1
    failed = store.get(task.id)
    assert failed.error and "Incorrect API key provided" in failed.error
    db = (offload_home / "queue.db").read_bytes()
    for secret in llm_env.secrets:
        assert secret not in failed.error and secret.encode() not in db


# -- the entry point -------------------------------------------------------------------------------
def test_worker_main_records_results_and_exit_codes(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    llm_env.without_aws()
    ok = _submit(store, workspace, type="write_file", spec="x", output_path="ok.txt")
    assert worker_main([ok.id]) == 0
    assert store.get(ok.id).files_written == (str(workspace / "ok.txt"),)
    assert (workspace / "ok.txt").read_text() == "ok\n"
    llm_env.openai.reply_text("no blocks here")
    bad = _submit(store, workspace, type="code_task", spec="x")
    assert worker_main([bad.id]) == 1
    assert "no <file" in (store.get(bad.id).error or "")
    out = capsys.readouterr().out
    assert "[1/3] preparing" in out and "[2/3] calling openai gpt-4o-mini" in out
    assert "the answer was:\nno blocks here" in out
    assert worker_main(["ffffffffffff"]) == 1
    assert worker_main([]) == 2


def test_worker_records_an_invalid_config_as_the_reason(
    store: SqliteStore, workspace: Path, offload_home: Path
) -> None:
    task = _submit(store, workspace, type="review", spec="x")
    (offload_home / "config.toml").write_text("no_such_setting = 1\n")
    assert worker_main([task.id]) == 1
    assert "unknown setting(s) no_such_setting" in (store.get(task.id).error or "")
