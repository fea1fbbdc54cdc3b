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
from collections.abc import Sequence
from pathlib import Path

from offload.errors import ConfigError, PolicyRefused
from offload.records import record

# The shell parser and the argv views load on first use: a plain command line under no
# allow or deny list (`offload submit -- make test`) needs neither (see `_plain`).
TYPE_CHECKING = False  # typing costs ~3 ms of every CLI call; mypy reads this as True
if TYPE_CHECKING:
    from offload.policies.argv import View
    from offload.policies.shell_words import SimpleCommand

__all__ = [
    "MAX_SIMPLE_COMMANDS",
    "CommandPolicy",
    "Decision",
    "check_command",
    "compile_policy",
    "parse_commands",
    "parse_pattern_list",
    "plain_words",
    "split_simple_commands",
]

_MAX_SHOWN_CHARS = 120
MAX_SIMPLE_COMMANDS = 1000


@record
class CommandPolicy:
    """Compiled rules for command lines; empty tuples mean "no rule of that kind".

    Attributes:
        allow: The first allow-list layer.
        deny: Deny patterns; any match refuses.
        more_allow: Further allow-list layers (a narrowed policy): a command must match a
            pattern of every non-empty layer.
        roots: Where redirection targets must resolve while an allow list is in force
            (none known: only ``/dev/null`` and the standard streams may be targets).
        forbidden: Directories no redirection may reach (offload's data directory).
    """

    allow: tuple[re.Pattern[str], ...] = ()
    deny: tuple[re.Pattern[str], ...] = ()
    more_allow: tuple[tuple[re.Pattern[str], ...], ...] = ()
    roots: tuple[Path, ...] = ()
    forbidden: tuple[Path, ...] = ()

    @property
    def allow_layers(self) -> tuple[tuple[re.Pattern[str], ...], ...]:
        """Every non-empty allow layer."""
        return tuple(layer for layer in (self.allow, *self.more_allow) if layer)


@record
class Decision:
    """The verdict on one command.

    Attributes:
        allowed: Whether the command may run.
        reason: For a refusal, one line naming the rule that refused it; ``""`` when allowed.
    """

    allowed: bool
    reason: str = ""


def compile_policy(
    allow: Sequence[str],
    deny: Sequence[str],
    *,
    more_allow: Sequence[Sequence[str]] = (),
    roots: Sequence[Path | str] = (),
    forbidden: Sequence[Path | str] = (),
) -> CommandPolicy:
    """Compile allow and deny patterns once, at start-up, so a typo fails loudly and early.

    Empty or whitespace-only entries are ignored; other entries are compiled as written.

    Raises:
        ConfigError: A pattern is not a valid regular expression (the message names the
            pattern and the regex error), or a list was given as a single string.
    """
    return CommandPolicy(
        allow=_compile_all(allow, "OFFLOAD_ALLOW"),
        deny=_compile_all(deny, "OFFLOAD_DENY"),
        more_allow=tuple(_compile_all(layer, "OFFLOAD_ALLOW") for layer in more_allow),
        roots=tuple(Path(root) for root in roots),
        forbidden=tuple(Path(path) for path in forbidden),
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


def check_command(
    command: str | Sequence[str], policy: CommandPolicy, *, cwd: Path | str | None = None
) -> Decision:
    """Decide whether a task's command may run under ``policy``.

    A string is a ``/bin/sh`` command line, split into simple commands and read into words
    (:mod:`offload.policies.shell_words`); an argv list is one simple command. Deny
    patterns judge every command a simple command runs, through wrappers and ``sh -c``
    strings, on normalised argv (:func:`offload.policies.argv.deny_matches`), plus the raw
    text; a program that is an expansion is refused while a deny list is set. With an
    allow list, every such command must match a pattern of every allow layer, assignment
    prefixes are refused, and redirection targets must be static paths inside
    ``policy.roots``; a line that cannot be parsed is refused. No redirection may reach
    ``policy.forbidden``. Relative targets resolve against `cwd` (default: the first
    root). Never raises.
    """
    lists = policy.deny or policy.allow_layers
    if not lists and isinstance(command, str) and plain_words(command) is not None:
        return Decision(allowed=True)  # one simple command, no redirection: nothing to judge
    parsed = _parse_line(command) if isinstance(command, str) else _parse_argv(command)
    if isinstance(parsed, Decision):
        return parsed
    reason = _deny_reason(policy.deny, parsed) if policy.deny else None
    if reason is None and policy.allow_layers:
        reason = _allow_reason(policy.allow_layers, parsed)
    if reason is None:
        from offload.policies.redirects import judge_redirects

        reason = judge_redirects(
            parsed.commands,
            strict=bool(policy.allow_layers),
            roots=policy.roots,
            forbidden=policy.forbidden,
            cwd=cwd,
        )
    return Decision(allowed=False, reason=reason) if reason else Decision(allowed=True)


# A line of words made of letters, digits and `_ . , : + @ % / -` (later words may hold
# `=` too), separated by blanks, whose first word is no reserved word: the shell runs it as
# one simple command with no redirection, expansion, glob, comment or separator in it.
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.,:+@%/-")
_PLAIN_CHARS = _WORD_CHARS | frozenset("= \t")
_RESERVED = frozenset(
    "if then else elif fi case esac for while until do done in function select time".split()
)


def plain_words(line: str) -> list[str] | None:
    """The words of `line` when it is plain (see the comment above), else None.

    `/bin/sh -c LINE` runs a plain line as exactly these words, unexpanded. So only an
    allow or deny list could refuse it (without lists it needs no parsing), and the
    supervisor may run the words without a shell of their own.
    """
    if not _PLAIN_CHARS.issuperset(line):
        return None
    words = line.split()  # blanks are spaces and tabs only, by the test above
    if not words or words[0] in _RESERVED or not _WORD_CHARS.issuperset(words[0]):
        return None
    return words


def split_simple_commands(line: str) -> list[str]:
    """The simple commands of a ``/bin/sh`` line (`offload.policies.shell`).

    Raises:
        PolicyRefused: The line cannot be split with confidence.
    """
    from offload.policies.shell import split_simple_commands as split

    return split(line)


# --- policy helpers ---------------------------------------------------------------------


@record
class _Parsed:
    """A command ready for matching: its simple commands and the texts deny rules see."""

    commands: tuple[SimpleCommand, ...]
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


def parse_commands(line: str) -> list[SimpleCommand]:
    """Every simple command of a ``/bin/sh`` line, read into words.

    Raises:
        PolicyRefused: The line cannot be parsed with confidence.
    """
    from offload.policies.shell_words import parse_simple

    return [parse_simple(text) for text in split_simple_commands(line)]


def _line_argvs(line: str) -> list[tuple[tuple[str | None, ...], tuple[str, ...]]]:
    """The argv (values, raws) of each simple command of a nested shell line."""
    from offload.policies.argv import Unjudgeable

    try:
        commands = parse_commands(line)
    except PolicyRefused as exc:
        raise Unjudgeable(f"its inner command line cannot be parsed ({exc})") from None
    out = []
    for cmd in commands:
        if cmd.assignments:
            raise Unjudgeable(f"its inner command {_shown(cmd.text)} sets variables first")
        if cmd.redirects:
            raise Unjudgeable(f"its inner command {_shown(cmd.text)} redirects to files")
        out.append((tuple(w.value for w in cmd.words), tuple(w.raw for w in cmd.words)))
    return out


def _parse_line(line: str) -> _Parsed | Decision:
    if not line.strip():
        return Decision(allowed=False, reason="empty command")
    if "\0" in line:
        return Decision(allowed=False, reason="command contains a NUL byte")
    from offload.policies.shell_words import parse_simple

    try:
        texts = split_simple_commands(line)
        if len(texts) > MAX_SIMPLE_COMMANDS:
            return Decision(
                allowed=False,
                reason=f"command line has {len(texts)} simple commands; at most "
                f"{MAX_SIMPLE_COMMANDS} are judged: put them in a script and run that",
            )
        commands = [parse_simple(text) for text in texts]
    except PolicyRefused as exc:
        return _Parsed(commands=(), deny_forms=(line,), error=str(exc))
    if not commands:
        return Decision(allowed=False, reason="empty command (only comments or separators)")
    forms = [cmd.text for cmd in commands]
    forms.append(line)
    return _Parsed(commands=tuple(commands), deny_forms=tuple(dict.fromkeys(forms)))


def _parse_argv(argv: object) -> _Parsed | Decision:
    if not isinstance(argv, Sequence) or not all(isinstance(arg, str) for arg in argv):
        return Decision(allowed=False, reason="command must be a string or a list of strings")
    words: list[str] = list(argv)
    if not words or not words[0].strip():
        return Decision(allowed=False, reason="empty command")
    if any("\0" in word for word in words):
        return Decision(allowed=False, reason="command contains a NUL byte")
    import shlex

    from offload.policies.shell_words import SimpleCommand, Word

    joined = shlex.join(words)
    # argv words are never expanded: each is its own value, whatever it holds
    cmd = SimpleCommand(joined, (), tuple(Word(shlex.quote(w), w) for w in words), ())
    forms = dict.fromkeys([joined, " ".join(words)])
    return _Parsed(commands=(cmd,), deny_forms=tuple(forms))


def _views(cmd: SimpleCommand) -> list[View]:
    from offload.policies.argv import views

    return views([w.value for w in cmd.words], [w.raw for w in cmd.words], _line_argvs)


def _deny_reason(deny: Sequence[re.Pattern[str]], parsed: _Parsed) -> str | None:
    from offload.policies.argv import Unjudgeable, deny_matches

    for form in parsed.deny_forms:
        for pattern in deny:
            if pattern.search(form):
                return f"refused by deny rule {pattern.pattern!r} (matched in {_shown(form)})"
    for cmd in parsed.commands:
        try:
            found = _views(cmd)
        except Unjudgeable as exc:
            return f"{_shown(cmd.text)} cannot be judged against the deny list: {exc}"
        for view in found:
            for pattern in deny:
                matched = deny_matches(pattern, view)
                if matched is not None:
                    inside = f" run by {' '.join(view.via)}" if view.via else ""
                    return (
                        f"refused by deny rule {pattern.pattern!r} "
                        f"(matched in {_shown(matched)}{inside})"
                    )
    return None


def _allow_reason(layers: Sequence[Sequence[re.Pattern[str]]], parsed: _Parsed) -> str | None:
    from offload.policies.argv import Unjudgeable

    if parsed.error:
        return parsed.error
    for cmd in parsed.commands:
        if cmd.assignments:
            return (
                f"{_shown(cmd.text)} sets {_shown(cmd.assignments[0].raw)} before its program; "
                "variable assignments are not allowed while an allow list is in force "
                "(use the task's env, or `env` names allowed by env_allow)"
            )
        if not cmd.words:
            continue  # redirections alone: their targets are judged on their own
        try:
            found = _views(cmd)
        except Unjudgeable as exc:
            return f"{_shown(cmd.text)} cannot be judged against the allow list: {exc}"
        for index, view in enumerate(found):
            if view.assignments:
                return (
                    f"{_shown(' '.join(view.raw))} is run by {view.via[-1]} with "
                    f"{view.assignments[0]!r}; setting variables that way is not allowed"
                )
            text = cmd.argv_text if index == 0 else " ".join(str(v) for v in view.argv)
            texts = (text, cmd.text) if index == 0 else (text,)
            for layer in layers:
                if not any(pattern.search(t) for pattern in layer for t in texts):
                    inside = f" (run by {' '.join(view.via)})" if view.via else ""
                    return f"{_shown(text)}{inside} is not allowed by any OFFLOAD_ALLOW pattern"
    return None


def _shown(text: str) -> str:
    """Quote text for a one-line message, shortening very long commands."""
    if len(text) > _MAX_SHOWN_CHARS:
        text = text[:_MAX_SHOWN_CHARS] + "..."
    return repr(text)
