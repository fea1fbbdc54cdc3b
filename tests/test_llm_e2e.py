"""LLM tasks end to end: a real supervisor spawns `python -m offload.workers <id>`, whose
real openai/boto3 clients talk to the loopback fakes. Every task type, the issue's two seed
batches through the CLI, a 400, a budget refusal, and a cancel mid-request."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import marked_processes, wait_until
from fakes import FakeBedrock, FakeOpenAI, Reply, Request
from fakes.environment import LlmEnv
from offload.clock import now_ms
from offload.config import load_settings
from offload.progress import parse_progress
from offload.queue.models import State, Task
from offload.queue.sqlite import SqliteStore
from offload.submission import Submitter

pytest_plugins = ["fakes.fixtures"]

SONNET = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"  # the default: a profile
DEADLINE_SECONDS = 90.0
ANSWERS = {
    "write_file": "# Notes\n\nNothing yet.",
    "test_gen": "```python\ndef test_add():\n    assert 1 + 1 == 2\n```",
    "docs": "# API\n\n`add(a, b)` adds.",
    "code_task": (
        '<file path="src/new.py">\nNEW = 1\n</file>\n'
        '<file path="src/pkg/util.py">\nUTIL = 2\n</file>\nAdded two modules.'
    ),
    "refactor": '<file path="src/app.py">\ndef add(a, b):\n    return a + b\n</file>',
    "review": "No issues in src/app.py.",
}


def _spec_of(request: Request) -> str:
    body = request.json() or {}
    if "messages" in body and "content" in body["messages"][-1]:
        content = body["messages"][-1]["content"]
        return content if isinstance(content, str) else content[0]["text"]
    return ""


def _submit(store: SqliteStore, workspace: Path, raws: list[dict[str, Any]]) -> list[Task]:
    submitter = Submitter.for_workspace(load_settings(), workspace)
    return store.submit([submitter.build(raw, lambda i: i) for raw in raws])


def _wait_final(store: SqliteStore, ids: list[str]) -> list[Task]:
    def final() -> list[Task] | None:
        tasks = [store.get(i) for i in ids]
        return tasks if all(t.is_final for t in tasks) else None

    found: list[Task] = wait_until(final, timeout=DEADLINE_SECONDS, interval=0.05, what="tasks")
    return found


def _by_type_responder(fake: FakeOpenAI) -> Callable[[Request], Reply]:
    """Answers by the task type named in the spec; the docs task is rate-limited once."""
    lock = threading.Lock()
    limited: list[str] = []

    def respond(request: Request) -> Reply:
        spec = _spec_of(request)
        kind = next(k for k in ANSWERS if f"do the {k} job" in spec)
        with lock:
            if kind == "docs" and not limited:
                limited.append(kind)
                return fake.rate_limited(retry_after_ms=1)
        return fake.text(ANSWERS[kind], prompt_tokens=1000, completion_tokens=100)

    return respond


def _assert_no_secret(env: LlmEnv, home: Path) -> None:
    blobs = [p.read_bytes() for p in (home / "logs").iterdir()]
    blobs.append((home / "queue.db").read_bytes())
    for blob in blobs:
        for secret in env.secrets:
            assert secret.encode() not in blob


def test_every_task_type_runs_end_to_end(
    llm_env: LlmEnv,
    store: SqliteStore,
    workspace: Path,
    start_supervisor: Callable[..., Any],
    offload_home: Path,
) -> None:
    llm_env.without_aws()  # auto -> OpenAI
    (workspace / "CLAUDE.md").write_text("RULE-E2E: prefer small functions.\n")
    (workspace / "src").mkdir()
    (workspace / "src/app.py").write_text("def add(a,b): return a+b\n")
    llm_env.openai.respond_with(_by_type_responder(llm_env.openai))
    outputs = {"write_file": "NOTES.md", "test_gen": "tests/test_app.py", "docs": "docs/api.md"}
    raws = [
        {
            "type": kind,
            "spec": f"do the {kind} job",
            "context_files": ["src/app.py"],
            **({"output_path": outputs[kind]} if kind in outputs else {}),
        }
        for kind in ANSWERS
    ]
    tasks = _submit(store, workspace, raws)
    start_supervisor(max_concurrent="2", openai_base_url_is_openai="1")
    done = {t.type: t for t in _wait_final(store, [t.id for t in tasks])}

    assert {k: t.state for k, t in done.items()} == dict.fromkeys(ANSWERS, State.COMPLETED)
    assert (workspace / "NOTES.md").read_text() == "# Notes\n\nNothing yet.\n"
    assert (workspace / "tests/test_app.py").read_text().startswith("def test_add():")
    assert (workspace / "docs/api.md").read_text().startswith("# API")
    assert (workspace / "src/new.py").read_text() == "NEW = 1\n"
    assert (workspace / "src/pkg/util.py").read_text() == "UTIL = 2\n"
    assert (workspace / "src/app.py").read_text().startswith("def add(a, b):\n")
    assert done["review"].result == "No issues in src/app.py."
    assert done["code_task"].files_written == (
        str(workspace / "src/new.py"),
        str(workspace / "src/pkg/util.py"),
    )
    # Every request carried the steering rules; the docs task was retried once, billed once.
    bodies = llm_env.openai.bodies()
    assert len(bodies) == 7
    assert all("RULE-E2E" in b["messages"][0]["content"] for b in bodies)
    unit_cost = (1000 * 0.15 + 100 * 0.60) / 1e6
    for task in done.values():
        assert (task.tokens_in, task.tokens_out, task.model_used) == (1000, 100, "gpt-4o-mini")
        assert task.cost_usd == pytest.approx(unit_cost)
    stats = store.stats(now_ms())
    assert stats.cost_today_usd == pytest.approx(6 * unit_cost)
    assert stats.days[-1].by_model == {"gpt-4o-mini": pytest.approx(6 * unit_cost)}
    assert stats.days[-1].by_type == {k: pytest.approx(unit_cost) for k in ANSWERS}
    log = Path(done["docs"].log_path or "").read_text()
    assert "[1/3] preparing: rules from CLAUDE.md; 1 context file(s)" in log
    assert "retrying in" in log and "[3/3] writing 1 file(s)" in log
    last = parse_progress(log)  # what the supervisor shows: no false markers on the way
    assert last is not None and last.fraction == 1.0
    assert [parse_progress(line) for line in log.splitlines() if "retrying" in line] == [None]
    _assert_no_secret(llm_env, offload_home)


SEED_BATCH = [
    {
        "task_type": "test_gen",
        "spec": "Write pytest suite for src/auth/tokens.py covering all public functions",
        "output_path": "tests/test_tokens.py",
        "context_files": ["src/auth/tokens.py"],
        "priority": 3,
    },
    {
        "task_type": "write_file",
        "spec": "Write a CHANGELOG entry for the auth refactor in conventional commits format",
        "output_path": "CHANGELOG.md",
        "priority": 5,
    },
]


def _seed_responder(fake: FakeBedrock) -> Callable[[Request], Reply]:
    def respond(request: Request) -> Reply:
        if "pytest suite" in _spec_of(request):
            text = "from auth.tokens import issue\n\n\ndef test_issue():\n    assert issue('u')\n"
        else:
            text = "## Unreleased\n\n- refactor(auth): split token handling\n"
        return fake.text(text, input_tokens=2000, output_tokens=300)

    return respond


def test_seed_batches_through_the_cli_on_bedrock(
    llm_env: LlmEnv, cli: Callable[..., Any], workspace: Path, start_supervisor: Callable[..., Any]
) -> None:
    (workspace / "src/auth").mkdir(parents=True)
    (workspace / "src/auth/tokens.py").write_text("def issue(user):\n    return 'tok-' + user\n")
    llm_env.bedrock.respond_with(_seed_responder(llm_env.bedrock))
    start_supervisor(openai_base_url_is_openai="1")
    submitted = cli("submit", "--batch", "-", input="\n".join(json.dumps(r) for r in SEED_BATCH))
    assert submitted.returncode == 0, submitted.stderr
    ids = submitted.stdout.split()
    assert len(ids) == 2
    waited = cli("wait", *ids, "--timeout", str(DEADLINE_SECONDS))
    assert waited.returncode == 0, waited.stdout + waited.stderr
    shown = [json.loads(cli("show", i, "--json").stdout) for i in ids]
    assert [s["state"] for s in shown] == ["completed", "completed"]
    assert (workspace / "tests/test_tokens.py").read_text().startswith("from auth.tokens import")
    assert "refactor(auth)" in (workspace / "CHANGELOG.md").read_text()
    cost = (2000 * 3 + 300 * 15) / 1e6  # Sonnet 4.5, global profile: no regional markup
    for task in shown:
        assert task["model_used"] == SONNET
        assert (task["tokens_in"], task["tokens_out"]) == (2000, 300)
        assert task["cost_usd"] == pytest.approx(cost)
    assert llm_env.bedrock.model_ids() == [SONNET, SONNET] and llm_env.openai.requests == []
    prompts = [b["messages"][0]["content"][0]["text"] for b in llm_env.bedrock.bodies()]
    [test_gen_prompt] = [p for p in prompts if "pytest suite" in p]
    assert '<context path="src/auth/tokens.py">\ndef issue(user):' in test_gen_prompt
    stats = json.loads(cli("stats", "--json").stdout)
    assert stats["cost_today_usd"] == pytest.approx(2 * cost)


def test_bad_request_fails_and_cancel_kills_a_waiting_task(
    llm_env: LlmEnv,
    store: SqliteStore,
    workspace: Path,
    cli: Callable[..., Any],
    start_supervisor: Callable[..., Any],
) -> None:
    llm_env.without_aws()
    fake = llm_env.openai

    def respond(request: Request) -> Reply:
        if "slow one" in _spec_of(request):
            return fake.text("never sent", delay=60)
        return fake.error(400, "Invalid 'messages[1].content': string too long.")

    fake.respond_with(respond)
    bad, slow = _submit(
        store,
        workspace,
        [
            {"type": "write_file", "spec": "bad one", "output_path": "bad.txt"},
            {"type": "review", "spec": "slow one"},
        ],
    )
    start_supervisor(max_concurrent="2", openai_base_url_is_openai="1")
    [failed] = _wait_final(store, [bad.id])
    assert failed.state is State.FAILED
    assert failed.error == (
        "openai 400 invalid_request_error: Invalid 'messages[1].content': string too long."
    )
    assert not (workspace / "bad.txt").exists()
    wait_until(lambda: len(fake.requests) >= 2, timeout=DEADLINE_SECONDS, what="slow request")
    assert len(fake.requests) == 2  # the 400 was not retried
    started = time.monotonic()
    assert cli("cancel", slow.id).returncode == 0
    [cancelled] = _wait_final(store, [slow.id])
    assert cancelled.state is State.CANCELLED
    assert time.monotonic() - started < 5.0
    assert marked_processes(slow.id) == []


def test_budget_refusal_end_to_end(
    llm_env: LlmEnv,
    store: SqliteStore,
    workspace: Path,
    start_supervisor: Callable[..., Any],
) -> None:
    [spent] = _submit(store, workspace, [{"command": "true"}])
    store.claim(1, "earlier", {})
    store.record_usage(spent.id, tokens_in=10, tokens_out=10, cost_usd=2.5, model_used="gpt-4o")
    store.finish(spent.id, State.COMPLETED, exit_code=0)
    [task] = _submit(store, workspace, [{"type": "review", "spec": "x"}])
    start_supervisor(max_daily_cost_usd="2.0", openai_base_url_is_openai="1")
    [refused] = _wait_final(store, [task.id])
    assert refused.state is State.FAILED
    assert refused.error and refused.error.startswith("daily LLM budget reached: $2.5000 spent")
    assert llm_env.openai.requests == [] and llm_env.bedrock.requests == []
