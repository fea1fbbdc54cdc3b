"""Keeping secrets out of everything a worker writes: logs, errors, results, the DB.

Two nets: the exact values of the credential variables the worker was started with
(registered once by the entry point), and patterns of well-known key formats, so a key the
worker never saw (one echoed back by a misconfigured gateway) is caught too.

A registered value is also caught encoded: as hex (either case) and as base64 (standard
and URL-safe), at any of the three alignments base64 can put it in (a key inside a longer
encoded text, `echo $KEY | base64`). For base64 the characters that depend on the bytes
around the key are left out of the pattern, so what is masked is the part that encodes
the key alone. Not caught: encodings split over lines (`base64` wraps at 76 columns, so
only keys over 57 bytes) or transformed further (gzip, rot13, spaced hex dumps).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Mapping

__all__ = ["MIN_SECRET_CHARS", "remember_secrets", "scrub"]

MIN_SECRET_CHARS = 8
_SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL|AUTH", re.IGNORECASE)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bsk-[A-Za-z0-9_\-*]{6,}"), "sk-***"),
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{12,}"), "AKIA***"),
    # A bearer credential holds a digit; "Bearer authorization requires ..." is prose.
    (re.compile(r"(?i)(bearer\s+)(?=[A-Za-z._~+/=\-]*\d)[A-Za-z0-9._~+/=\-]{8,}"), r"\1***"),
    # NAME=value and quoted values are always secrets; after `name: ` only a value that
    # looks like one (holds a digit), so `invalid_api_key: Incorrect API key` keeps its prose.
    (
        re.compile(
            r"(?i)((?:api[_-]?key|secret|token|password|signature|credential)[\"']?"
            r"(?:\s*=\s*[\"']?|\s*:\s*[\"']))[^\s\"',;&]{6,}"
        ),
        r"\1***",
    ),
    (
        re.compile(
            r"(?i)((?:api[_-]?key|secret|token|password|signature|credential)\s*:\s*)"
            r"(?=[^\s\"',;&]*\d)[^\s\"',;&]{6,}"
        ),
        r"\1***",
    ),
)
_known: set[str] = set()


def encodings(value: str) -> Iterator[str]:
    """The hex and base64 forms of `value` that `scrub` also masks."""
    raw = value.encode()
    yield raw.hex()
    yield raw.hex().upper()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode().rstrip("=")
        # drop the group holding the unknown bytes before, and the partial group after
        start = 4 if shift else 0
        end = ((shift + len(raw)) // 3) * 4
        core = encoded[start:end]
        if len(core) >= MIN_SECRET_CHARS:
            yield core
            yield core.replace("+", "-").replace("/", "_")


def remember_secrets(environ: Mapping[str, str]) -> None:
    """Registers the values of credential-looking variables (and their encodings) so
    `scrub` removes them."""
    for name, value in environ.items():
        if _SECRET_NAME.search(name) and len(value) >= MIN_SECRET_CHARS:
            _known.add(value)
            _known.update(encodings(value))


def scrub(text: str) -> str:
    """Returns `text` with every registered secret and known key format masked."""
    for value in sorted(_known, key=len, reverse=True):
        if value in text:
            text = text.replace(value, "***")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
