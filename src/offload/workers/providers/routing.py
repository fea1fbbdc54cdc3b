"""Which provider and model a task's `model` field means. Pure: the data lives in Settings.

- `large_context = true` replaces the model with `large_context_model`; its default `auto`
  is `bedrock_large_context_model` (Claude with the 1M-token context beta) when AWS
  credentials exist, with `openai_large_context_model` as fallback, else the latter.
- A name in `aliases` becomes its target (aliases may chain; loops are refused).
- `auto` is Bedrock's `bedrock_model` when AWS credentials exist, with `openai_model` as
  fallback; else `openai_model` alone.
- `bedrock:ID` and `openai:ID` name the provider outright.
- Any other name goes to the provider of the first `model_routes` glob it matches
  (so `gpt-4o` and `o3-mini` go straight to OpenAI, `anthropic.*` to Bedrock).

Fallback happens only for `auto`, and only for errors `should_fall_back` accepts.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from offload.config import Settings
from offload.errors import ConfigError, InvalidInput
from offload.workers.providers.base import ErrorKind, ProviderError

__all__ = ["PROVIDERS", "Plan", "Route", "plan_route", "resolve_name", "should_fall_back"]

PROVIDERS = ("bedrock", "openai")
MAX_ALIAS_DEPTH = 8
AUTO = "auto"


@dataclass(frozen=True)
class Route:
    """One provider and the model id to ask it for."""

    provider: str
    model: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


@dataclass(frozen=True)
class Plan:
    """The route to try first, the one to fall back to (auto only), and why."""

    primary: Route
    fallback: Route | None
    reason: str


def _expand_aliases(name: str, aliases: dict[str, str]) -> str:
    seen = [name]
    while name in aliases:
        name = str(aliases[name]).strip()
        if name in seen or len(seen) > MAX_ALIAS_DEPTH:
            raise ConfigError(f"model aliases loop: {' -> '.join([*seen, name])}")
        seen.append(name)
    return name


def resolve_name(name: str, settings: Settings) -> Route:
    """The route of a model name that is not `auto` (aliases already expanded).

    Raises:
        InvalidInput: for an empty name or an unknown `provider:` prefix.
        ConfigError: when `model_routes` names a provider offload does not have.
    """
    if not name:
        raise InvalidInput("model name is empty; use 'auto' or a model alias")
    prefix, sep, rest = name.partition(":")
    if sep and prefix in PROVIDERS:
        if not rest:
            raise InvalidInput(f"model '{name}' names no model after '{prefix}:'")
        return Route(prefix, rest)
    for pattern, provider in settings.model_routes.items():
        if fnmatch.fnmatchcase(name, pattern):
            if provider not in PROVIDERS:
                raise ConfigError(
                    f"model_routes maps '{pattern}' to '{provider}'; use one of "
                    f"{', '.join(PROVIDERS)}"
                )
            return Route(str(provider), name)
    raise ConfigError(f"no model_routes entry matches model '{name}'; add a '*' entry")


def plan_route(
    requested: str | None,
    large_context: bool,
    settings: Settings,
    bedrock_available: Callable[[], bool],
) -> Plan:
    """Decides where a task's LLM call goes.

    Args:
        requested: The task's `model` field (None means `default_model`).
        large_context: The task's flag; it overrides `requested`.
        settings: Aliases, routes and default models.
        bedrock_available: Called only for `auto`: do AWS credentials exist?

    Raises:
        InvalidInput, ConfigError: for a model name or routing table that cannot work.
    """
    if large_context:
        name, why = settings.large_context_model, "large_context"
    else:
        name, why = (requested or settings.default_model), "model"
    name = _expand_aliases(name.strip(), settings.aliases)
    if name != AUTO:
        route = resolve_name(name, settings)
        return Plan(route, None, f"{why} {name} -> {route.provider}")
    bedrock_model, openai_model = settings.bedrock_model, settings.openai_model
    if large_context:
        bedrock_model = settings.bedrock_large_context_model
        openai_model = settings.openai_large_context_model
    openai_route = resolve_name(f"openai:{openai_model}", settings)
    if bedrock_available():
        bedrock_route = Route("bedrock", bedrock_model)
        return Plan(bedrock_route, openai_route, "auto: AWS credentials found")
    return Plan(openai_route, None, "auto: no AWS credentials, using OpenAI")


def should_fall_back(error: ProviderError) -> bool:
    """True when an `auto` task may try its fallback after `error` (retries already spent).

    Access problems (AccessDenied, ResourceNotFound, UnrecognizedClient, ExpiredToken, no
    credentials) and throttling or outages that outlasted the retries fall back; a request
    the provider called invalid (ValidationException, 400) would fail there too, so it
    does not.
    """
    return error.kind in (ErrorKind.DENIED, ErrorKind.THROTTLED, ErrorKind.TRANSIENT)
