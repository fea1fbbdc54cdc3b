"""The words of one simple command: assignments, argv and redirections, as the shell reads them.

:func:`offload.policies.shell.split_simple_commands` returns each simple command as its raw
text, already checked for balanced quotes and brackets (substitutions replaced by
``$(...)``). :func:`parse_simple` reads that text into what the command policy judges: the
``NAME=value`` assignments before the program, the words of argv (each with its value after
quote removal, or ``None`` where an expansion, a glob or a leading ``~`` makes the value
unknowable until the shell runs it), and the redirections with their targets. One pass,
linear in the text; pure.
"""

from __future__ import annotations

import re

from offload.policies.shell_lex import unparseable
from offload.records import record

__all__ = ["Redirect", "SimpleCommand", "Word", "parse_simple"]

_BLANKS = frozenset(" \t\n")
_OPERATORS = ("<<<", "<<-", "<<", "<>", "<&", ">>", ">|", ">&", "<", ">")
_FILE_OPERATORS = frozenset({"<", ">", ">>", ">|", "<>"})
_DUP_OPERATORS = frozenset({"<&", ">&"})
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\[[^\]]*\])?\+?=")
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_SPECIAL_PARAMS = frozenset("@*#?-$!")
_LITERAL_RUN = re.compile(r"[^ \t\n'\"\\$`<>*?~\[\]{}]+")  # characters that stand for themselves


@record
class Word:
    """One shell word.

    Attributes:
        raw: The word as written, quotes included.
        value: The word after quote removal, or ``None`` when it holds a parameter or
            command expansion, a glob, brace expansion or a leading ``~``: what it becomes
            is known only when the shell runs it.
    """

    raw: str
    value: str | None

    @property
    def static(self) -> bool:
        """True when the word's value is known without running anything."""
        return self.value is not None


@record
class Redirect:
    """One redirection: ``[fd]op target``.

    Attributes:
        fd: The file descriptor written before the operator ("" for the default).
        op: The operator: ``<``, ``>``, ``>>``, ``>|``, ``<>``, ``<&``, ``>&``, ``<<``,
            ``<<-`` or ``<<<``.
        target: The word after the operator.
    """

    fd: str
    op: str
    target: Word

    @property
    def opens_file(self) -> bool:
        """True when the target names a file the shell opens (not an fd, a here-doc word)."""
        if self.op in _FILE_OPERATORS:
            return True
        if self.op in _DUP_OPERATORS:  # >&2 duplicates an fd; bash reads >&FILE as &>FILE
            value = self.target.value
            return value is None or not (value.isdigit() or value == "-")
        return False


@record
class SimpleCommand:
    """A simple command read into words.

    Attributes:
        text: The raw text it was read from.
        assignments: ``NAME=value`` words before the program (they change its environment).
        words: The program and its arguments.
        redirects: Every redirection, wherever it stood in the command.
    """

    text: str
    assignments: tuple[Word, ...]
    words: tuple[Word, ...]
    redirects: tuple[Redirect, ...]

    @property
    def argv_text(self) -> str:
        """The program and arguments as written, joined by single spaces."""
        return " ".join(word.raw for word in self.words)


def parse_simple(text: str) -> SimpleCommand:
    """Read the raw text of one simple command into assignments, words and redirections.

    Raises:
        PolicyRefused: The text is not a well-formed simple command (it cannot come from
            the splitter; the check is defensive).
    """
    return _Reader(text).read()


class _Reader:
    """One left-to-right pass over a simple command's text."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0

    def read(self) -> SimpleCommand:
        assignments: list[Word] = []
        words: list[Word] = []
        redirects: list[Redirect] = []
        text, size = self._text, len(self._text)
        while True:
            while self._pos < size and text[self._pos] in _BLANKS:
                self._pos += 1
            if self._pos >= size:
                break
            digits = self._pos
            while digits < size and text[digits].isdigit():
                digits += 1
            if self._operator_at(digits):
                redirects.append(self._redirect(text[self._pos : digits], digits))
                continue
            word = self._word()
            if not words and _ASSIGNMENT.match(word.raw):
                assignments.append(word)
            else:
                words.append(word)
        return SimpleCommand(text, tuple(assignments), tuple(words), tuple(redirects))

    def _operator_at(self, index: int) -> bool:
        text = self._text
        return index < len(text) and text[index] in "<>" and text[index + 1 : index + 2] != "("

    def _redirect(self, fd: str, at: int) -> Redirect:
        op = next(op for op in _OPERATORS if self._text.startswith(op, at))
        self._pos = at + len(op)
        while self._pos < len(self._text) and self._text[self._pos] in _BLANKS:
            self._pos += 1
        target = self._word()
        if not target.raw:
            raise unparseable(f"redirection {fd + op!r} has no target")
        return Redirect(fd, op, target)

    def _word(self) -> Word:
        text, size, start = self._text, len(self._text), self._pos
        value: list[str] = []
        dynamic = False
        bracket = brace = False  # an unquoted [ or { that a later ] or } turns into a glob
        while self._pos < size:
            char = text[self._pos]
            if char in _BLANKS or (char in "<>" and text[self._pos + 1 : self._pos + 2] != "("):
                break
            if char == "'":
                end = text.find("'", self._pos + 1)
                if end < 0:
                    raise unparseable("a single quote is never closed")
                value.append(text[self._pos + 1 : end])
                self._pos = end + 1
            elif char == '"':
                dynamic = self._double_quoted(value) or dynamic
            elif char == "\\":
                value.append(text[self._pos + 1 : self._pos + 2])
                self._pos += 2
            elif char in "$`<>":  # < and > here start a <( ) or >( ) substitution
                dynamic = self._dollar(value) or dynamic
            elif (run := _LITERAL_RUN.match(text, self._pos)) is not None:
                value.append(run.group())
                self._pos = run.end()
            else:
                dynamic = dynamic or char in "*?" or (char == "~" and self._pos == start)
                dynamic = dynamic or (char == "]" and bracket) or (char == "}" and brace)
                bracket, brace = bracket or char == "[", brace or char == "{"
                value.append(char)
                self._pos += 1
        raw = text[start : self._pos]
        return Word(raw, None if dynamic else "".join(value))

    def _double_quoted(self, value: list[str]) -> bool:
        """Read ``"..."`` into `value`; True when it holds an expansion."""
        text, dynamic = self._text, False
        self._pos += 1
        while self._pos < len(text):
            char = text[self._pos]
            if char == '"':
                self._pos += 1
                return dynamic
            if char == "\\":
                pair = text[self._pos : self._pos + 2]
                value.append(pair[1:] if pair[1:] in ('"', "\\", "$", "`") else pair)
                self._pos += 2
            elif char in "$`":
                dynamic = self._dollar(value) or dynamic
            else:
                value.append(char)
                self._pos += 1
        raise unparseable("a double quote is never closed")

    def _dollar(self, value: list[str]) -> bool:
        """Skip an expansion starting at ``$``, a backquote, ``<(`` or ``>(``.

        Returns False only for a lone ``$`` that the shell keeps as a literal character.
        """
        text, at = self._text, self._pos
        following = text[at + 1 : at + 2]
        if text[at] == "`":
            end = text.find("`", at + 1)
            self._pos = len(text) if end < 0 else end + 1
        elif following in ("(", "{"):
            self._pos = self._balanced(at + 1, following, ")" if following == "(" else "}")
        elif following in _NAME_CHARS:
            self._pos = at + 1
            while self._pos < len(text) and text[self._pos] in _NAME_CHARS:
                self._pos += 1
        elif following in _SPECIAL_PARAMS:
            self._pos = at + 2
        elif following and following not in _BLANKS and following not in "\"'":
            self._pos = at + 1
        else:
            value.append("$")
            self._pos = at + 1
            return False
        return True

    def _balanced(self, at: int, opener: str, closer: str) -> int:
        """The index just past the bracket that closes the one at `at` (quotes respected)."""
        text, depth, index = self._text, 0, at
        while index < len(text):
            char = text[index]
            if char == "\\":
                index += 2
                continue
            if char in "'\"":
                index = self._quoted_end(index)
                continue
            if char == opener:
                depth += 1
            elif char == closer:
                depth -= 1
                if depth == 0:
                    return index + 1
            index += 1
        raise unparseable(f"{opener!r} is never closed by {closer!r}")

    def _quoted_end(self, index: int) -> int:
        """The index just past the quoted string starting at `index`."""
        text, quote = self._text, self._text[index]
        index += 1
        while index < len(text) and text[index] != quote:
            index += 2 if quote == '"' and text[index] == "\\" else 1
        return index + 1
