"""Reading a model's answer according to its task type's output contract."""

from __future__ import annotations

import re
from dataclasses import dataclass

from offload.errors import OffloadError
from offload.workers.files import FileWrite

__all__ = ["AnswerRejected", "FilesAnswer", "file_content", "parse_files"]

MAX_FILES_PER_ANSWER = 100
_FENCE_OPEN = re.compile(r"^\s*(```|~~~)[^\n`]*\n")
_FILE_BLOCK = re.compile(r'<file\s+path\s*=\s*"([^"\n]+)"\s*>\n?(.*?)</file>', re.DOTALL)


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


def parse_files(answer: str) -> FilesAnswer:
    """The `<file path="...">` blocks of a multi-file answer.

    Raises:
        AnswerRejected: when the answer holds no block or too many.
    """
    blocks = _FILE_BLOCK.findall(answer)
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
    summary = " ".join(_FILE_BLOCK.sub(" ", answer).split())
    return FilesAnswer(files=files, summary=summary)
