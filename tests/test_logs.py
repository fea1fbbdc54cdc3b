"""Tests of offload.logs against real files in tmp_path.

Bounded reading is checked by counting the bytes that ``os.pread`` hands back, not by
timing, so the tests stay deterministic on a slow machine.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload.errors import InvalidInput
from offload.logs import MAX_TAIL_BYTES, MAX_TAIL_LINES, Tail, check_tail_args, read_from, read_tail
from offload.progress import Progress, parse_progress, progress_of

BLOCK_BYTES = 8192  # the read size output.py documents; the bound allows one block over


class PreadCounter:
    """Wraps os.pread and adds up how many bytes it returned."""

    def __init__(self, real: Callable[[int, int, int], bytes]) -> None:
        self.real = real
        self.calls = 0
        self.bytes = 0

    def __call__(self, fd: int, n: int, offset: int) -> bytes:
        data = self.real(fd, n, offset)
        self.calls += 1
        self.bytes += len(data)
        return data


@pytest.fixture
def pread(monkeypatch: pytest.MonkeyPatch) -> PreadCounter:
    counter = PreadCounter(os.pread)
    monkeypatch.setattr(os, "pread", counter)
    return counter


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory shared by hypothesis examples (function-scoped tmp_path is not allowed)."""
    return tmp_path_factory.mktemp("scratch")


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def numbered(n: int) -> bytes:
    return b"".join(b"line %d\n" % i for i in range(1, n + 1))


# --- check_tail_args -------------------------------------------------------------------


@pytest.mark.parametrize("lines, max_bytes", [(0, 1), (100, 65_536), (10_000, 1_048_576)])
def test_check_tail_args_accepts_the_edges(lines: int, max_bytes: int) -> None:
    assert check_tail_args(lines, max_bytes) == (lines, max_bytes)


@pytest.mark.parametrize(
    "lines, max_bytes, message",
    [
        (-3, 100, "tail must be between 0 and 10000 lines, got -3"),
        (10_001, 100, "tail must be between 0 and 10000 lines, got 10001"),
        (True, 100, "tail must be between 0 and 10000 lines, got True"),
        ("5", 100, "tail must be between 0 and 10000 lines, got '5'"),
        (10, 0, "tail max_bytes must be between 1 and 1048576 bytes, got 0"),
        (10, -1, "tail max_bytes must be between 1 and 1048576 bytes, got -1"),
        (10, 1_048_577, "tail max_bytes must be between 1 and 1048576 bytes, got 1048577"),
        (10, 2.5, "tail max_bytes must be between 1 and 1048576 bytes, got 2.5"),
    ],
)
def test_check_tail_args_rejects_out_of_range(lines: int, max_bytes: int, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        check_tail_args(lines, max_bytes)
    assert str(info.value) == message


def test_limits_are_the_documented_ones() -> None:
    assert (MAX_TAIL_LINES, MAX_TAIL_BYTES) == (10_000, 1_048_576)


def test_read_tail_validates_before_touching_the_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="got -1"):
        read_tail(tmp_path / "missing.log", lines=-1)


# --- read_tail -------------------------------------------------------------------------


def test_missing_file_is_an_empty_log(tmp_path: Path) -> None:
    assert read_tail(tmp_path / "nope.log") == Tail("", 0, False, 0)
    assert read_tail(tmp_path / "not-a-dir" / "x.log") == Tail("", 0, False, 0)


def test_a_fifo_at_a_logs_path_reads_as_no_output_at_once(tmp_path: Path) -> None:
    """A task can plant a FIFO where its log goes; no reader, the supervisor least of all,
    may block on it (opening a FIFO nobody writes waits for ever)."""
    fifo = tmp_path / "x.log"
    os.mkfifo(fifo)
    reads: list[object] = []
    reader = threading.Thread(
        target=lambda: reads.extend([read_tail(fifo), read_from(fifo, 0), progress_of(fifo)])
    )
    reader.start()
    reader.join(10)
    blocked = reader.is_alive()
    while reader.is_alive():  # release it before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(1)
    assert not blocked and reads == [read_tail(tmp_path / "absent"), (b"", 0), None]


def test_empty_file(tmp_path: Path) -> None:
    assert read_tail(write(tmp_path / "t.log", b"")) == Tail("", 0, False, 0)


def test_tail_by_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "t.log", numbered(1000))
    tail = read_tail(path, lines=3)
    assert tail == Tail("line 998\nline 999\nline 1000\n", 3, True, path.stat().st_size)


def test_whole_file_when_it_has_fewer_lines(tmp_path: Path) -> None:
    data = numbered(5)
    path = write(tmp_path / "t.log", data)
    assert read_tail(path, lines=5) == Tail(data.decode(), 5, False, len(data))
    assert read_tail(path, lines=100) == Tail(data.decode(), 5, False, len(data))


def test_partial_last_line_counts_as_a_line(tmp_path: Path) -> None:
    path = write(tmp_path / "t.log", b"a\nb\nc\npartial")
    assert read_tail(path, lines=2) == Tail("c\npartial", 2, True, 13)
    assert read_tail(path, lines=4) == Tail("a\nb\nc\npartial", 4, False, 13)


def test_trailing_newline_is_not_an_extra_line(tmp_path: Path) -> None:
    path = write(tmp_path / "t.log", b"a\nb\nc\n")
    assert read_tail(path, lines=1) == Tail("c\n", 1, True, 6)
    assert read_tail(path, lines=3) == Tail("a\nb\nc\n", 3, False, 6)


def test_blank_lines_are_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "t.log", b"a\n\n\n")
    assert read_tail(path, lines=2) == Tail("\n\n", 2, True, 4)


def test_zero_lines_returns_empty_text(tmp_path: Path) -> None:
    path = write(tmp_path / "t.log", b"a\nb\n")
    assert read_tail(path, lines=0) == Tail("", 0, True, 4)
    assert read_tail(write(tmp_path / "e.log", b""), lines=0) == Tail("", 0, False, 0)


def test_tail_by_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "t.log", b"0123456789\nabcdefghij\n")
    tail = read_tail(path, lines=100, max_bytes=5)
    assert tail == Tail("ghij\n", 1, True, 22)


def test_byte_cap_equal_to_the_file_is_not_truncated(tmp_path: Path) -> None:
    path = write(tmp_path / "t.log", b"abc\ndef\n")
    assert read_tail(path, lines=100, max_bytes=8) == Tail("abc\ndef\n", 2, False, 8)


def test_byte_cap_across_blocks(tmp_path: Path) -> None:
    data = numbered(20_000)
    path = write(tmp_path / "t.log", data)
    tail = read_tail(path, lines=10_000, max_bytes=20_000)
    assert tail.truncated
    assert tail.text.encode() == data[-20_000:]
    assert tail.text.endswith("line 20000\n")


def test_lines_spanning_many_blocks(tmp_path: Path) -> None:
    data = numbered(20_000)
    path = write(tmp_path / "t.log", data)
    tail = read_tail(path, lines=5000, max_bytes=MAX_TAIL_BYTES)
    assert tail.lines == 5000
    assert tail.text == b"".join(b"line %d\n" % i for i in range(15_001, 20_001)).decode()


def test_non_utf8_bytes_are_replaced(tmp_path: Path) -> None:
    path = write(tmp_path / "t.log", b"ok \xff\xfe done\n")
    assert read_tail(path).text == "ok \ufffd\ufffd done\n"


@pytest.mark.parametrize("char", ["é", "€", "😀"])
@pytest.mark.parametrize("cap", [1, 2, 3, 4, 5, 6, 7])
def test_multibyte_char_cut_by_the_cap_is_dropped(tmp_path: Path, char: str, cap: int) -> None:
    path = write(tmp_path / "t.log", (char * 50).encode())
    width = len(char.encode())
    tail = read_tail(path, lines=10, max_bytes=cap)
    assert tail.text == char * (cap // width)
    assert tail.truncated


def test_single_enormous_line_returns_its_end(tmp_path: Path, pread: PreadCounter) -> None:
    path = tmp_path / "huge.log"
    with path.open("wb") as f:
        f.write(b"x" * (50 * 2**20))
        f.write(b"END")
    tail = read_tail(path, lines=10, max_bytes=65_536)
    assert tail == Tail("x" * (65_536 - 3) + "END", 1, True, 50 * 2**20 + 3)
    assert pread.bytes <= 65_536 + BLOCK_BYTES


def test_sparse_gigabyte_file_reads_a_bounded_amount(tmp_path: Path, pread: PreadCounter) -> None:
    path = tmp_path / "sparse.log"
    with path.open("wb") as f:
        f.seek(2**30)
        f.write(b"last line\n")
    tail = read_tail(path, lines=100, max_bytes=65_536)
    assert tail.size == 2**30 + 10
    assert tail.truncated
    assert tail.text.endswith("\x00last line\n")
    assert len(tail.text) == 65_536
    assert 0 < pread.bytes <= 65_536 + BLOCK_BYTES


def test_few_lines_read_only_one_block(tmp_path: Path, pread: PreadCounter) -> None:
    path = write(tmp_path / "t.log", numbered(100_000))
    assert read_tail(path, lines=3).text == "line 99998\nline 99999\nline 100000\n"
    assert (pread.calls, pread.bytes) == (1, BLOCK_BYTES)


# --- read_from -------------------------------------------------------------------------


def test_read_from_follows_growth(tmp_path: Path) -> None:
    path = write(tmp_path / "t.log", b"one\n")
    data, offset = read_from(path, 0)
    assert (data, offset) == (b"one\n", 4)
    assert read_from(path, offset) == (b"", 4)
    with path.open("ab") as f:
        f.write(b"two\nthree\n")
    assert read_from(path, offset) == (b"two\nthree\n", 14)


def test_read_from_caps_each_read(tmp_path: Path) -> None:
    path = write(tmp_path / "t.log", b"abcdefghij")
    assert read_from(path, 0, max_bytes=4) == (b"abcd", 4)
    assert read_from(path, 4, max_bytes=4) == (b"efgh", 8)
    assert read_from(path, 8, max_bytes=4) == (b"ij", 10)


def test_read_from_restarts_when_the_file_shrank(tmp_path: Path) -> None:
    path = write(tmp_path / "t.log", b"old output that was long\n")
    path.write_bytes(b"new\n")
    assert read_from(path, 25) == (b"new\n", 4)


def test_read_from_missing_file_keeps_the_offset(tmp_path: Path) -> None:
    assert read_from(tmp_path / "nope.log", 42) == (b"", 42)


@pytest.mark.parametrize(
    "offset, max_bytes, message",
    [
        (-1, 10, "read offset must be at least 0 bytes, got -1"),
        (0, 0, "read max_bytes must be between 1 and 1048576 bytes, got 0"),
        (0, MAX_TAIL_BYTES + 1, "read max_bytes must be between 1 and 1048576 bytes, got 1048577"),
    ],
)
def test_read_from_rejects_bad_args(
    tmp_path: Path, offset: int, max_bytes: int, message: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        read_from(tmp_path / "t.log", offset, max_bytes)
    assert str(info.value) == message


# --- parse_progress --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, fraction",
    [
        ("42%", 0.42),
        ("42.5 %", 0.425),
        ("Downloading model.bin:  42%|####      | 420M/1.00G [00:10<00:14]", 0.42),
        ("0%", 0.0),
        ("100%", 1.0),
        ("[3/10] Building wheel", 0.3),
        ("3/10", 0.3),
        ("(3 / 10)", 0.3),
        ("step 3 of 10", 0.3),
        ("Step 3 of 10: compiling", 0.3),
        ("10/10 done", 1.0),
        ("0/5", 0.0),
        ("[1/4] fetch\n[2/4] build\n", 0.5),
        ("[2/4] build\nwarning: unused import\n\n", 0.5),
        (" 10%|#\r 50%|#####\r 90%|#########", 0.9),
        ("50%\r\n", 0.5),
        ("75%|#######\r", 0.75),
        ("\x1b[32m 60%\x1b[0m", 0.6),
        ("Epoch 1/5 loss 0.3 80%", 0.8),
        ("2026/11/23 12:00:01 [3/10] linking", 0.3),
        ("10%\n20%\n30%", 0.3),
    ],
)
def test_parse_progress_finds_markers(text: str, fraction: float) -> None:
    progress = parse_progress(text)
    assert progress is not None
    assert progress.fraction == pytest.approx(fraction)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n",
        "no progress here",
        "2026/11/23",
        "11/23/2026 started",
        "1/0",
        "0 of 0",
        "5/3",
        "7 of 4",
        "150%",
        "100.5%",
        "loss -5%",
        "src/3/10",
        "src/3/10/main.py",
        "./3/10",
        "host 192.168.1.10",
        "route 10.0.0.1/24",
        "version 1.2.3",
        "upgrading 1.2.3/2.0.1",
        "libfoo 1.2/3.4",
        "abc3/10",
        "3/10abc",
        "GET /files/a20%2Fb",
        "used 1.2.3%",
        "50%\rdone",
    ],
)
def test_parse_progress_ignores_non_progress(text: str) -> None:
    assert parse_progress(text) is None


def test_parse_progress_message_is_the_line_stripped_and_short() -> None:
    assert parse_progress("start\n  [3/10] Building foo  \nnoise\n") == Progress(
        0.3, "[3/10] Building foo"
    )
    long = parse_progress("x" * 300 + " 50%")
    assert long is not None
    assert long.message == "x" * 200


def test_progress_of_reads_the_end_of_a_log(tmp_path: Path) -> None:
    path = write(tmp_path / "t.log", numbered(10_000) + b"[7/10] testing\n")
    assert progress_of(path) == Progress(0.7, "[7/10] testing")
    assert progress_of(tmp_path / "missing.log") is None


def test_progress_of_ignores_markers_older_than_its_window(tmp_path: Path) -> None:
    path = write(tmp_path / "t.log", b"[9/10] old\n" + b"chatter\n" * 100)
    assert progress_of(path) is None


# --- properties ------------------------------------------------------------------------

_marker_alphabet = st.text(alphabet="0123456789/%. ofstep[]()\r\n-x\x1b", max_size=60)


@given(st.one_of(st.text(), _marker_alphabet))
def test_parse_progress_never_raises_and_stays_in_range(text: str) -> None:
    progress = parse_progress(text)
    if progress is not None:
        assert progress.fraction is None or 0.0 <= progress.fraction <= 1.0
        assert len(progress.message) <= 200


def reference_tail(content: bytes, lines: int, max_bytes: int) -> bytes:
    """The obvious, whole-file tail that read_tail must agree with."""
    if lines == 0:
        return b""
    kept = b"".join(re.findall(rb"[^\n]*\n|[^\n]+$", content)[-lines:])
    if len(kept) <= max_bytes:
        return kept
    kept = kept[-max_bytes:]
    skip = 0
    while skip < min(3, len(kept)) and kept[skip] & 0xC0 == 0x80:
        skip += 1
    return kept[skip:]


_log_bytes = st.one_of(
    st.binary(max_size=3 * BLOCK_BYTES),
    st.lists(
        st.sampled_from([b"\n", b"ab", b"\r", b"\xc3\xa9", b"\xe2\x82\xac", b"\xff", b"y" * 5000]),
        max_size=40,
    ).map(b"".join),
)


@settings(max_examples=300)
@given(content=_log_bytes, lines=st.integers(0, 50), max_bytes=st.integers(1, 4 * BLOCK_BYTES))
def test_read_tail_matches_a_whole_file_tail_on_any_bytes(
    scratch: Path, content: bytes, lines: int, max_bytes: int
) -> None:
    path = write(scratch / "any.log", content)
    tail = read_tail(path, lines, max_bytes)
    expected = reference_tail(content, lines, max_bytes)
    assert tail.text == expected.decode("utf-8", errors="replace")
    assert tail.size == len(content)
    assert tail.lines <= lines
    assert tail.truncated == (len(expected) < len(content))
