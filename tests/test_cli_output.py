"""The CLI as a shell user meets it: exit codes, which stream carries what, the list's layout.

Every test runs the real `python -m offload` in a subprocess against a private
OFFLOAD_HOME and a real supervisor, except the table-layout ones, which call the
renderer with fixed widths.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import _env, wait_until
from offload.cli.render import ID_CHARS, table_lines
from offload.queue.models import State, TaskSpec
from offload.queue.sqlite import SqliteStore

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli_bytes(offload_home: Path, workspace: Path) -> Callable[..., Any]:
    """`offload ARGS` with stdout and stderr captured as bytes."""

    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-P", "-m", "offload", *args],
            env=_env(offload_home),
            cwd=workspace,
            capture_output=True,
            timeout=timeout,
        )

    return run


def test_version_prints_the_version(cli: Cli) -> None:
    from offload import __version__

    result = cli("--version")
    assert result.returncode == 0 and result.stdout == f"offload {__version__}\n"


@pytest.mark.parametrize(
    "args", [["submit"], ["submit", "--"], ["submit", "--wait"], ["--bogus"], ["list", "--limit"]]
)
def test_bad_usage_exits_2_with_one_clear_line(cli: Cli, args: list[str]) -> None:
    result = cli(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_submit_without_a_command_says_how(cli: Cli) -> None:
    result = cli("submit")
    assert result.stderr == (
        "offload: submit needs a command: offload submit -- CMD... (or --batch FILE)\n"
    )


@pytest.mark.slow
def test_wait_exits_128_plus_the_signal_and_keeps_the_id_off_stdout(
    cli: Cli, start_supervisor: Any
) -> None:
    start_supervisor()
    result = cli("submit", "--wait", "--", "echo before; kill -SEGV $$")
    assert result.returncode == 128 + signal.SIGSEGV  # 139, as bash reports it
    # The task's output only (its PID-namespace init is a shell, which may report the
    # signal as an interactive shell would); offload's own words go to stderr.
    assert result.stdout in {"before\n", "before\nSegmentation fault\n"}
    assert "submitted" in result.stderr and "SIGSEGV" in result.stderr


@pytest.mark.slow
def test_words_that_lost_their_quoting_are_refused_with_the_fix(
    cli: Cli, start_supervisor: Any
) -> None:
    words = ["python3", "-c", "import sys; print(sys.version_info[0])"]
    refused = cli("submit", "--", *words)
    assert refused.returncode == 2 and refused.stdout == ""
    assert "Syntax error" in refused.stderr or "syntax error" in refused.stderr
    assert """offload submit -- "python3 -c 'import sys; print(sys.version_info[0])'\"""" in (
        refused.stderr
    )
    assert "offload submit --argv -- python3 -c 'import sys" in refused.stderr
    start_supervisor()
    quoted = cli("submit", "--wait", "--", "python3 -c 'import sys; print(sys.version_info[0])'")
    assert (quoted.returncode, quoted.stdout) == (0, "3\n")
    as_argv = cli("submit", "--wait", "--argv", "--", *words)
    assert (as_argv.returncode, as_argv.stdout) == (0, "3\n")
    # Words the join does not break still go through the shell as before.
    assert cli("submit", "--wait", "--", "echo", "a", "&&", "echo", "b").stdout == "a\nb\n"


def _interrupt_waiting_cli(
    offload_home: Path, workspace: Path, store: SqliteStore, *flags: str
) -> tuple[Any, str]:
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "offload", "submit", "--wait", *flags, "--", "sleep 60"],
        env=_env(offload_home),
        cwd=workspace,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert first.startswith("offload: task "), first
    task_id = first.split()[2]
    wait_until(lambda: store.get(task_id).state is State.RUNNING, what="task start")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert proc.stdout is not None
    # Read through the same buffered files readline used (communicate would bypass them).
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert out == ""
    return task_id, err


@pytest.mark.slow
def test_ctrl_c_on_wait_says_the_task_goes_on_and_how_to_cancel(
    offload_home: Path, workspace: Path, start_supervisor: Any, cli: Cli, store: SqliteStore
) -> None:
    start_supervisor()
    task_id, err = _interrupt_waiting_cli(offload_home, workspace, store)
    assert "still running" in err and f"offload cancel {task_id[:8]}" in err
    assert "Traceback" not in err
    assert store.get(task_id).state is State.RUNNING
    cli("cancel", task_id)


@pytest.mark.slow
def test_ctrl_c_with_cancel_on_interrupt_cancels_the_task(
    offload_home: Path, workspace: Path, start_supervisor: Any, store: SqliteStore
) -> None:
    start_supervisor()
    task_id, err = _interrupt_waiting_cli(offload_home, workspace, store, "--cancel-on-interrupt")
    assert f"task {task_id[:8]}" in err and "Traceback" not in err
    wait_until(lambda: store.get(task_id).state is State.CANCELLED, timeout=30)


@pytest.mark.slow
def test_logs_and_logs_tail_print_the_same_raw_bytes(
    cli: Cli, cli_bytes: Callable[..., Any], start_supervisor: Any
) -> None:
    start_supervisor()
    script = "import sys; sys.stdout.buffer.write(b'caf\\xe9\\n\\xff\\xfe\\nlast no newline')"
    task_id = cli("submit", "--argv", "--", "python3", "-c", script).stdout.strip()
    assert cli("wait", task_id).returncode == 0
    whole = cli_bytes("logs", task_id)
    assert whole.stdout == b"caf\xe9\n\xff\xfe\nlast no newline"
    assert cli_bytes("logs", task_id, "--tail", "3").stdout == whole.stdout
    assert cli_bytes("logs", task_id, "--tail", "100").stdout == whole.stdout
    assert cli_bytes("logs", task_id, "--tail", "2").stdout == b"\xff\xfe\nlast no newline"
    assert cli_bytes("logs", task_id, "--tail", "0").stdout == b""


def _task(store: SqliteStore, workspace: Path, command: str, **fields: Any) -> str:
    (task,) = store.submit(
        [TaskSpec(command=command, cwd=str(workspace), workspace=str(workspace), **fields)]
    )
    return task.id


def test_piped_list_is_tab_separated_without_header(
    cli: Cli, store: SqliteStore, workspace: Path
) -> None:
    task_id = _task(store, workspace, "echo 'a\tb'\nsecond line")
    lines = cli("list").stdout.splitlines()
    assert len(lines) == 1
    fields = lines[0].split("\t")
    assert fields[0] == task_id and fields[1] == "pending" and fields[4] == "5"
    assert fields[5] == "echo 'a b' second line"  # tabs and newlines folded into spaces


def test_show_prints_the_command_and_the_name(
    cli: Cli, store: SqliteStore, workspace: Path
) -> None:
    task_id = _task(store, workspace, "make -j4 test", name="the build")
    shown = cli("show", task_id[:8]).stdout
    assert re.search(r"^name +the build$", shown, re.M), shown
    assert re.search(r"^command +make -j4 test$", shown, re.M), shown


def test_stats_hide_spending_until_an_llm_task_ran(
    cli: Cli, store: SqliteStore, workspace: Path
) -> None:
    _task(store, workspace, "true")
    assert "cost" not in cli("stats").stdout and "tokens" not in cli("stats").stdout
    assert json.loads(cli("stats", "--json").stdout)["cost_total_usd"] == 0


@pytest.mark.parametrize("width", [60, 72, 80, 100, 120, 200])
def test_the_table_fits_any_width_and_never_cuts_id_or_state(
    store: SqliteStore, workspace: Path, width: int
) -> None:
    long = "pytest -x tests/" + "very/long/path/" * 20 + "test_it.py"
    ids = [_task(store, workspace, long), _task(store, workspace, "true")]
    store.request_cancel(ids[1])
    tasks = store.list()
    lines = table_lines(tasks, width)
    assert all(len(line) <= width for line in lines), lines
    for task, line in zip(tasks, lines[1:], strict=True):
        assert line.startswith(task.id[:ID_CHARS] + "  " + task.state.value)
    (long_line,) = [line for line in lines if line.startswith(ids[0][:ID_CHARS])]
    assert long_line.endswith("…") and "pytest -x tests/" in long_line
    assert lines[0].startswith("ID        STATE")
    assert "AGE" in lines[0]  # kept: the command still has room at 60 columns


def test_a_terminal_gets_the_table_in_colour_unless_no_color(
    offload_home: Path, workspace: Path, store: SqliteStore
) -> None:
    import pty

    _task(store, workspace, "echo " + "x" * 200)
    for extra, coloured in [({}, True), ({"NO_COLOR": "1"}, False)]:
        primary, secondary = pty.openpty()
        env = _env(offload_home, {"COLUMNS": "80", **extra})
        proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "offload", "list"],
            env=env,
            cwd=workspace,
            stdout=secondary,
            stderr=subprocess.DEVNULL,
        )
        os.close(secondary)
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(primary)
        assert proc.wait(timeout=30) == 0
        text = b"".join(chunks).decode()
        assert text.startswith("ID        STATE")
        assert ("\x1b[33mpending" in text) is coloured
        assert all(len(line) <= 80 + 9 for line in text.splitlines())  # + colour codes
