"""Normalised argv: what program a simple command really runs, and with which flags.

A deny rule for ``rm -rf`` must also catch ``/bin/rm -r -f``, ``rm -fr``, ``rm --recursive
--force``, ``env rm -rf``, ``xargs rm -rf``, ``sh -c 'rm -rf /'`` and ``find -exec rm -rf``.
:func:`views` turns one parsed simple command into the commands it would run: the command
itself and, through known wrappers (``env``, ``command``, ``exec``, ``nice``, ``timeout``,
``sudo``, ``xargs``, ``busybox``, ``find -exec``, ...) and shell strings (``sh -c``,
``eval``, ``watch``), the commands inside it. :func:`deny_matches` judges a deny pattern on
a view, semantically (program basename, flag sets) for patterns shaped like a command and
as a regex over normalised spellings otherwise. A command whose program or shell string is
an expansion cannot be judged: :class:`Unjudgeable` says why. Pure; linear in the words.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["MAX_NESTING", "Unjudgeable", "View", "deny_matches", "views"]

MAX_NESTING = 8
_ASSIGN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_COMMAND_SHAPED = re.compile(r"\^?[\w./+@%:,-]+(?:[ ]+[\w./+@%:,=~-]+)*\$?")
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "yash", "posh"})
_OPEN_ENDED = frozenset({"xargs", "find", "parallel"})
_FIND_EXEC = frozenset({"-exec", "-execdir", "-ok", "-okdir"})
_SHELL_VALUE_OPTIONS = frozenset({"--rcfile", "--init-file"})  # bash; the next word is a file
# Long and alternative spellings of the flags deny rules usually name, per program.
_ALIASES: dict[str, dict[str, str]] = {
    "rm": {"--recursive": "r", "-R": "r", "--force": "f", "--dir": "d"},
    "cp": {"--recursive": "r", "-R": "r", "--force": "f"},
    "mv": {"--force": "f"},
    "chmod": {"--recursive": "R"},
    "chown": {"--recursive": "R"},
    "chgrp": {"--recursive": "R"},
    "git": {"--force": "f"},
}


class Unjudgeable(Exception):
    """A command whose program or inner command is known only when the shell runs it."""


@dataclass(frozen=True)
class _Wrapper:
    """How a wrapper program names the command it runs."""

    takes_value: frozenset[str] = frozenset()  # options whose value is the next word
    operands: int = 0  # words between the options and the command (timeout's duration)
    assignments: bool = False  # NAME=VALUE words may come before the command
    line_options: frozenset[str] = frozenset()  # options whose value is a shell line
    permutes: bool = False  # its options may follow its operands (util-linux su, runuser)


def _w(
    values: str = "",
    operands: int = 0,
    assignments: bool = False,
    line: str = "",
    permutes: bool = False,
) -> _Wrapper:
    return _Wrapper(
        frozenset(values.split()), operands, assignments, frozenset(line.split()), permutes
    )


_WRAPPERS: dict[str, _Wrapper] = {
    "env": _w("-u --unset -C --chdir", assignments=True, line="-S --split-string"),
    "command": _w(),
    "builtin": _w(),
    "exec": _w("-a"),
    "nice": _w("-n --adjustment"),
    "nohup": _w(),
    "time": _w("-f --format -o --output"),
    "timeout": _w("-s --signal -k --kill-after", operands=1),
    "stdbuf": _w("-i -o -e --input --output --error"),
    "setsid": _w(),
    "sudo": _w(
        "-u -g -C -D -h -p -r -t -U -T --user --group --chdir --prompt --role --type "
        "--other-user --close-from --host --command-timeout",
        assignments=True,
    ),
    "doas": _w("-u -C"),
    "xargs": _w(
        "-a -d -E -I -L -n -P -s --arg-file --delimiter --eof --replace --max-lines "
        "--max-args --max-procs --max-chars --process-slot-var"
    ),
    "chroot": _w("--userspec --groups", operands=1),
    "ionice": _w("-c -n --class --classdata"),
    "taskset": _w(operands=1),
    "busybox": _w(),
    "unshare": _w(),
    "flock": _w("-w --timeout -E --conflict-exit-code", operands=1, line="-c --command"),
    "su": _w("-s -g -G -w --shell --group --supp-group", line="-c --command", permutes=True),
    "runuser": _w("-u -s -g -G -w --user --shell --group", line="-c --command", permutes=True),
    "script": _w(
        "-E -I -O -B -T -t -m --echo --log-in --log-out --log-io",
        line="-c --command",
        permutes=True,
    ),
    "strace": _w("-o -e -p -s -u -E -a -b -I -O -S -X"),
    "ltrace": _w("-o -e -p -s -u -E -a -n"),
    "chrt": _w(operands=1),
    "prlimit": _w(),
    "caffeinate": _w("-t -w"),
}


@dataclass(frozen=True)
class View:
    """One command a simple command would run, as normalised words.

    Attributes:
        argv: The words after quote removal; ``None`` for one that holds an expansion.
        raw: The words as written (for messages and for regexes on the written form).
        via: The wrappers it was found inside, outermost first (empty at top level).
        assignments: ``NAME=VALUE`` words a wrapper (``env``, ``sudo``) sets for it.
        open_ended: Its wrapper adds arguments at run time (``xargs``, ``find -exec``),
            so any flags may follow: a deny rule naming its program refuses it.
    """

    argv: tuple[str | None, ...]
    raw: tuple[str, ...]
    via: tuple[str, ...] = ()
    assignments: tuple[str, ...] = field(default=())
    open_ended: bool = False

    @functools.cached_property
    def program(self) -> str:
        """The program's basename ("" when the program word is an expansion)."""
        first = self.argv[0] if self.argv else None
        return "" if first is None else first.rstrip("/").rsplit("/", 1)[-1]

    @functools.cached_property
    def spellings(self) -> tuple[str, ...]:
        """The command written several equivalent ways, for deny regexes.

        As written; with the program's basename and quotes removed; with every short flag
        cluster split (``-r -f``); with all short flags merged into one cluster in order.
        """
        words = [v if v is not None else r for v, r in zip(self.argv, self.raw, strict=True)]
        if not words:
            return ()
        plain = [self.program or words[0], *words[1:]]
        flags, rest = _split_flags(plain[1:])
        split = [plain[0], *(f"-{c}" for c in flags), *rest]
        merged = [plain[0], *([f"-{''.join(flags)}"] if flags else []), *rest]
        out = [" ".join(self.raw), " ".join(plain), " ".join(split), " ".join(merged)]
        return tuple(dict.fromkeys(out))


LineParser = Callable[[str], Sequence[tuple[tuple[str | None, ...], tuple[str, ...]]]]
"""Reads a shell line into the (values, raws) of each of its simple commands' argv."""


def views(
    argv: Sequence[str | None], raw: Sequence[str], parse_line: LineParser, depth: int = 0
) -> list[View]:
    """The commands that `argv` runs: itself, then what runs inside its wrappers.

    Raises:
        Unjudgeable: A program word, a wrapped program or a shell string is an expansion,
            a shell reads its commands from standard input, or nesting goes too deep.
    """
    if depth > MAX_NESTING:
        raise Unjudgeable(f"commands nested more than {MAX_NESTING} deep")
    top = View(tuple(argv), tuple(raw))
    found = [top]
    if not argv:
        return found
    if argv[0] is None:
        raise Unjudgeable(f"its program {raw[0]!r} is an expansion, known only when it runs")
    name = top.program
    open_ended = name in _OPEN_ENDED
    for inner_argv, inner_raw, assigns in _inner_commands(name, argv, raw, parse_line, depth):
        for view in views(inner_argv, inner_raw, parse_line, depth + 1):
            found.append(
                View(
                    view.argv,
                    view.raw,
                    (name, *view.via),
                    (*assigns, *view.assignments),
                    view.open_ended or (open_ended and not view.via),
                )
            )
    return found


def deny_matches(pattern: re.Pattern[str], view: View) -> str | None:
    """The spelling of `view` that the deny `pattern` refuses, or None.

    A pattern that reads as a plain command (``rm -rf``, ``git push --force``) matches a
    command with the same program basename, at least its flags (in any order or spelling)
    and its other words in order (each a prefix of a command word). Any pattern also
    matches as a regex searched in the command's :attr:`View.spellings`.
    """
    spellings = view.spellings
    for text in spellings:
        if pattern.search(text):
            return text
    shape = _command_shape(pattern.pattern)
    if shape is None or shape[0] != view.program:
        return None
    if view.open_ended:
        return spellings[-1]
    want_prog, want_flags, want_rest = shape
    aliases = _ALIASES.get(want_prog, {})
    values = [v for v in view.argv[1:] if v is not None]
    have_flags, have_rest = _flag_set(values, aliases)
    if want_flags <= have_flags and _in_order(want_rest, have_rest):
        return spellings[-1]
    return None


# --- helpers ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _command_shape(pattern: str) -> tuple[str, frozenset[str], tuple[str, ...]] | None:
    """A deny pattern read as a command (program, flags, other words), or None."""
    if _COMMAND_SHAPED.fullmatch(pattern.strip()) is None:
        return None
    words = pattern.strip().strip("^$").split()
    program = words[0].rsplit("/", 1)[-1]
    flags, rest = _flag_set(words[1:], _ALIASES.get(program, {}))
    return program, frozenset(flags), tuple(rest)


def _split_flags(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """Short flag letters (clusters split) and the other words, up to ``--``."""
    flags: list[str] = []
    rest: list[str] = []
    ended = False
    for word in words:
        if not ended and word == "--":
            ended = True
            rest.append(word)
        elif not ended and len(word) > 1 and word[0] == "-" and word[1] != "-":
            flags.extend(word[1:])
        else:
            rest.append(word)
    return flags, rest


def _flag_set(words: Sequence[str], aliases: dict[str, str]) -> tuple[set[str], list[str]]:
    flags: set[str] = set()
    rest: list[str] = []
    for word in words:
        if word in aliases:
            flags.add(aliases[word])
        elif word.startswith("--") and len(word) > 2:
            flags.add(word.split("=", 1)[0])
        elif len(word) > 1 and word[0] == "-":
            flags.update(aliases.get(f"-{c}", c) for c in word[1:])
        else:
            rest.append(word)
    return flags, rest


def _in_order(wanted: Sequence[str], have: Sequence[str]) -> bool:
    index = 0
    for word in have:
        if index < len(wanted) and word.startswith(wanted[index]):
            index += 1
    return index == len(wanted)


_Inner = tuple[tuple[str | None, ...], tuple[str, ...], tuple[str, ...]]


def _inner_commands(
    name: str, argv: Sequence[str | None], raw: Sequence[str], parse_line: LineParser, depth: int
) -> list[_Inner]:
    args, raws = list(argv[1:]), list(raw[1:])
    if name in _SHELLS:
        return _shell_inner(name, args, parse_line)
    if name == "eval":
        return _line_inner(_joined(args, raws, name), parse_line)
    if name == "watch":
        rest = _after_options(args, raws, _w("-n --interval -d --differences"), name)
        return _line_inner(_joined(list(rest[0]), list(rest[1]), name), parse_line)
    if name == "find":
        return _find_inner(args, raws)
    wrapper = _WRAPPERS.get(name)
    if wrapper is None:
        return []
    line = _line_option(args, wrapper, name)
    if line is not None:
        return _line_inner(line, parse_line)
    inner, inner_raw, assigns = _after_options(args, raws, wrapper, name)
    return [(inner, inner_raw, assigns)] if inner else []


def _joined(args: Sequence[str | None], raws: Sequence[str], name: str) -> str:
    if any(a is None for a in args):
        shown = " ".join(raws)
        raise Unjudgeable(f"{name} runs {shown!r}, which holds an expansion")
    return " ".join(a for a in args if a is not None)


def _line_inner(line: str, parse_line: LineParser) -> list[_Inner]:
    return [(values, raws, ()) for values, raws in parse_line(line)]


def _shell_inner(name: str, args: list[str | None], parse_line: LineParser) -> list[_Inner]:
    """``sh -c LINE``: judge LINE; a shell reading standard input cannot be judged.

    Option values are skipped as the shell skips them: ``-o NAME``, ``-O NAME`` (one word
    per ``o``/``O`` of a cluster) and bash's ``--rcfile FILE``/``--init-file FILE``, so
    ``sh -o errexit -c LINE`` is judged by LINE, not read as the script ``errexit``.
    """
    takes_c = False
    index = 0
    while index < len(args):
        arg = args[index]
        if arg is None:
            raise Unjudgeable(f"{name} is given an expansion, known only when it runs")
        if arg == "--" or not arg.startswith(("-", "+")) or arg in ("-", "+"):
            if takes_c:
                return _line_inner(arg if arg != "--" else _next(args, index, name), parse_line)
            if arg in ("-", "--"):
                break
            return []  # `sh script.sh`: a file offload cannot read ahead
        if arg.startswith("--"):
            index += 1 + int(arg in _SHELL_VALUE_OPTIONS)
            continue
        takes_c = takes_c or (arg[0] == "-" and "c" in arg[1:])
        index += 1 + sum(letter in "oO" for letter in arg[1:])
    raise Unjudgeable(f"{name} reads its commands from standard input or an unseen string")


def _next(args: list[str | None], index: int, name: str) -> str:
    if index + 1 < len(args) and args[index + 1] is not None:
        return str(args[index + 1])
    raise Unjudgeable(f"{name} -c is given no command string offload can read")


def _line_option(args: list[str | None], wrapper: _Wrapper, name: str) -> str | None:
    """The shell line a wrapper is given (``env -S LINE``, ``su -c LINE``), if any.

    Read as the wrapper's option parser reads it: a long option abbreviated (``--split``),
    a short one inside a cluster (``-iS LINE``) or with its value attached (``-iSLINE``);
    and only among the wrapper's own words. ``env python3 -S ls`` runs ``python3 -S ls``
    (the script ``ls``): ``-S`` there is python's, so it is no shell line to judge.
    """
    if not wrapper.line_options:
        return None
    operands, index = 0, 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            return None
        if arg is None or not arg.startswith("-") or arg == "-":
            if not wrapper.permutes and operands >= wrapper.operands:
                return None  # the command starts here: what follows is its own
            operands, index = operands + 1, index + 1
            continue
        if arg.startswith("--"):
            key, equals, value = arg.partition("=")
            if _long_option(key, wrapper.line_options):
                return value if equals else _next(args, index, name)
            index += 1 + _value_words(arg, wrapper.takes_value)
            continue
        for position, letter in enumerate(arg[1:], 1):
            if f"-{letter}" in wrapper.line_options:
                rest = arg[position + 1 :]
                return rest if rest else _next(args, index, name)
            if f"-{letter}" in wrapper.takes_value:
                break  # the rest of the cluster is that option's value
        index += 1 + _value_words(arg, wrapper.takes_value)
    return None


def _long_option(given: str, options: frozenset[str]) -> bool:
    """True when `given` names one of `options`, whole or abbreviated (as GNU getopt
    accepts any unambiguous prefix: ``--un`` is ``--unset``)."""
    if given in options:
        return True
    return len(given) > 2 and any(o.startswith(given) for o in options if o[1] == "-")


def _after_options(
    args: list[str | None], raws: list[str], wrapper: _Wrapper, name: str
) -> tuple[tuple[str | None, ...], tuple[str, ...], tuple[str, ...]]:
    """The command a wrapper runs: the words after its options, assignments and operands."""
    index, assigns = 0, []
    while index < len(args):
        arg = args[index]
        if arg is None:
            raise Unjudgeable(f"{name} is given {raws[index]!r}, an expansion")
        if arg == "--":
            index += 1
            break
        if arg.startswith("-") and arg != "-":
            index += 1 + _value_words(arg, wrapper.takes_value)
            continue
        if wrapper.assignments and _ASSIGN.match(arg):
            assigns.append(arg)
            index += 1
            continue
        break
    index += wrapper.operands
    return tuple(args[index:]), tuple(raws[index:]), tuple(assigns)


def _value_words(arg: str, takes_value: frozenset[str]) -> int:
    """1 when the option `arg` takes the next word as its value, else 0.

    A long option may be abbreviated (``env --un NAME``), as GNU getopt allows: read as the
    whole option, its value is never mistaken for the command.
    """
    if arg.startswith("--"):
        return int("=" not in arg and _long_option(arg, takes_value))
    for position, letter in enumerate(arg[1:], 1):
        if f"-{letter}" in takes_value:
            return int(position == len(arg) - 1)  # a value attached to the cluster: none
    return 0


def _find_inner(args: list[str | None], raws: list[str]) -> list[_Inner]:
    found: list[_Inner] = []
    index = 0
    while index < len(args):
        if args[index] in _FIND_EXEC:
            end = index + 1
            while end < len(args) and args[end] not in (";", "+"):
                end += 1
            found.append((tuple(args[index + 1 : end]), tuple(raws[index + 1 : end]), ()))
            index = end
        index += 1
    return [item for item in found if item[0]]
