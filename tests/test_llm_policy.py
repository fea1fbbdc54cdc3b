"""The pure parts of LLM tasks, tested with tables: routing, the retry policy, pricing,
secret scrubbing, answer contracts, atomic writes, and the documented configuration."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from offload import records
from offload.config import Settings, load_settings
from offload.errors import ConfigError, InvalidInput, PolicyRefused
from offload.workers import files as files_module
from offload.workers.answers import AnswerRejected, file_content, parse_files
from offload.workers.files import FileWrite, WriteFailed, write_files
from offload.workers.providers import ErrorKind, ProviderError, Usage
from offload.workers.providers.pricing import load_prices
from offload.workers.providers.retry import RetryPolicy, call_with_retries
from offload.workers.providers.routing import Route, plan_route
from offload.workers.redact import remember_secrets, scrub

SONNET = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"  # the default: a profile


def _settings(**kw: object) -> Settings:
    return records.replace(Settings(), **kw)


# -- routing ----------------------------------------------------------------------------------
AWS = lambda: True  # noqa: E731
NO_AWS = lambda: False  # noqa: E731


@pytest.mark.parametrize(
    ("model", "large", "aws", "primary", "fallback"),
    [
        (None, False, True, f"bedrock:{SONNET}", "openai:gpt-4o-mini"),
        ("auto", False, False, "openai:gpt-4o-mini", None),
        ("gpt-4o", False, True, "openai:gpt-4o", None),
        ("o3-mini", False, True, "openai:o3-mini", None),
        ("fast", False, True, "openai:gpt-4o", None),
        ("sonnet", False, False, f"bedrock:{SONNET}", None),
        (
            "us.anthropic.claude-haiku-4-5-20251001-v1:0",
            False,
            False,
            "bedrock:us.anthropic.claude-haiku-4-5-20251001-v1:0",
            None,
        ),
        ("llama3.1:8b", False, True, "openai:llama3.1:8b", None),
        ("bedrock:custom-model", False, False, "bedrock:custom-model", None),
        # large_context's default `auto`: Claude with the 1M beta on Bedrock, else gpt-4.1
        ("gpt-4o", True, True, f"bedrock:{SONNET}", "openai:gpt-4.1"),
        ("gpt-4o", True, False, "openai:gpt-4.1", None),
        ("smart", False, True, f"bedrock:{SONNET}", "openai:gpt-4o-mini"),
    ],
)
def test_routing_table(
    model: str | None, large: bool, aws: bool, primary: str, fallback: str | None
) -> None:
    settings = _settings(aliases={"fast": "openai:gpt-4o", "sonnet": SONNET, "smart": "auto"})
    plan = plan_route(model, large, settings, AWS if aws else NO_AWS)
    assert str(plan.primary) == primary
    assert (str(plan.fallback) if plan.fallback else None) == fallback


def test_credentials_are_looked_up_only_for_auto() -> None:
    def boom() -> bool:
        raise AssertionError("credentials checked for a named model")

    assert plan_route("gpt-4o", False, Settings(), boom).primary == Route("openai", "gpt-4o")


def test_routing_config_errors_are_clear() -> None:
    with pytest.raises(ConfigError, match="aliases loop"):
        plan_route("a", False, _settings(aliases={"a": "b", "b": "a"}), NO_AWS)
    with pytest.raises(ConfigError, match="use one of bedrock, openai"):
        plan_route("x", False, _settings(model_routes={"*": "azure"}), NO_AWS)
    with pytest.raises(InvalidInput, match="names no model"):
        plan_route("openai:", False, Settings(), NO_AWS)


# -- retries ---------------------------------------------------------------------------------
def _flaky(errors: list[ProviderError]) -> tuple[list[int], object]:
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return "done"

    return calls, call


def test_retries_throttling_then_succeeds_with_backoff() -> None:
    waits: list[float] = []
    throttled = ProviderError("slow", provider="openai", kind=ErrorKind.THROTTLED)
    calls, call = _flaky([throttled, throttled])
    policy = RetryPolicy(max_attempts=5, initial_seconds=1.0, max_seconds=30.0)
    assert call_with_retries(call, policy, sleep=waits.append) == "done"
    assert len(calls) == 3 and len(waits) == 2
    assert 0 <= waits[0] <= 1.0 and 0 <= waits[1] <= 2.0


def test_never_retries_invalid_and_gives_up_after_max_attempts() -> None:
    invalid = ProviderError("bad", provider="openai", kind=ErrorKind.INVALID)
    calls, call = _flaky([invalid])
    with pytest.raises(ProviderError, match="bad"):
        call_with_retries(call, RetryPolicy(), sleep=lambda s: None)
    assert len(calls) == 1
    transient = [ProviderError("down", provider="bedrock", kind=ErrorKind.TRANSIENT)] * 9
    calls, call = _flaky(list(transient))
    with pytest.raises(ProviderError, match="down"):
        call_with_retries(call, RetryPolicy(max_attempts=3), sleep=lambda s: None)
    assert len(calls) == 3


@pytest.mark.parametrize(
    ("attempt", "retry_after", "expected_max"),
    [(1, None, 0.5), (3, None, 2.0), (10, None, 4.0), (1, 3.0, 3.0), (1, 99.0, 4.0)],
)
def test_wait_is_jittered_exponential_capped_and_honours_retry_after(
    attempt: int, retry_after: float | None, expected_max: float
) -> None:
    policy = RetryPolicy(max_attempts=10, initial_seconds=0.5, max_seconds=4.0)
    error = ProviderError("x", provider="openai", kind=ErrorKind.THROTTLED, retry_after=retry_after)
    assert policy.wait_seconds(attempt, error, rand=lambda: 1.0) == expected_max
    if retry_after is None:
        assert policy.wait_seconds(attempt, error, rand=lambda: 0.0) == 0.0


# -- prices ----------------------------------------------------------------------------------
def test_prices_file_is_dated_and_prices_known_models() -> None:
    table = load_prices()
    assert table.as_of == "2025-11"
    usage = Usage(tokens_in=1_000_000, tokens_out=1_000_000)
    assert table.cost("openai", "gpt-4o", usage) == pytest.approx(12.50)
    assert table.cost("openai", "gpt-4o-mini", usage) == pytest.approx(0.75)
    assert table.cost("openai", "o3-mini", usage) == pytest.approx(5.50)
    assert table.cost("openai", "gpt-4.1", usage) == pytest.approx(10.00)
    assert table.cost("openai", "x", usage, "gpt-4o-2024-08-06") == pytest.approx(12.50)
    assert table.cost("bedrock", SONNET, usage) == pytest.approx(18.00)
    assert table.cost("bedrock", SONNET.replace("global.", "us."), usage) == pytest.approx(19.80)
    # the refreshed table: mainstream models, each entry with its source and date
    for model, total in [
        ("gpt-5", 11.25),
        ("gpt-5-mini", 2.25),
        ("gpt-4.1-nano", 0.50),
        ("o3", 10.00),
        ("o4-mini", 5.50),
    ]:
        assert table.cost("openai", model, usage) == pytest.approx(total), model
    assert table.cost("bedrock", "global.anthropic.claude-opus-4-5-20251101-v1:0", usage) == (
        pytest.approx(30.00)
    )
    assert table.cost("bedrock", "global.anthropic.claude-opus-4-1-20250805-v1:0", usage) == (
        pytest.approx(90.00)
    )
    assert table.cost("bedrock", "amazon.nova-pro-v1:0", usage) == pytest.approx(4.40)
    import json
    from importlib import resources

    raw = json.loads(
        resources.files("offload.workers.providers").joinpath("prices.json").read_text()
    )
    assert all(entry.get("source") and entry.get("as_of") for entry in raw["models"].values())
    assert table.cost("bedrock", "global.anthropic.claude-haiku-4-5-20251001-v1:0", usage) == (
        pytest.approx(6.00)
    )


def test_unknown_model_costs_none_and_reported_cost_wins() -> None:
    table = load_prices()
    usage = Usage(tokens_in=5000, tokens_out=100)
    assert table.cost("openai", "my-local-model", usage) is None
    assert (
        table.cost("openai", "my-local-model", dataclasses.replace(usage, reported_cost_usd=0.0))
        == 0.0
    )
    assert table.cost("openai", "gpt-4o", dataclasses.replace(usage, reported_cost_usd=0.5)) == 0.5


def test_cached_tokens_are_priced_at_the_cached_rate() -> None:
    table = load_prices()
    usage = Usage(tokens_in=1_000_000, tokens_out=0, cached_in=1_000_000)
    assert table.cost("openai", "gpt-4o", usage) == pytest.approx(1.25)


def test_config_prices_add_and_override() -> None:
    table = load_prices(
        {"llama3.1:8b": {"input": 0, "output": 0}, "gpt-4o": {"input": 1, "output": 1}}
    )
    usage = Usage(tokens_in=1_000_000, tokens_out=1_000_000)
    assert table.cost("openai", "llama3.1:8b", usage) == 0.0
    assert table.cost("openai", "gpt-4o", usage) == pytest.approx(2.0)
    mine = load_prices({f"us.{SONNET}": {"input": 1, "output": 1}})
    assert mine.cost("bedrock", f"us.{SONNET}", usage) == pytest.approx(2.0)  # no markup
    with pytest.raises(ConfigError, match="needs numeric input and output"):
        load_prices({"bad": {"input": "free"}})


# -- secrets -----------------------------------------------------------------------------------
def test_scrub_masks_registered_values_and_key_formats() -> None:
    remember_secrets({"MY_SERVICE_TOKEN": "tok-very-secret-value", "PATH": "/usr/bin:/bin"})
    text = (
        "Incorrect API key provided: sk-proj-abcdefghijklmnop; token tok-very-secret-value; "
        "Authorization: Bearer abcdefghijk123; AKIAABCDEFGHIJKLMNOP; api_key=zzzzzzzzzz; /usr/bin"
    )
    cleaned = scrub(text)
    for secret in (
        "sk-proj-abcdefghijklmnop",
        "tok-very-secret-value",
        "abcdefghijk123",
        "AKIAABCDEFGHIJKLMNOP",
        "zzzzzzzzzz",
    ):
        assert secret not in cleaned
    assert "/usr/bin" in cleaned and "max_tokens: 8192" in scrub("max_tokens: 8192")


# -- answers and writes ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("answer", "content"),
    [
        ("print(1)", "print(1)\n"),
        ("```python\nprint(1)\n```", "print(1)\n"),
        ("```\nx\n```\n", "x\n"),
        ("# Title\n\n```bash\nls\n```\n", "# Title\n\n```bash\nls\n```\n"),
    ],
)
def test_single_file_answer_unwraps_one_outer_fence(answer: str, content: str) -> None:
    assert file_content(answer) == content


def test_multi_file_answer_parses_blocks_and_summary() -> None:
    answer = (
        '<file path="a.py">\nA = 1\n</file>\n'
        '<file path="pkg/b.py">\n```python\nB = 2\n```\n</file>\n'
        "Added a and b."
    )
    parsed = parse_files(answer)
    assert parsed.files == [FileWrite("a.py", "A = 1\n"), FileWrite("pkg/b.py", "B = 2\n")]
    assert parsed.summary == "Added a and b."
    with pytest.raises(AnswerRejected, match="no <file"):
        parse_files("I changed nothing")
    with pytest.raises(AnswerRejected, match="empty"):
        file_content("\n\n")


def test_writes_are_all_or_nothing_on_a_bad_path(workspace: Path) -> None:
    roots = [workspace]
    writes = [
        FileWrite("ok.txt", "fine\n"),
        FileWrite("new/dir/x.txt", "x\n"),
        FileWrite("../escape.txt", "bad\n"),
    ]
    with pytest.raises(PolicyRefused):
        write_files(writes, roots, workspace)
    assert not (workspace / "ok.txt").exists() and not (workspace / "new").exists()
    assert not (workspace.parent / "escape.txt").exists()
    with pytest.raises(InvalidInput, match="twice"):
        write_files([FileWrite("a", "1"), FileWrite("./a", "2")], roots, workspace)


def test_writes_roll_back_when_a_rename_fails(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workspace / "keep.txt").write_text("old\n")
    os.chmod(workspace / "keep.txt", 0o640)
    real_replace = os.replace
    seen: list[str] = []

    def failing_replace(src: str, dst: Path) -> None:
        seen.append(str(dst))
        if len(seen) == 2:
            raise OSError(28, "No space left on device", str(dst))
        real_replace(src, dst)

    writes = [FileWrite("keep.txt", "new\n"), FileWrite("sub/other.txt", "o\n")]
    with monkeypatch.context() as patch:
        patch.setattr(files_module.os, "replace", failing_replace)
        with pytest.raises(WriteFailed, match="nothing was written"):
            write_files(writes, [workspace], workspace)
    assert (workspace / "keep.txt").read_text() == "old\n"
    assert sorted(p.name for p in workspace.iterdir()) == ["keep.txt"]
    write_files(writes, [workspace], workspace)
    assert (workspace / "keep.txt").read_text() == "new\n"
    assert oct((workspace / "keep.txt").stat().st_mode & 0o777) == oct(0o640)


# -- configuration ------------------------------------------------------------------------------
def _readme_toml_blocks() -> list[str]:
    root = Path(__file__).resolve().parent.parent
    readme = "".join((root / name).read_text() for name in ("README.md", "docs/configuration.md"))
    return [block.split("```")[0] for block in readme.split("```toml\n")[1:]]


@pytest.mark.parametrize("index", range(len(_readme_toml_blocks())))
def test_every_config_example_in_the_readme_loads(offload_home: Path, index: int) -> None:
    offload_home.mkdir(mode=0o700, exist_ok=True)
    (offload_home / "config.toml").write_text(_readme_toml_blocks()[index])
    assert load_settings().home == offload_home


def test_the_documented_config_example_loads_and_routes(offload_home: Path) -> None:
    example = next(b for b in _readme_toml_blocks() if "[aliases]" in b)
    offload_home.mkdir(mode=0o700, exist_ok=True)
    (offload_home / "config.toml").write_text(example)
    settings = load_settings()
    assert settings.openai_base_url == "http://127.0.0.1:11434/v1"
    assert settings.max_daily_cost_usd == 5.0 and settings.rules_files == ()
    assert settings.model_routes == Settings().model_routes
    sonnet = plan_route("sonnet", False, settings, NO_AWS).primary
    assert sonnet == Route("bedrock", SONNET)
    assert plan_route("local", False, settings, AWS).primary == Route("openai", "llama3.1:8b")
    assert str(plan_route("smart", False, settings, AWS).fallback) == "openai:gpt-4o-mini"
    usage = Usage(tokens_in=1000, tokens_out=1000)
    assert load_prices(settings.prices).cost("openai", "llama3.1:8b", usage) == 0.0


def test_aliases_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLOAD_ALIASES", "fast=openai:gpt-4o-mini,big=bedrock:x.y")
    settings = load_settings()
    assert plan_route("big", False, settings, NO_AWS).primary == Route("bedrock", "x.y")


def test_sdks_are_imported_only_when_a_provider_is_built() -> None:
    code = (
        "import sys, offload.cli, offload.workers.llm, offload.workers.__main__\n"
        "loaded = [m for m in ('openai', 'boto3', 'botocore') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_an_answer_cannot_write_into_the_data_dir(tmp_path: Path) -> None:
    from offload.errors import PolicyRefused
    from offload.workers.files import FileWrite, write_files

    home = tmp_path / "home"
    home.mkdir()
    config = home / "config.toml"
    with pytest.raises(PolicyRefused, match="data directory"):
        write_files(
            [FileWrite("ok.txt", "fine\n"), FileWrite("home/config.toml", "allow = []\n")],
            [tmp_path],
            tmp_path,
            forbidden=[home],
        )
    assert not config.exists() and not (tmp_path / "ok.txt").exists()  # all or nothing


def test_a_refusal_just_before_the_renames_leaves_nothing(tmp_path: Path) -> None:
    from offload.workers.files import replace_all

    tmp_path = tmp_path / "target"
    tmp_path.mkdir()
    existing = tmp_path / "kept.txt"
    existing.write_text("old\n")
    fresh = tmp_path / "new" / "dir" / "file.txt"

    def someone_changed_a_target() -> None:
        raise RuntimeError("a target changed since it was checked")

    with pytest.raises(RuntimeError, match="changed since"):
        replace_all([(existing, b"new\n"), (fresh, b"x\n")], someone_changed_a_target)
    assert existing.read_text() == "old\n" and not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]  # no temporaries left
