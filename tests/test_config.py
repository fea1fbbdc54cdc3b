"""Reading and validating Settings: every numeric setting is finite and in its range."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from offload.config import Settings, load_settings
from offload.errors import ConfigError


def _load(tmp_path: Path, **env: str) -> Settings:
    environ = {"OFFLOAD_HOME": str(tmp_path / "home")}
    environ.update({f"OFFLOAD_{name.upper()}": value for name, value in env.items()})
    return load_settings(environ=environ)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "grace_seconds",
            "nan",
            "grace_seconds = nan is invalid: must be a finite number of seconds ≥ 0",
        ),
        ("grace_seconds", "inf", "grace_seconds = inf is invalid: must be a finite number"),
        ("grace_seconds", "-1", "grace_seconds = -1.0 is invalid"),
        (
            "poll_seconds",
            "-1",
            "poll_seconds = -1.0 is invalid: must be a finite number of seconds > 0",
        ),
        ("poll_seconds", "nan", "poll_seconds = nan is invalid"),
        (
            "poll_seconds",
            "0",
            "poll_seconds = 0.0 is invalid: must be a finite number of seconds > 0",
        ),
        (
            "default_timeout_seconds",
            "-5",
            "default_timeout_seconds = -5.0 is invalid: must be "
            "a finite number of seconds > 0 (or unset for none)",
        ),
        ("default_timeout_seconds", "0", "default_timeout_seconds = 0.0 is invalid"),
        ("default_timeout_seconds", "inf", "default_timeout_seconds = inf is invalid"),
        (
            "default_group_limit",
            "0",
            "default_group_limit = 0 is invalid: must be a whole number ≥ 1",
        ),
        ("max_concurrent", "0", "max_concurrent = 0 is invalid: must be a whole number ≥ 1"),
        (
            "idle_exit_seconds",
            "nan",
            "idle_exit_seconds = nan is invalid: must be a finite number of seconds ≥ 0",
        ),
        ("idle_exit_seconds", "-1", "idle_exit_seconds = -1.0 is invalid"),
        (
            "max_open_files",
            "0",
            "max_open_files = 0 is invalid: must be a whole number ≥ 1 (or unset for none)",
        ),
        ("max_address_space_mb", "-1", "max_address_space_mb = -1 is invalid"),
        ("max_cpu_seconds", "0", "max_cpu_seconds = 0 is invalid"),
        ("nice", "20", "nice = 20 is invalid: must be a whole number from 0 to 19"),
        ("nice", "-1", "nice = -1 is invalid"),
        ("max_rules_bytes", "0", "max_rules_bytes = 0 is invalid"),
        ("max_context_file_bytes", "-1", "max_context_file_bytes = -1 is invalid"),
        ("max_context_total_bytes", "0", "max_context_total_bytes = 0 is invalid"),
        ("max_output_tokens", "0", "max_output_tokens = 0 is invalid"),
        (
            "max_daily_cost_usd",
            "nan",
            "max_daily_cost_usd = nan is invalid: must be a finite amount of USD ≥ 0",
        ),
        ("max_daily_cost_usd", "-1", "max_daily_cost_usd = -1.0 is invalid"),
        ("llm_max_attempts", "0", "llm_max_attempts = 0 is invalid"),
        ("agent_max_turns", "0", "agent_max_turns = 0 is invalid"),
        ("agent_command_timeout_seconds", "0", "agent_command_timeout_seconds = 0.0 is invalid"),
        ("llm_request_timeout_seconds", "inf", "llm_request_timeout_seconds = inf is invalid"),
        ("llm_retry_initial_seconds", "-1", "llm_retry_initial_seconds = -1.0 is invalid"),
        ("llm_retry_max_seconds", "nan", "llm_retry_max_seconds = nan is invalid"),
        ("agent_command_output_bytes", "0", "agent_command_output_bytes = 0 is invalid"),
        ("agent_read_max_bytes", "0", "agent_read_max_bytes = 0 is invalid"),
        (
            "agent_max_subtasks",
            "-1",
            "agent_max_subtasks = -1 is invalid: must be a whole number ≥ 0",
        ),
        ("groups", "build=0", "groups.build = 0 is invalid: must be a whole number ≥ 1"),
        ("groups", "build=-2", "groups.build = '-2' is invalid"),
    ],
)
def test_out_of_range_settings_are_refused_naming_the_range(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match="^setting " + re.escape(message)):
        _load(tmp_path, **{name: value})


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("grace_seconds", "0", 0.0),  # SIGKILL straight after SIGTERM
        ("idle_exit_seconds", "0", 0.0),  # never exit when idle
        ("default_timeout_seconds", "", None),  # no default timeout
        ("max_open_files", "", None),  # leave the limit as it is
        ("poll_seconds", "0.05", 0.05),
        ("nice", "0", 0),
        ("nice", "19", 19),
        ("max_daily_cost_usd", "0", 0.0),  # no LLM spending at all
        ("agent_max_subtasks", "0", 0),
        ("groups", "build=3", {"build": 3}),
    ],
)
def test_boundary_values_are_accepted(
    tmp_path: Path, name: str, value: str, expected: object
) -> None:
    assert getattr(_load(tmp_path, **{name: value}), name) == expected


def test_the_defaults_are_valid(tmp_path: Path) -> None:
    assert _load(tmp_path) == Settings(home=tmp_path / "home")


def test_the_config_file_is_validated_too(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "config.toml").write_text("grace_seconds = inf\n[groups]\nbuild = 2\n")
    with pytest.raises(ConfigError, match="^setting grace_seconds = inf is invalid"):
        _load(tmp_path)
    (tmp_path / "home" / "config.toml").write_text("grace_seconds = 2\n[groups]\nbuild = true\n")
    with pytest.raises(ConfigError, match="^setting groups.build = True is invalid"):
        _load(tmp_path)


def test_an_infinite_integer_setting_in_the_file_is_a_clear_error(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    (home / "config.toml").write_text("max_open_files = inf\n")
    with pytest.raises(ConfigError, match="max_open_files"):
        load_settings(environ={"OFFLOAD_HOME": str(home)})
