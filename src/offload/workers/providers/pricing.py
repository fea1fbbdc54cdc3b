"""What a call cost, in USD, from the dated price file `prices.json` (plus config overrides).

Rules: a cost the response itself reports (a gateway's `usage.cost`) wins; otherwise the
tokens are priced from the table; a model the table does not know costs `None` (unknown),
never 0. Table keys are exact model ids or shell-style globs, tried exact-first, then in
file order. Bedrock ids may carry a geographic inference prefix (`us.`, `eu.`, `global.`);
non-global ones cost the file's `bedrock_regional_markup` more (prices from the config
are taken as they are).
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from offload.errors import ConfigError
from offload.workers.providers.base import Usage

__all__ = ["Price", "PriceTable", "load_prices"]

_PER_TOKENS = 1_000_000
_GEO_PREFIX = re.compile(r"^(global|us|us-gov|eu|apac|jp|au|ca)\.")
_DATE_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens; cache prices default to the input price when not listed."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None

    @classmethod
    def from_mapping(cls, name: str, raw: Any) -> Price:
        """Builds a Price from a table entry, or raises ConfigError naming the model."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"price of {name!r} must be a table with input and output")
        try:
            return cls(
                input=float(raw["input"]),
                output=float(raw["output"]),
                cached_input=_optional(raw.get("cached_input")),
                cache_write=_optional(raw.get("cache_write")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"price of {name!r} needs numeric input and output (USD per 1M tokens): {exc}"
            ) from None

    def cost(self, usage: Usage, markup: float = 1.0) -> float:
        """USD for `usage` at this price."""
        plain = max(0, usage.tokens_in - usage.cached_in - usage.cache_write_in)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        write_rate = self.input if self.cache_write is None else self.cache_write
        total = (
            plain * self.input
            + usage.cached_in * cached_rate
            + usage.cache_write_in * write_rate
            + usage.tokens_out * self.output
        )
        return total * markup / _PER_TOKENS


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class PriceTable:
    """Prices by model id or glob, as of a date."""

    as_of: str
    models: dict[str, Price]
    bedrock_regional_markup: float = 1.0
    configured: frozenset[str] = frozenset()  # keys from the config: taken as the final price

    def lookup(
        self, provider: str, model: str, packaged: bool = True
    ) -> tuple[Price, float] | None:
        """The price of `model` and the markup that applies, or None when unknown.

        `packaged=False` looks only at the config's prices: the packaged table describes
        OpenAI's and Bedrock's own prices, not a local or third-party server's.
        """
        markup = 1.0
        names = [model]
        if provider == "bedrock":
            match = _GEO_PREFIX.match(model)
            if match:
                names.append(model[match.end() :])
            if not match or match.group(1) != "global":
                markup = self.bedrock_regional_markup
        names += [_DATE_SUFFIX.sub("", n) for n in names if _DATE_SUFFIX.search(n)]
        for key in self._matching_keys(names):
            if packaged or key in self.configured:
                return self.models[key], 1.0 if key in self.configured else markup
        return None

    def _matching_keys(self, names: list[str]) -> Iterator[str]:
        """Table keys matching any of `names`: exact matches first, then globs in order."""
        yield from (name for name in names if name in self.models)
        for name in names:
            for key in self.models:
                if any(c in key for c in "*?[") and fnmatch.fnmatchcase(name, key):
                    yield key

    def cost(
        self, provider: str, model: str, usage: Usage, *also: str | None, packaged: bool = True
    ) -> float | None:
        """USD for one call: the reported cost, else priced tokens, else None (unknown).

        Args:
            provider: `bedrock` or `openai`.
            model: The model id the request named.
            usage: Tokens and any reported cost.
            also: Other names for the model to try (the one the response reported).
            packaged: Whether the packaged table applies (False for a server that is not
                the provider's own: only the config's prices are used).
        """
        if usage.reported_cost_usd is not None:
            return usage.reported_cost_usd
        for name in (model, *also):
            if name:
                found = self.lookup(provider, name, packaged)
                if found:
                    price, markup = found
                    return price.cost(usage, markup)
        return None


def load_prices(overrides: Mapping[str, Any] | None = None) -> PriceTable:
    """Reads the packaged price file and lays the config's `prices` table over it.

    Raises:
        ConfigError: when an override is malformed.
    """
    text = resources.files("offload.workers.providers").joinpath("prices.json").read_text()
    data = json.loads(text)
    models = {name: Price.from_mapping(name, raw) for name, raw in data["models"].items()}
    extra = {name: Price.from_mapping(name, raw) for name, raw in (overrides or {}).items()}
    # Overrides first, so an exact or glob entry of the user's wins over the file's.
    return PriceTable(
        as_of=str(data["as_of"]),
        models={**extra, **{k: v for k, v in models.items() if k not in extra}},
        bedrock_regional_markup=float(data.get("bedrock_regional_markup", 1.0)),
        configured=frozenset(extra),
    )
