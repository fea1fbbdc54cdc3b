"""What each setting allows: numeric ranges, enumerated words, labels and the LLM
settings' own rules. `validate` is run on every Settings that `offload.config` builds.
"""

from __future__ import annotations

import functools
import math

from offload.errors import ConfigError
from offload.records import fields, record, replace

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from offload.config import Settings

__all__ = ["REASONING_EFFORTS", "setting_types", "validate"]


@record
class _Range:
    """What one numeric setting allows: `what` from `low` (`above`: strictly more) to `high`."""

    what: str
    low: float
    above: bool = False
    high: float | None = None

    def describe(self) -> str:
        if self.high is not None:
            return f"{self.what} from {self.low:g} to {self.high:g}"
        return f"{self.what} {'>' if self.above else '≥'} {self.low:g}"

    def allows(self, value: float) -> bool:
        if self.high is not None and value > self.high:
            return False
        return value > self.low if self.above else value >= self.low


_SECONDS = "a finite number of seconds"
_WHOLE = "a whole number"
_COUNT = _Range(_WHOLE, 1)
_POSITIVE_SECONDS = _Range(_SECONDS, 0, above=True)
# A numeric setting missing here only has to be finite and ≥ 0 (see `_DEFAULT_RANGE`).
_RANGES: dict[str, _Range] = {
    "max_concurrent": _COUNT,
    "default_group_limit": _COUNT,
    "grace_seconds": _Range(_SECONDS, 0),  # 0: SIGKILL straight after SIGTERM
    "default_timeout_seconds": _POSITIVE_SECONDS,
    "max_address_space_mb": _COUNT,
    "max_cpu_seconds": _COUNT,
    "max_open_files": _COUNT,
    "nice": _Range(_WHOLE, 0, high=19),
    "idle_exit_seconds": _Range(_SECONDS, 0),  # 0: never exit when idle
    "poll_seconds": _POSITIVE_SECONDS,
    "lease_seconds": _Range(_SECONDS, 1),
    "max_output_bytes": _COUNT,
    "max_rules_bytes": _COUNT,
    "max_context_file_bytes": _COUNT,
    "max_context_total_bytes": _COUNT,
    "max_output_tokens": _COUNT,
    "max_daily_cost_usd": _Range("a finite amount of USD", 0),  # 0: no LLM spending at all
    "llm_max_attempts": _COUNT,
    "agent_max_turns": _COUNT,
    "agent_command_timeout_seconds": _POSITIVE_SECONDS,
    "llm_request_timeout_seconds": _POSITIVE_SECONDS,
    "llm_retry_initial_seconds": _Range(_SECONDS, 0),
    "llm_retry_max_seconds": _Range(_SECONDS, 0),
    "agent_command_output_bytes": _COUNT,
    "agent_read_max_bytes": _COUNT,
    "agent_max_subtasks": _Range(_WHOLE, 0),  # 0: agents may not queue sub-tasks
    "llm_idle_timeout_seconds": _POSITIVE_SECONDS,
}
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
_DEFAULT_RANGE = _Range("a finite number", 0)


def _numeric_type(text: str) -> type | None:
    """`int` or `float` for a setting typed `int`, `float` or either `| None`; else None."""
    kinds = [k.strip() for k in text.split("|") if k.strip() != "None"]
    return {"int": int, "float": float}.get(kinds[0]) if len(kinds) == 1 else None


def _finite_number(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True  # finite however large (and too large for math.isfinite)
    return kind is float and isinstance(value, float) and math.isfinite(value)


def _check_number(name: str, kind: type, value: Any, optional: bool) -> None:
    if value is None and optional:
        return
    rule = _RANGES.get(name, _DEFAULT_RANGE)
    if not (_finite_number(value, kind) and rule.allows(value)):
        unset = " (or unset for none)" if optional else ""
        raise ConfigError(
            f"setting {name} = {value!r} is invalid: must be {rule.describe()}{unset}"
        )


_SANDBOX_WORDS = {
    **dict.fromkeys(("off", "false", "no", "0"), "off"),
    **dict.fromkeys(("on", "true", "yes", "1"), "on"),
    "auto": "auto",
}


def validate(settings: Settings) -> Settings:
    """Checks every numeric setting against its range (all finite), the group limits and
    the enumerated settings.

    Raises:
        ConfigError: naming the setting, its value and what is allowed.
    """
    for name, (kind, optional) in _numeric_settings().items():
        _check_number(name, kind, getattr(settings, name), optional)
    for group, limit in settings.groups.items():
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(
                f"setting groups.{group} = {limit!r} is invalid: must be {_COUNT.describe()} "
                "(the group's concurrency limit)"
            )
    mode = _SANDBOX_WORDS.get(str(settings.sandbox).strip().lower())
    if mode is None:
        raise ConfigError(
            f"setting sandbox = {settings.sandbox!r} is invalid: must be off, on or auto"
        )
    if mode != settings.sandbox:
        settings = replace(settings, sandbox=mode)
    if settings.labels:
        settings = _validate_labels(settings)
    if settings.agent_run_commands_in not in {"staging", "workspace"}:
        raise ConfigError("setting agent_run_commands_in must be 'staging' or 'workspace'")
    _validate_llm(settings)
    return settings


def _validate_labels(settings: Settings) -> Settings:
    """`settings` with its host labels checked (the rule `submit --on` also follows)."""
    from offload.errors import InvalidInput
    from offload.queue.members import check_labels

    try:
        labels = check_labels(settings.labels, "setting labels")
    except InvalidInput as exc:
        raise ConfigError(str(exc)) from None
    return replace(settings, labels=labels)


@functools.cache
def _numeric_settings() -> dict[str, tuple[type, bool]]:
    """Each numeric setting's type (int or float) and whether it may be unset."""
    found = {}
    for name, text in setting_types().items():
        kind = _numeric_type(text)
        if kind is not None:
            found[name] = (kind, "None" in text.split(" | "))
    return found


def _validate_llm(settings: Settings) -> None:
    effort = settings.openai_reasoning_effort
    if effort is not None and effort not in REASONING_EFFORTS:
        raise ConfigError(
            f"setting openai_reasoning_effort = {effort!r} is invalid: use one of "
            f"{', '.join(REASONING_EFFORTS)} (or unset)"
        )
    budget = settings.bedrock_thinking_budget_tokens
    if budget and budget < 1024:
        raise ConfigError(
            f"setting bedrock_thinking_budget_tokens = {budget} is invalid: must be 0 (off) "
            "or at least 1024"
        )


@functools.cache
def setting_types() -> dict[str, str]:
    """Each setting's annotation as written: all `_coerce` and `_validate` need to know.

    Read as text rather than resolved with `typing.get_type_hints`, which imports typing and
    compiles every annotation: milliseconds the CLI would pay on every call.
    """
    return {f.name: f.type for f in fields(_settings_class())}


def _settings_class() -> type:
    from offload.config import Settings

    return Settings
