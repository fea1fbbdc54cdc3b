"""Shell-line splitting: the simple commands a ``/bin/sh`` command line would run.

The splitter follows ``/bin/sh`` closely enough to be safe rather than complete: wherever
dash and bash would read a line differently, or the scanner cannot be sure, it refuses to
parse, and the command policy refuses an unparseable line whenever an allow list is set.
This module holds what is about commands: the operators that end them, subshells and
groups, and the reserved words of ``if``/``while``/``for``. How words, quotes, expansions
and here-documents are spelled is read by :class:`offload.policies.shell_lex.ShellLexer`,
which ``_Splitter`` extends. Everything here is a pure function of its arguments.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from offload.policies.shell_lex import BLANKS, WORD_ENDS, ShellLexer, unparseable

__all__ = ["split_simple_commands"]


_END = r"(?:[ \t\n]+|$)"
_LEADING_RESERVED = re.compile(r"(?:if|then|else|elif|do|while|until|!)" + _END)
_CLOSING_RESERVED = re.compile(r"(?:fi|done|esac)" + _END)
_FOR_HEADER = re.compile(r"for[ \t\n]+[A-Za-z_][A-Za-z0-9_]*" + _END + "(.*)", re.DOTALL)
_IN_WORD = re.compile(r"in" + _END)
_DO_WORD = re.compile(r"do" + _END)
_RESERVED_WORDS = frozenset({"if", "then", "else", "elif", "do", "while", "until", "!"})
_BLANKS_NL = (" ", "\t", "\n")
# Characters no handler cares about, read as one run: blanks end words, "{" and "#" matter
# only at a word's start, and "}" only where it may close a group.
_PLAIN_RUN = re.compile(r"[^ \t\n;&|'\"\\$`<>(){#][^ \t\n;&|'\"\\$`<>()]*")
_PLAIN_RUN_IN_BRACES = re.compile(r"[^ \t\n;&|'\"\\$`<>(){}#][^ \t\n;&|'\"\\$`<>()}]*")
_BRACE_RUN = re.compile(r"\{[^ \t\n;&|'\"\\$`<>()}]*")


def split_simple_commands(command: str) -> list[str]:
    """Split a ``/bin/sh`` command line into the simple commands it would run.

    Splits on ``;``, ``&&``, ``||``, ``|``, ``&`` and newlines; descends into ``( )``
    subshells, ``{ ...; }`` groups, ``$( )``, backquotes and bash's ``<( )``/``>( )``, whose
    inner commands are returned before the outer one (which keeps ``$(...)`` in their
    place). Quotes, backslashes, comments, ``$(( ))`` and here-documents are understood, so
    an operator inside them does not split. The reserved words of ``if``/``while``/``for``
    are not commands and are left out (``if make; then ok; fi`` gives ``make``, ``ok``).
    Each command is returned as its raw text, quotes included.

    Raises:
        PolicyRefused: The line cannot be parsed with confidence ("cannot parse command:
            <why>; ..."): unbalanced quotes, brackets or substitutions, a here-document
            without its end line, ``$'...'`` quoting, ``(`` in the middle of a command.
    """
    return _Splitter(command).split()


# --- the splitter -----------------------------------------------------------------------


def _ends_word(char: str) -> bool:
    return not char or char in WORD_ENDS


class _Command:
    """The simple command being read: its raw text and what operators need to look back at.

    Every query is O(1): the splitter asks them once per character, so anything that looked
    at the whole text so far would make a long line cost quadratic time.
    """

    __slots__ = ("after_group", "blank", "last_plain", "parts", "reserved_only", "word")

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.parts: list[str] = []
        self.last_plain = ""  # the last character if it was unquoted and unescaped
        self.after_group = False  # a ( ) or { } just closed: only redirections may follow
        self.blank = True  # nothing but blanks read so far
        self.reserved_only = True  # every finished word so far is a reserved word
        self.word: list[str] | None = []  # the current word's plain characters; None: quoted

    def plain(self, char: str) -> None:
        self.parts.append(char)
        self.last_plain = char
        if char in _BLANKS_NL:
            self._end_word()
            return
        self.blank = False
        if self.word is not None:
            self.word.append(char)

    def plain_run(self, run: str) -> None:
        """Several plain characters at once, none a blank (see `_PLAIN_RUN`)."""
        self.parts.append(run)
        self.last_plain = run[-1]
        self.blank = False
        if self.word is not None:
            self.word.append(run)

    def text(self, chunk: str) -> None:
        self.parts.append(chunk)
        self.last_plain = ""
        if chunk:
            self.blank = False
            self.word = None  # a quoted or expanded word is never a reserved word

    def _end_word(self) -> None:
        if self.word is None or (self.word and "".join(self.word) not in _RESERVED_WORDS):
            self.reserved_only = False
        self.word = []

    def group_closed(self) -> None:
        """A ( ) or { } group ended: what follows (redirections) is all that is left."""
        self._reset()
        self.after_group = True
        self.reserved_only = False

    def is_blank(self) -> bool:
        return self.blank

    def at_command_start(self) -> bool:
        """True if only reserved words such as ``then`` or ``!`` have been read."""
        return self.reserved_only and self.word == []

    def at_word_start(self) -> bool:
        return not self.parts or self.last_plain in BLANKS

    def take(self) -> str:
        """Return the finished command ("" for none) and start reading the next one.

        After a ``( )`` or ``{ }`` group only redirections may follow; they are returned
        (as a command of redirections alone) so their targets are judged like any other.
        """
        text = "".join(self.parts)
        done = text.strip(" \t\n") if self.after_group else _without_reserved_words(text)
        self._reset()
        return done


def _without_reserved_words(text: str) -> str:
    """Strip the reserved words of if/while/until/for, which are not commands themselves.

    ``for NAME in WORDS`` is dropped whole (its substitutions were already collected).
    Whatever follows ``fi``/``done``/``esac`` can only be redirections of the compound
    command; they are kept so their targets are judged. Works by index, never by slicing
    in a loop, so a line of thousands of reserved words costs linear time.
    """
    text = text.strip(" \t\n")
    pos = 0
    while True:
        while match := _LEADING_RESERVED.match(text, pos):
            pos = match.end()
        if closing := _CLOSING_RESERVED.match(text, pos):
            return text[closing.end() :]
        header = _FOR_HEADER.match(text, pos)
        if header is None:
            return text[pos:]
        rest = header.start(1)
        if rest == len(text) or _IN_WORD.match(text, rest):
            return ""
        do = _DO_WORD.match(text, rest)
        if do is None:
            return text[pos:]
        pos = do.end()


class _Splitter(ShellLexer):
    """A small recursive scanner over one command line (see :func:`split_simple_commands`)."""

    def __init__(self, text: str, depth: int = 0, offset: int = 0) -> None:
        super().__init__(text, depth, offset)

    def _dollar(self, cmd: _Command) -> None:
        cmd.text(self._expansion(in_dquote=False))

    def _backquoted(self, cmd: _Command) -> None:
        cmd.text(self._backquote(in_dquote=False))

    def split(self) -> list[str]:
        self._parse_list("", 0)
        return self.commands

    # -- lists and simple commands

    def _parse_list(self, closer: str, opened_at: int) -> None:
        cmd = _Command()
        plain_run = _PLAIN_RUN_IN_BRACES if closer == "}" else _PLAIN_RUN
        while self._pos < len(self._text):
            if self._closes(closer, cmd):
                self._check_no_heredoc_inside(closer)
                self._pos += 1
                self._finish(cmd)
                return
            char = self._text[self._pos]
            handler = _HANDLERS.get(char)
            if handler is None:
                run = plain_run.match(self._text, self._pos)
                if run is None:
                    cmd.plain(char)  # a blank or a closing brace: one at a time
                    self._pos += 1
                else:
                    cmd.plain_run(run.group())
                    self._pos = run.end()
            else:
                handler(self, cmd)
        if closer:
            raise unparseable(f"{closer!r} missing for the one opened at {self._where(opened_at)}")
        if self._heredocs:
            raise unparseable(f"here-document {self._heredocs[0].delimiter!r} has no body")
        self._finish(cmd)

    def _closes(self, closer: str, cmd: _Command) -> bool:
        if not closer or self._text[self._pos] != closer:
            return False
        return closer == ")" or (cmd.is_blank() and _ends_word(self._peek(1)))

    def _check_no_heredoc_inside(self, closer: str) -> None:
        # dash and bash disagree on where such a body starts, so refuse rather than guess.
        for doc in self._heredocs:
            if doc.depth >= self._depth:
                raise unparseable(f"here-document {doc.delimiter!r} is still open at {closer!r}")

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
            raise unparseable("a newline inside brackets while a here-document is pending")
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
            cmd.text(self._here_document())
        else:
            cmd.plain(char)
            self._pos += 1

    def _open_paren(self, cmd: _Command) -> None:
        start = self._pos
        if not cmd.at_command_start():
            raise unparseable(
                f"unexpected '(' at {self._where(start)} (function definitions, arrays and "
                "extended globs are not supported)"
            )
        self._skip(1)
        with self._deeper(start):
            self._parse_list(")", start)
        cmd.group_closed()

    def _close_paren(self, cmd: _Command) -> None:
        raise unparseable(f"unexpected ')' at {self._where(self._pos)}")

    def _open_brace(self, cmd: _Command) -> None:
        start = self._pos
        if not (cmd.at_command_start() and self._peek(1) in (" ", "\t", "\n")):
            # not the reserved word: brace expansion or a plain argument, read as one run
            run = _BRACE_RUN.match(self._text, self._pos)
            assert run is not None
            cmd.plain_run(run.group())
            self._pos = run.end()
            return
        self._skip(1)
        with self._deeper(start):
            self._parse_list("}", start)
        cmd.group_closed()

    def _hash(self, cmd: _Command) -> None:
        if not cmd.at_word_start():
            cmd.plain("#")
            self._pos += 1
            return
        end = self._text.find("\n", self._pos)
        self._pos = len(self._text) if end < 0 else end


# One table for every instance: building it per instance made each backquote cost more.
_HANDLERS: dict[str, Callable[[_Splitter, _Command], None]] = {
    "\n": _Splitter._newline,
    ";": _Splitter._separator,
    "&": _Splitter._ampersand,
    "|": _Splitter._bar,
    "'": _Splitter._quote,
    '"': _Splitter._quote,
    "\\": _Splitter._backslash,
    "$": _Splitter._dollar,
    "`": _Splitter._backquoted,
    "<": _Splitter._angle,
    ">": _Splitter._angle,
    "(": _Splitter._open_paren,
    ")": _Splitter._close_paren,
    "{": _Splitter._open_brace,
    "#": _Splitter._hash,
}
