"""Shell-line lexing: the words, quotes, expansions and here-documents of a ``/bin/sh`` line.

:class:`ShellLexer` reads one construct at a time from the current position (a quoted
string, ``$( )``, ``$(( ))``, ``${ }``, backquotes, a here-document and its body) and
returns its text, collecting the commands inside substitutions as it goes. It holds no
notion of commands, operators or reserved words: the splitter in :mod:`offload.policies.shell`
extends it and supplies those, so this module stays about how the line is spelled and
``shell.py`` about what it runs. Like the splitter, it refuses (:func:`unparseable`)
wherever dash and bash would read the text differently. Everything here is pure.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager

from offload.errors import PolicyRefused
from offload.records import record

__all__ = ["BLANKS", "WORD_ENDS", "ShellLexer", "unparseable"]


_PLACEHOLDER = "$(...)"  # what an outer command keeps in place of a substitution
_MAX_NESTING = 32
_PARSE_HINT = "check its quotes and brackets, or submit it as an argv list"
BLANKS = (" ", "\t")
WORD_ENDS = frozenset(" \t\n;&|()<>")
_ARITHMETIC_RUN = re.compile(r"[^()$`\\'\"]+")
_HEREDOC_WORD = re.compile(r"[A-Za-z0-9_.+-]+")


def unparseable(why: str) -> PolicyRefused:
    """The refusal for a line the splitter cannot read with confidence."""
    return PolicyRefused(f"cannot parse command: {why}; {_PARSE_HINT}")


@record
class _Heredoc:
    delimiter: str
    literal: bool  # a quoted delimiter: the body is not expanded
    strip_tabs: bool  # written <<-
    depth: int


class ShellLexer(ABC):
    """The scanning half of the splitter: positions, quotes, expansions, here-documents.

    A subclass supplies :meth:`split` and :meth:`_parse_list`, which read whole command
    lists; ``$( )`` and backquotes call back into them, the latter through a new instance
    of the same class.
    """

    def __init__(self, text: str, depth: int = 0, offset: int = 0) -> None:
        self._text = text
        self._pos = 0
        self._depth = depth
        self._offset = offset  # where this text starts in the whole line, for messages
        self._heredocs: list[_Heredoc] = []
        self.commands: list[str] = []

    @abstractmethod
    def split(self) -> list[str]:
        """Read the whole text as a command list and return its simple commands."""

    @abstractmethod
    def _parse_list(self, closer: str, opened_at: int) -> None:
        """Read a command list up to and past ``closer`` ("" for the end of the text)."""

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
            raise unparseable(f"nested over {_MAX_NESTING} levels deep at {self._where(start)}")
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    # -- quotes and expansions: each reads from the current position and returns its text

    def _single_quoted(self) -> str:
        start = self._pos
        end = self._text.find("'", start + 1)
        if end < 0:
            raise unparseable(f"single quote at {self._where(start)} is never closed")
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
        raise unparseable(f"double quote at {self._where(start)} is never closed")

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
            raise unparseable(f"$'...' quoting at {where} is read differently by dash and bash")
        self._pos += 1
        return "$"

    def _arithmetic(self, start: int, in_dquote: bool) -> str:
        out, depth = ["$(("], 0
        with self._deeper(start):
            while self._pos < len(self._text):
                char = self._text[self._pos]
                if char == ")" and depth == 0:
                    if self._peek(1) != ")":
                        raise unparseable(f"'$((' at {self._where(start)} is not closed by '))'")
                    self._skip(2)
                    return "".join([*out, "))"])
                depth += {"(": 1, ")": -1}.get(char, 0)
                run = _ARITHMETIC_RUN.match(self._text, self._pos)
                if run is not None:  # digits, names, operators: read as one run
                    out.append(run.group())
                    self._pos = run.end()
                else:
                    out.append(self._word_piece(in_dquote))
        raise unparseable(f"'$((' at {self._where(start)} is never closed")

    def _parameter(self, start: int, in_dquote: bool) -> str:
        out = ["${"]
        with self._deeper(start):
            while self._pos < len(self._text):
                char = self._text[self._pos]
                if char == "}":
                    self._pos += 1
                    return "".join([*out, "}"])
                if char == "'" and in_dquote:
                    raise unparseable(
                        f"a single quote inside '${{...}}' within double quotes at "
                        f"{self._where(self._pos)} is read differently by dash and bash"
                    )
                out.append(self._word_piece(in_dquote=False))
        raise unparseable(f"'${{' at {self._where(start)} is never closed")

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
        raise unparseable(f"backquote at {self._where(start)} is never closed")

    def _split_inner(self, text: str, text_start: int, heredoc: bool = False) -> None:
        if not text.strip(" \t\n"):
            return  # `` or an empty body: nothing runs
        with self._deeper(text_start):
            inner = type(self)(text, self._depth, self._offset + text_start)
            self.commands.extend(inner.scan_heredoc_body() if heredoc else inner.split())

    # -- here-documents

    def _here_document(self) -> str:
        """Read ``<<WORD`` or ``<<-WORD``; its body is read after the line's next newline."""
        start = self._pos
        self._skip(2)
        strip_tabs = self._peek() == "-"
        self._skip(1 if strip_tabs else 0)
        while self._peek() in BLANKS:
            self._skip(1)
        delimiter, literal = self._heredoc_word(start)
        self._heredocs.append(_Heredoc(delimiter, literal, strip_tabs, self._depth))
        return self._text[start : self._pos]

    def _heredoc_word(self, start: int) -> tuple[str, bool]:
        """Read the delimiter word; refuse anything but a plain word, quoted or not."""
        word_start, literal = self._pos, False
        chars: list[str] = []
        while self._pos < len(self._text) and self._text[self._pos] not in WORD_ENDS:
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
            raise unparseable(
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
        raise unparseable(f"here-document {doc.delimiter!r} has no line ending it")

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
