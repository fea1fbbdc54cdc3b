"""Reading a model's answer according to its task type's output contract."""

from __future__ import annotations

import ast
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import PurePath

from offload.errors import OffloadError
from offload.workers.files import FileWrite

__all__ = [
    "AnswerRejected",
    "FilesAnswer",
    "broken_promise",
    "check_promises",
    "file_content",
    "parse_files",
]

MAX_FILES_PER_ANSWER = 100
_FENCE_OPEN = re.compile(r"^\s*(```|~~~)[^\n`]*\n")
# A block opens with its tag alone on a line; it closes at the last line that is exactly
# `</file>` before the next opening (or the end), so `</file>` inside a file's content
# (a string, a template, another `</file>` line) never cuts it short.
_OPEN = re.compile(r'^[ \t]*<file\s+path\s*=\s*"([^"\n]+)"\s*>[ \t]*$', re.MULTILINE)
_CLOSE = re.compile(r"^[ \t]*</file>[ \t]*$", re.MULTILINE)
_FENCE_LINE = re.compile(r"^\s*(```|~~~)", re.MULTILINE)
_PROSE_SUFFIXES = frozenset({".md", ".markdown", ".rst", ".txt", ".adoc", ".html", ".htm"})


class AnswerRejected(OffloadError):
    """The answer does not follow the task type's output contract; nothing was written."""


def _unfence(text: str) -> str:
    """Removes one Markdown fence wrapped around the whole text, if there is one."""
    opening = _FENCE_OPEN.match(text)
    if not opening:
        return text
    fence = opening.group(1)
    body = text[opening.end() :].rstrip()
    if not body.endswith(fence):
        return text
    return body[: -len(fence)]


def _as_file(text: str) -> str:
    text = text.rstrip("\n")
    return text + "\n" if text else ""


def file_content(answer: str) -> str:
    """The content of the single output file an answer holds.

    Raises:
        AnswerRejected: when the answer is empty.
    """
    content = _as_file(_unfence(answer.strip("\n")))
    if not content.strip():
        raise AnswerRejected("the model returned an empty answer; nothing was written")
    return content


@dataclass(frozen=True)
class FilesAnswer:
    """The files of a multi-file answer and the summary written around them."""

    files: list[FileWrite]
    summary: str


def _blocks(answer: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The (path, body) blocks of an answer and the text around them."""
    opens = list(_OPEN.finditer(answer))
    blocks: list[tuple[str, str]] = []
    outside = [answer[: opens[0].start()]] if opens else [answer]
    for index, match in enumerate(opens):
        end = opens[index + 1].start() if index + 1 < len(opens) else len(answer)
        region = answer[match.end() : end]
        closes = list(_CLOSE.finditer(region))
        if not closes:
            raise AnswerRejected(
                f"the block of {match.group(1).strip()} has no closing </file> line (the "
                "answer may have been cut off); nothing was written"
            )
        last = closes[-1]
        blocks.append((match.group(1), region[: last.start()].removeprefix("\n")))
        outside.append(region[last.end() :])
    return blocks, outside


def parse_files(answer: str) -> FilesAnswer:
    """The `<file path="...">` blocks of a multi-file answer.

    Raises:
        AnswerRejected: when the answer holds no block, too many, or an unclosed one.
    """
    blocks, outside = _blocks(answer)
    if not blocks:
        raise AnswerRejected(
            'the answer lists no <file path="..."> blocks, so there was nothing to write; '
            "the answer is in the task log"
        )
    if len(blocks) > MAX_FILES_PER_ANSWER:
        raise AnswerRejected(
            f"the answer lists {len(blocks)} files; at most {MAX_FILES_PER_ANSWER} are written"
        )
    files = [FileWrite(path.strip(), _as_file(_unfence(body))) for path, body in blocks]
    summary = " ".join(" ".join(outside).split())
    return FilesAnswer(files=files, summary=summary)


def broken_promise(path: str, content: str) -> str | None:
    """Why `content` is not what a file named `path` promises, or None when it is.

    Checked: a Markdown fence line left in a file that is not prose, and source that does
    not parse (Python, JSON, TOML). A task whose answer fails this writes nothing.
    """
    suffix = PurePath(path).suffix.lower()
    if suffix not in _PROSE_SUFFIXES and _FENCE_LINE.search(content):
        kind = suffix or "plain"
        return f"{path} holds a Markdown code fence (```), which no {kind} file has"
    try:
        if suffix in (".py", ".pyi"):
            ast.parse(content, filename=path)
        elif suffix == ".json":
            json.loads(content)
        elif suffix == ".toml":
            tomllib.loads(content)
    except SyntaxError as exc:
        return f"{path} is not valid Python: {exc.msg} (line {exc.lineno})"
    except json.JSONDecodeError as exc:
        return f"{path} is not valid JSON: {exc.msg} (line {exc.lineno})"
    except tomllib.TOMLDecodeError as exc:
        return f"{path} is not valid TOML: {exc}"
    return None


def check_promises(files: list[FileWrite]) -> None:
    """Refuses an answer any of whose files is not what its name promises.

    Raises:
        AnswerRejected: naming the file and the problem; nothing was written.
    """
    for item in files:
        problem = broken_promise(item.path, item.content)
        if problem:
            raise AnswerRejected(f"{problem}; nothing was written (the answer is in the task log)")
