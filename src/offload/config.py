"""One typed `Settings` object, read in one place from `$OFFLOAD_HOME/config.toml` and
`OFFLOAD_*` environment variables (the environment wins), checked by `config_checks`,
then passed in explicitly.

A frozen record (`offload.records`) rather than pydantic-settings or a dataclass: the CLI
reads it on every call; pydantic alone costs ~180 ms to import, `dataclasses` ~7 ms.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from offload.config_checks import setting_types, validate
from offload.errors import ConfigError
from offload.records import field, record, replace

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "TASK_LLM_SETTINGS",
    "Settings",
    "load_settings",
    "task_setting_env",
    "with_task_settings",
]


def _default_concurrency() -> int:
    return max(1, os.cpu_count() or 1)


def _default_writable() -> tuple[str, ...]:
    from offload.supervisor.sandbox_paths import default_writable

    return default_writable()


def _default_hide() -> tuple[str, ...]:
    from offload.supervisor.sandbox_paths import DEFAULT_HIDE

    return DEFAULT_HIDE


@record
class Settings:
    """Every setting of offload, each also readable as `OFFLOAD_<NAME>`."""

    home: Path = field(default_factory=lambda: Path.home() / ".offload")
    max_concurrent: int = field(default_factory=_default_concurrency)
    groups: dict[str, int] = field(default_factory=dict)
    default_group_limit: int = 1
    grace_seconds: float = 5.0
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    workspace_roots: tuple[str, ...] = ()
    env_allow: tuple[str, ...] = ()
    default_timeout_seconds: float | None = None
    max_address_space_mb: int | None = None
    max_cpu_seconds: int | None = None
    max_open_files: int | None = 4096
    nice: int = 5
    cgroups: bool = True
    pid_namespaces: bool = True
    # The per-task sandbox (docs/security.md): `auto` sandboxes what an agent starts and
    # leaves a person's own CLI tasks alone unless asked; `on` refuses to run a task that
    # should be sandboxed where bubblewrap is missing instead of falling back.
    sandbox: str = "auto"
    sandbox_network: bool = True
    sandbox_writable: tuple[str, ...] = field(default_factory=lambda: _default_writable())
    sandbox_hide: tuple[str, ...] = field(default_factory=lambda: _default_hide())
    idle_exit_seconds: float = 900.0
    poll_seconds: float = 1.0
    # Tasks (docs/environment.md): Python output streams to the log; a log past
    # `max_output_bytes` is cut there and its task stopped (unset: no cap).
    python_unbuffered: bool = True
    max_output_bytes: int | None = 1 << 30
    # Several hosts: `postgresql://user@host/db` selects the PostgreSQL queue (else SQLite).
    database_url: str | None = None
    # An agent's `list_tasks` with `all_workspaces` shows other projects' commands, which
    # may hold secrets: refused unless the person turns this on.
    agents_see_all_workspaces: bool = False
    # This host's labels (`offload supervisor --labels gpu,linux`): a task submitted with
    # `--on LABEL` runs only where every label it names is present.
    labels: tuple[str, ...] = ()
    # How long a supervisor's membership lasts unless renewed (PostgreSQL; renewed every
    # third of it). A member whose lease runs out has its running tasks interrupted.
    lease_seconds: float = 30.0
    # The name this host's supervisor registers under (default: the machine's host name);
    # two supervisors on one machine with their own data dirs may pose as two hosts.
    host_name: str | None = None
    # LLM tasks (see README "LLM tasks"); routing tables are plain data, not code.
    default_model: str = "auto"
    large_context_model: str = "auto"
    # An inference profile: Bedrock refuses on-demand calls to the bare Claude 4.x ids.
    bedrock_model: str = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
    openai_model: str = "gpt-4o-mini"
    openai_base_url: str | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    rules_files: tuple[str, ...] = ()
    max_rules_bytes: int = 32_768
    max_context_file_bytes: int = 262_144
    max_context_total_bytes: int = 1_048_576
    max_output_tokens: int = 8192
    max_daily_cost_usd: float | None = None
    llm_max_attempts: int = 5
    agent_max_turns: int = 20
    agent_command_timeout_seconds: float = 120.0
    agent_run_commands_in: str = "staging"
    # LLM routing, providers, retries and prices (README, "LLM tasks"). `model_routes` maps
    # model-name globs to a provider, first match wins; `prices` overrides USD per 1M tokens.
    model_routes: dict[str, str] = field(
        default_factory=lambda: {
            "anthropic.*": "bedrock",
            "amazon.*": "bedrock",
            "meta.*": "bedrock",
            "mistral.*": "bedrock",
            "cohere.*": "bedrock",
            "global.*": "bedrock",
            "us.*": "bedrock",
            "eu.*": "bedrock",
            "apac.*": "bedrock",
            "*": "openai",
        }
    )
    prices: dict[str, Any] = field(default_factory=dict)
    bedrock_region: str | None = None
    bedrock_endpoint_url: str | None = None
    openai_max_tokens_param: str = "max_completion_tokens"
    llm_request_timeout_seconds: float = 600.0
    llm_retry_initial_seconds: float = 1.0
    llm_retry_max_seconds: float = 30.0
    # Agent tasks (README, "Agent tasks"): what one run_command may return and take, what one
    # read_file returns, which top-level directories the staging copy links instead of
    # copying, and how many sub-tasks one agent task may queue.
    agent_command_output_bytes: int = 16_384
    agent_read_max_bytes: int = 200_000
    agent_link_dirs: tuple[str, ...] = (".venv", "venv", "node_modules", ".tox", ".nox")
    agent_max_subtasks: int = 10
    # LLM calls (docs/llm.md): large-context routes, streaming with an idle timeout, prompt
    # caching, thinking and effort, and the price charged for tokens of unpriced models.
    bedrock_large_context_model: str = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
    openai_large_context_model: str = "gpt-4.1"
    llm_stream: bool = True
    llm_idle_timeout_seconds: float = 120.0
    bedrock_prompt_cache: bool = True
    bedrock_thinking_budget_tokens: int = 0
    bedrock_additional_fields: dict[str, Any] = field(default_factory=dict)
    openai_reasoning_effort: str | None = None
    # True when openai_base_url/OPENAI_BASE_URL is a proxy in front of OpenAI itself, so
    # OpenAI's packaged prices apply; a local or other server is priced only by [prices].
    openai_base_url_is_openai: bool = False
    unpriced_input_usd_per_mtok: float = 15.0
    unpriced_output_usd_per_mtok: float = 75.0

    @property
    def db_path(self) -> Path:
        """The queue database file."""
        return self.home / "queue.db"

    @property
    def logs_dir(self) -> Path:
        """Where each task's output log lives."""
        return self.home / "logs"


_ENV_PREFIX = "OFFLOAD_"


def _coerce(name: str, text: str, value: Any) -> Any:
    """Converts a TOML or environment value to the setting's type, or raises ConfigError.

    `text` is the setting's annotation as written (`int | None`, `tuple[str, ...]`).
    """
    try:
        if value is None or (isinstance(value, str) and value == "" and "None" in text):
            return None
        if "Path" in text:
            return Path(os.path.expanduser(str(value)))
        if "dict" in text:
            return _coerce_mapping(value)
        if "tuple" in text:
            return _coerce_list(value)
        if text.startswith("bool"):
            return _coerce_bool(value)
        if "float" in text:
            return float(value)
        if "int" in text:
            return int(value)
        return str(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"setting {name} = {value!r} is invalid: {exc}") from exc


def _coerce_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _coerce_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        from offload.policies.commands import parse_pattern_list

        return tuple(parse_pattern_list(value))
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    raise ValueError("expected a list or a comma-separated string")


def _coerce_mapping(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, str):
        out: dict[str, Any] = {}
        for item in filter(None, (p.strip() for p in value.split(","))):
            key, sep, val = item.partition("=")
            if not sep:
                raise ValueError(f"expected name=value pairs, got {item!r}")
            out[key.strip()] = int(val) if val.strip().isdigit() else val.strip()
        return out
    raise ValueError("expected a table or name=value pairs")


# The settings a task may set for itself through its env, as `LLM_<NAME>` with NAME's
# own `llm_` left off (`LLM_STREAM`, `LLM_OPENAI_REASONING_EFFORT`): OFFLOAD_* names are
# reserved for offload, so a task cannot set those.
TASK_LLM_SETTINGS = (
    "llm_stream",
    "llm_idle_timeout_seconds",
    "bedrock_prompt_cache",
    "bedrock_thinking_budget_tokens",
    "openai_reasoning_effort",
    "max_output_tokens",
)


def task_setting_env(name: str) -> str:
    """The task env variable that sets LLM setting `name` for one task."""
    return "LLM_" + name.upper().removeprefix("LLM_")


def with_task_settings(settings: Settings, env: Mapping[str, str]) -> Settings:
    """`settings` with the LLM settings a task set in its env (`task_setting_env(name)`).

    Only `TASK_LLM_SETTINGS` may be set so.

    Raises:
        ConfigError: naming the variable and what it allows.
    """
    types = setting_types()
    typed: dict[str, Any] = {}
    for name in TASK_LLM_SETTINGS:
        key = task_setting_env(name)
        if key in env:
            typed[name] = _coerce(key, types[name], env[key])
    if not typed:
        return settings
    return validate(replace(settings, **typed))


def load_settings(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Reads the config file and `OFFLOAD_*` variables into a validated Settings.

    Raises:
        ConfigError: naming the setting or file that is wrong.
    """
    env = os.environ if environ is None else environ
    home = Path(os.path.expanduser(env.get("OFFLOAD_HOME") or "~/.offload"))
    values: dict[str, Any] = {}
    config_file = home / "config.toml"
    if config_file.is_file():
        import tomllib  # lazily: most runs have no config file

        try:
            values.update(tomllib.loads(config_file.read_text()))
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {config_file}: {exc}") from exc
    types = setting_types()
    names = set(types)
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{config_file}: unknown setting(s) {', '.join(unknown)}")
    for name in names:
        key = _ENV_PREFIX + name.upper()
        if key in env:
            values[name] = env[key]
    values.update(overrides or {})
    values["home"] = home if "home" not in (overrides or {}) else values["home"]
    typed = {name: _coerce(name, types[name], value) for name, value in values.items()}
    return validate(replace(Settings(), **typed))
