"""Progress markers in a task's own output: `42%`, `[3/10]`, `3/10`, `step 3 of 10`.

The supervisor reads the latest marker of each running task's log (`progress_of`, from its
last few kilobytes) and, when a task ends, the last one of its whole log
(`final_progress`); `parse_progress` is the pure function both use. Stdlib only.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from pathlib import Path

from offload.logs import open_if_exists, read_tail
from offload.records import record

__all__ = ["FINAL_SCAN_BYTES", "Progress", "final_progress", "parse_progress", "progress_of"]

_MESSAGE_MAX_CHARS = 200


_PROGRESS_WINDOW_LINES = 20


FINAL_SCAN_BYTES = 4 << 20


_SCAN_BLOCK_BYTES = 256 << 10


_MAX_CARRY_BYTES = 1 << 16


# A percentage ("42%", "42.5 %"), a step ratio ("[3/10]", "3/10", "(3 / 10)") or a count
# ("step 3 of 10"). The look-arounds keep out numbers glued to words, versions and addresses
# ("1.2.3%", "10.0.0.1/24"), path segments ("src/3/10") and dates ("2026/11/23"), and
# signed deltas ("-5%"). Digit runs are bounded so int() never meets a giant literal.
_MARKER = r"""
    (?<![\w.+\-])(?P<pct>[0-9]{1,3}(?:\.[0-9]+)?)[ \t]?%(?!\w)
    | (?<![\w./])(?P<done>[0-9]{1,12})[ \t]*/[ \t]*(?P<total>[0-9]{1,12})(?![\w./])
    | (?<![\w.])(?P<of_done>[0-9]{1,12})[ \t]+of[ \t]+(?P<of_total>[0-9]{1,12})(?![\w.])
    """


# Where a marker may be, found at C speed (a leading digit lets the engine skip ahead);
# only the lines it hits are parsed with the full pattern.
_CANDIDATE = rb"[0-9](?:[ \t]?%|[ \t]*/[ \t]*[0-9]|[ \t]+of[ \t]+[0-9])"


# Colour and cursor escapes (CSI sequences) that progress bars wrap around their text.
_ANSI_CSI = r"\x1b\[[0-?]*[ -/]*[@-~]"


@functools.cache
def _regexes() -> tuple[re.Pattern[str], re.Pattern[bytes], re.Pattern[str]]:
    """The marker, candidate and escape patterns, compiled on first use.

    Most commands that import this module (`offload list`, `show`) never look for
    progress, and compiling the patterns costs a millisecond of every call.
    """
    return (
        re.compile(_MARKER, re.VERBOSE | re.IGNORECASE),
        re.compile(_CANDIDATE, re.IGNORECASE),
        re.compile(_ANSI_CSI),
    )


@record
class Progress:
    """A task's progress as read from its own output.

    Attributes:
        fraction: Done so far, between 0.0 and 1.0; None when unknown.
        message: The line the marker came from, stripped, at most 200 characters.
    """

    fraction: float | None
    message: str


def parse_progress(text: str) -> Progress | None:
    """Finds the most recent progress marker in some output.

    Lines are scanned from the end and the first one holding a marker wins; within a
    line the rightmost marker wins, since it was written last. A line rewritten with
    carriage returns (a progress bar) is its last non-blank ``\\r`` segment, which is what
    a terminal shows. Recognised: percentages (``42%``, ``42.5 %``, ``42%|####  |``) and
    steps (``[3/10]``, ``3/10``, ``(3 / 10)``, ``step 3 of 10``). Not progress: numbers
    inside words, paths, dates, versions or IP addresses, a zero total, more done than
    total, and more than 100%.

    Args:
        text: Output, usually the tail of a log. Pure: no I/O.

    Returns:
        The progress, or None when no line holds a marker.
    """
    for raw_line in _lines_from_end(text):
        line = _regexes()[2].sub("", _last_segment(raw_line)).strip()
        fraction = _last_fraction(line)
        if fraction is not None:
            return Progress(fraction, line[:_MESSAGE_MAX_CHARS])
    return None


def progress_of(path: Path, window_bytes: int = 4096) -> Progress | None:
    """Returns the progress shown by the last lines of a log, reading at most a window.

    Args:
        path: The log file; a missing file has no progress.
        window_bytes: Bytes read from the end, 1 to ``MAX_TAIL_BYTES``.

    Returns:
        The most recent progress marker, or None.

    Raises:
        InvalidInput: ``window_bytes`` is out of range.
    """
    tail = read_tail(path, lines=_PROGRESS_WINDOW_LINES, max_bytes=window_bytes)
    return parse_progress(tail.text)


def final_progress(path: Path, max_scan_bytes: int = FINAL_SCAN_BYTES) -> Progress | None:
    """Returns the last progress marker of a log, for a task that has just ended.

    Reads backwards from the end in blocks until a line holds a marker, so a summary
    printed after the last ``[10/10]`` does not hide it. Each block is searched at C speed
    for what may be a marker; only lines with a hit are parsed. At most ``max_scan_bytes``
    (4 MiB, ~0.1 s) are read.

    Raises:
        OSError: The file exists but cannot be read.
    """
    fd = open_if_exists(path)
    if fd is None:
        return None
    try:
        pos = os.fstat(fd).st_size
        stop = max(0, pos - max_scan_bytes)
        carry = b""  # the start of a line whose beginning is in an earlier block
        while pos > stop:
            step = min(_SCAN_BLOCK_BYTES, pos - stop)
            pos -= step
            block = os.pread(fd, step, pos) + carry
            cut = block.find(b"\n") + 1 if pos > stop else 0
            if cut == 0 and pos > stop:  # no newline at all: one endless line
                cut = max(0, len(block) - _MAX_CARRY_BYTES)
            found = _last_marker(block, cut)
            if found is not None:
                return found
            carry = block[:cut]
        return None
    finally:
        os.close(fd)


def _last_marker(block: bytes, start: int) -> Progress | None:
    """The marker of the last line of `block[start:]` that holds a valid one."""
    hits = [m.start() for m in _regexes()[1].finditer(block, start)]
    checked_from = len(block) + 1
    for hit in reversed(hits):
        if hit >= checked_from:
            continue  # a line already judged
        line_start = block.rfind(b"\n", start, hit) + 1 or start
        line_end = block.find(b"\n", hit)
        line = block[line_start : len(block) if line_end < 0 else line_end]
        found = parse_progress(line.decode("utf-8", errors="replace"))
        if found is not None:
            return found
        checked_from = line_start
    return None


def _lines_from_end(text: str) -> Iterator[str]:
    """Yields the lines of ``text`` last first, without splitting all of it up front."""
    end = len(text)
    while True:
        start = text.rfind("\n", 0, end) + 1
        yield text[start:end]
        if start == 0:
            return
        end = start - 1


def _last_segment(line: str) -> str:
    """Returns what a terminal shows of a line rewritten with carriage returns."""
    for segment in reversed(line.split("\r")):
        if segment.strip():
            return segment
    return ""


def _last_fraction(line: str) -> float | None:
    """Returns the fraction of the rightmost valid progress marker in ``line``."""
    found: float | None = None
    for match in _regexes()[0].finditer(line):
        fraction = _fraction_of(match)
        if fraction is not None:
            found = fraction
    return found


def _fraction_of(match: re.Match[str]) -> float | None:
    """Converts one marker match to a fraction, or None when it is not plausible progress."""
    if match["pct"] is not None:
        percent = float(match["pct"])
        return percent / 100 if percent <= 100 else None
    done = match["done"] or match["of_done"]
    total = match["total"] or match["of_total"]
    return _ratio(int(done), int(total))


def _ratio(done: int, total: int) -> float | None:
    """Returns ``done / total`` when it is a fraction of a non-empty whole, else None."""
    if total <= 0 or done > total:
        return None
    return done / total
