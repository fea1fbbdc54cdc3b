"""Reading task output logs: tails and follows (progress markers: `offload.progress`).

A task's stdout/stderr goes to a log file that can grow to gigabytes, while the CLI, the MCP
tools and the HTTP API only ever want its end. So a tail reads backwards from the end in
fixed blocks and stops as soon as it has enough lines or bytes: its cost depends on what is
returned, never on the size of the file. Followers (``logs -f``, SSE) read forwards from an
offset they keep.

Stdlib only, and nothing heavy: the CLI imports this module on every call.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from offload.errors import InvalidInput
from offload.records import record

__all__ = [
    "MAX_TAIL_BYTES",
    "MAX_TAIL_LINES",
    "Tail",
    "check_read_args",
    "check_tail_args",
    "open_if_exists",
    "read_from",
    "read_tail",
    "tail_of_bytes",
]

MAX_TAIL_LINES = 10_000
MAX_TAIL_BYTES = 1_048_576

_BLOCK_BYTES = 8192
_NEWLINE = 0x0A


@record
class Tail:
    """The end of a log file, ready to show.

    Attributes:
        text: The returned bytes decoded as UTF-8 with ``errors="replace"``, so a task
            writing binary garbage never breaks a reader.
        lines: How many lines ``text`` holds; a last line without a newline counts.
        truncated: True when older output exists that was not returned, whether the line
            count or the byte cap stopped the read.
        size: Total size of the log file in bytes (0 when it does not exist).
    """

    text: str
    lines: int
    truncated: bool
    size: int


def check_tail_args(lines: int, max_bytes: int) -> tuple[int, int]:
    """Validates the size of a tail before any file is opened.

    Front ends call this on user input so that a bad ``--tail`` fails with a clear message
    instead of a huge read; :func:`read_tail` calls it too.

    Args:
        lines: Lines wanted, 0 to ``MAX_TAIL_LINES`` (0 returns empty text).
        max_bytes: Byte cap, 1 to ``MAX_TAIL_BYTES``.

    Returns:
        ``(lines, max_bytes)`` unchanged.

    Raises:
        InvalidInput: A value is not an int or is out of its range; the message gives the
            allowed range.
    """
    _check_range("tail", lines, 0, MAX_TAIL_LINES, "lines")
    _check_range("tail max_bytes", max_bytes, 1, MAX_TAIL_BYTES, "bytes")
    return lines, max_bytes


def read_tail(path: Path, lines: int = 100, max_bytes: int = 65_536) -> Tail:
    """Returns the last ``lines`` lines of a log, reading backwards from its end.

    Blocks of 8 KiB are read from the end until the wanted lines or ``max_bytes`` are in
    hand, so tailing a 1 GB log costs the same as tailing a 1 KB one, and no more than
    ``max_bytes`` plus one block is ever read. A line longer than the cap (50 MB without a
    newline) comes back as its last ``max_bytes`` bytes, minus any leading bytes of a UTF-8
    character the cap cut in half.

    Args:
        path: The log file; a missing file is an empty log.
        lines: Lines wanted, 0 to ``MAX_TAIL_LINES``.
        max_bytes: Most bytes returned, 1 to ``MAX_TAIL_BYTES``.

    Returns:
        The tail; ``Tail("", 0, False, 0)`` when the file does not exist.

    Raises:
        InvalidInput: ``lines`` or ``max_bytes`` is out of range.
        OSError: The file exists but cannot be read (permissions, a directory).
    """
    lines, max_bytes = check_tail_args(lines, max_bytes)
    fd = open_if_exists(path)
    if fd is None:
        return Tail("", 0, False, 0)
    try:
        size = os.fstat(fd).st_size
        if lines == 0:
            return Tail("", 0, size > 0, size)
        buf, buf_offset = _read_back(fd, size, lines, max_bytes)
    finally:
        os.close(fd)
    return _cut_tail(buf, buf_offset, size, lines, max_bytes)


def read_from(path: Path, offset: int, max_bytes: int = 65_536) -> tuple[bytes, int]:
    """Returns the output written since ``offset``, for followers that poll a log.

    A file shorter than ``offset`` was purged or recreated, so reading restarts from 0.
    (A recreated file that has already grown past ``offset`` cannot be told apart from
    the old one by size alone.)

    Args:
        path: The log file.
        offset: Where the previous read stopped; 0 for the start.
        max_bytes: Most bytes returned, 1 to ``MAX_TAIL_BYTES``.

    Returns:
        ``(data, new_offset)``: up to ``max_bytes`` raw bytes (a UTF-8 character may be
        split at the end; decode incrementally) and the offset to pass next time.
        ``(b"", offset)`` when the file does not exist.

    Raises:
        InvalidInput: ``offset`` is negative or ``max_bytes`` is out of range.
        OSError: The file exists but cannot be read.
    """
    check_read_args(offset, max_bytes)
    fd = open_if_exists(path)
    if fd is None:
        return b"", offset
    try:
        if os.fstat(fd).st_size < offset:
            offset = 0
        data = os.pread(fd, max_bytes, offset)
    finally:
        os.close(fd)
    return data, offset + len(data)


def check_read_args(offset: int, max_bytes: int) -> tuple[int, int]:
    """Validates a forward read (``offset`` ≥ 0, ``max_bytes`` 1 to ``MAX_TAIL_BYTES``).

    Raises:
        InvalidInput: A value is not an int or is out of its range.
    """
    _check_range("read offset", offset, 0, None, "bytes")
    _check_range("read max_bytes", max_bytes, 1, MAX_TAIL_BYTES, "bytes")
    return offset, max_bytes


def tail_of_bytes(buf: bytes, buf_offset: int, size: int, lines: int, max_bytes: int) -> Tail:
    """The tail of a log held elsewhere (shipped output), cut exactly as `read_tail` cuts.

    Args:
        buf: The log's last bytes, from byte ``buf_offset`` to its end: at least
            ``max_bytes + 1`` of them where the log is longer, so the cut sees the same
            bytes a read of the file would.
        buf_offset: Where ``buf`` starts in the log.
        size: The log's size in bytes.
        lines: Lines wanted, 0 to ``MAX_TAIL_LINES``.
        max_bytes: Most bytes returned, 1 to ``MAX_TAIL_BYTES``.

    Raises:
        InvalidInput: ``lines`` or ``max_bytes`` is out of range.
    """
    lines, max_bytes = check_tail_args(lines, max_bytes)
    if lines == 0:
        return Tail("", 0, size > 0, size)
    return _cut_tail(buf, buf_offset, size, lines, max_bytes)


def _check_range(what: str, value: int, low: int, high: int | None, unit: str) -> None:
    """Raises InvalidInput unless ``value`` is an int in ``low..high`` (no upper bound if None)."""
    # bool is an int subclass; a JSON `true` must not pass as 1.
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if is_int and low <= value and (high is None or value <= high):
        return
    allowed = f"at least {low}" if high is None else f"between {low} and {high}"
    raise InvalidInput(f"{what} must be {allowed} {unit}, got {value!r}")


def open_if_exists(path: Path) -> int | None:
    """Opens ``path`` read-only, returning None when it (or a parent) does not exist.

    Only a regular file counts: anything else at a log's path (a FIFO a task planted, a
    device) reads as no output, and never blocks the reader, who may be the supervisor.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _read_back(fd: int, size: int, lines: int, max_bytes: int) -> tuple[bytes, int]:
    """Reads blocks backwards from ``size`` until enough newlines or bytes are in hand.

    A file ending in a newline needs one more newline than ``lines`` to find where its
    first wanted line starts; one ending in a partial line needs exactly ``lines``.

    Returns:
        The bytes read, in file order, and the file offset where they start.
    """
    chunks: list[bytes] = []
    pos, got, newlines, need = size, 0, 0, lines
    while pos > 0 and got < max_bytes and newlines < need:
        step = min(_BLOCK_BYTES, pos)
        chunk = os.pread(fd, step, pos - step)
        if len(chunk) != step:
            break  # the file shrank under us (purge); what was read so far is consistent
        if not chunks and chunk.endswith(b"\n"):
            need += 1
        chunks.append(chunk)
        pos -= step
        got += step
        newlines += chunk.count(b"\n")
    chunks.reverse()
    return b"".join(chunks), pos


def _cut_tail(buf: bytes, buf_offset: int, size: int, lines: int, max_bytes: int) -> Tail:
    """Trims the bytes read backwards to the wanted lines and byte cap, then decodes them."""
    need = lines + 1 if buf.endswith(b"\n") else lines
    start = _start_of_last_lines(buf, need)
    if len(buf) - start > max_bytes:
        start = len(buf) - max_bytes
    truncated = buf_offset + start > 0
    if truncated and (start == 0 or buf[start - 1] != _NEWLINE):
        start = _skip_continuation_bytes(buf, start)
    data = buf[start:]
    return Tail(data.decode("utf-8", errors="replace"), _count_lines(data), truncated, size)


def _start_of_last_lines(buf: bytes, newlines: int) -> int:
    """Returns the index just past the ``newlines``-th newline from the end, or 0."""
    index = len(buf)
    for _ in range(newlines):
        index = buf.rfind(b"\n", 0, index)
        if index < 0:
            return 0
    return index + 1


def _skip_continuation_bytes(buf: bytes, start: int) -> int:
    """Moves ``start`` past the (at most 3) trailing bytes of a UTF-8 character cut in half."""
    end = min(start + 3, len(buf))
    while start < end and buf[start] & 0xC0 == 0x80:
        start += 1
    return start


def _count_lines(data: bytes) -> int:
    """Counts lines, a last line without a newline included."""
    partial = 1 if data and not data.endswith(b"\n") else 0
    return data.count(b"\n") + partial
