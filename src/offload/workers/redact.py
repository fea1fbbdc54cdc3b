"""Keeping secrets out of everything a worker writes: logs, errors, results, the DB.

Two nets: the exact values of the credential variables the worker was started with
(registered once by the entry point), and patterns of well-known key formats, so a key the
worker never saw (one echoed back by a misconfigured gateway) is caught too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["MIN_SECRET_CHARS", "remember_secrets", "scrub"]

MIN_SECRET_CHARS = 8
_SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL|AUTH", re.IGNORECASE)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bsk-[A-Za-z0-9_\-*]{6,}"), "sk-***"),
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{12,}"), "AKIA***"),
    # A bearer credential holds a digit; "Bearer authorization requires ..." is prose.
    (re.compile(r"(?i)(bearer\s+)(?=[A-Za-z._~+/=\-]*\d)[A-Za-z0-9._~+/=\-]{8,}"), r"\1***"),
    (
        re.compile(
            r"(?i)((?:api[_-]?key|secret|token|password|signature|credential)[\"']?\s*[:=]\s*"
            r"[\"']?)[^\s\"',;&]{6,}"
        ),
        r"\1***",
    ),
)
_known: set[str] = set()


def remember_secrets(environ: Mapping[str, str]) -> None:
    """Registers the values of credential-looking variables so `scrub` removes them."""
    for name, value in environ.items():
        if _SECRET_NAME.search(name) and len(value) >= MIN_SECRET_CHARS:
            _known.add(value)


def scrub(text: str) -> str:
    """Returns `text` with every registered secret and known key format masked."""
    for value in sorted(_known, key=len, reverse=True):
        if value in text:
            text = text.replace(value, "***")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
