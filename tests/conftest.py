"""Shared fixtures: a private OFFLOAD_HOME per test, real stores, real supervisors.

No test touches ~/.offload: every test gets OFFLOAD_HOME in its own tmp_path, and every
process a test starts is gone when it ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from offload.queue.sqlite import SqliteStore
from offload.supervisor.wake import poke

# The PostgreSQL fixtures (`url`, `clock`, `pg`) every PostgreSQL test file shares.
pytest_plugins = ["pg_server"]

MARKER = "OFFLOAD_TASK_ID"


def wait_until(
    condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01, what: str = ""
) -> Any:
    """Polls `condition` until it returns something truthy; fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)


def run_to_end(store: SqliteStore, home: Path, spec: Any, timeout: float = 30) -> tuple[Any, str]:
    """Submits `spec`, wakes the running supervisor of `home`, waits for the task's end;
    returns the final task and its output."""
    task = store.submit([spec])[0]
    poke(home)
    done = wait_until(lambda: (t := store.get(task.id)).is_final and t, timeout=timeout)
    return done, Path(done.log_path or "").read_text(errors="replace")


def marked_processes(task_id: str) -> list[psutil.Process]:
    """Every live (non-zombie) process on the machine carrying the task's marker."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(MARKER) == task_id:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


@pytest.fixture(autouse=True)
def offload_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Points OFFLOAD_HOME at a fresh directory and runs the test from a workspace dir."""
    home = tmp_path / "home"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    monkeypatch.setenv("OFFLOAD_HOME", str(home))
    for name in list(os.environ):
        if name.startswith("OFFLOAD_") and name != "OFFLOAD_HOME":
            monkeypatch.delenv(name)
    monkeypatch.chdir(workspace)
    return home


@pytest.fixture
def workspace(offload_home: Path) -> Path:
    """The directory tests run from: the default workspace root."""
    return offload_home.parent / "ws"


@pytest.fixture
def store(offload_home: Path) -> Iterator[SqliteStore]:
    """A real SQLite store in the test's OFFLOAD_HOME."""
    s = SqliteStore(offload_home / "queue.db")
    yield s
    s.close()


@dataclass
class SupervisorProc:
    """A real `offload supervisor` process started by a test."""

    proc: subprocess.Popen[bytes]
    home: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def _env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFLOAD_")}
    env["OFFLOAD_HOME"] = str(home)
    env.update(extra or {})
    return env


@pytest.fixture
def start_supervisor(offload_home: Path) -> Iterator[Callable[..., SupervisorProc]]:
    """Starts real supervisors; kills whatever is left of them and their tasks at the end."""
    started: list[SupervisorProc] = []

    def start(**settings: str) -> SupervisorProc:
        env = _env(offload_home, {f"OFFLOAD_{k.upper()}": v for k, v in settings.items()})
        log = open(offload_home.parent / f"supervisor-{len(started)}.err", "ab")  # noqa: SIM115
        offload_home.mkdir(mode=0o700, exist_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "offload", "supervisor", "--foreground"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        sup = SupervisorProc(proc, offload_home)
        started.append(sup)
        wait_until(lambda: poke(offload_home) or proc.poll() is not None, what="supervisor start")
        return sup

    yield start
    for sup in started:
        if sup.proc.poll() is None:
            sup.proc.send_signal(signal.SIGTERM)
            try:
                sup.proc.wait(20)
            except subprocess.TimeoutExpired:
                sup.proc.kill()
                sup.proc.wait()
    _kill_stray_tasks(offload_home)


def _kill_stray_tasks(home: Path) -> None:
    """Last line of defence: no process a test's tasks started outlives the test."""
    try:
        s = SqliteStore(home / "queue.db")
        ids = {t.id for t in s.list(limit=100_000)}
        s.close()
    except Exception:
        return
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER) in ids:
                proc.kill()
        except (psutil.Error, OSError):
            continue


@pytest.fixture
def cli(offload_home: Path, workspace: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs the real `offload` entry point (python -m offload) and captures its output."""

    def run(*args: str, input: str | None = None, timeout: float = 60, **env: str) -> Any:
        return subprocess.run(
            [sys.executable, "-P", "-m", "offload", *args],
            env=_env(offload_home, env),
            cwd=workspace,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def _supervisors_of(home: Path) -> list[psutil.Process]:
    """Live `offload supervisor` processes whose OFFLOAD_HOME is `home`."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if "supervisor" in cmdline and proc.environ().get("OFFLOAD_HOME") == str(home):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def _offload_cgroups() -> set[Path]:
    from offload.supervisor.cgroups import _own_cgroup_v2

    found = _own_cgroup_v2()
    if found is None:
        return set()
    mount, own = found
    return set((mount / own).glob("offload-*"))


@pytest.fixture(autouse=True, scope="session")
def _no_cgroup_left() -> Iterator[None]:
    """At the end of the run, no task cgroup a test's supervisor made may hold a process;
    the empty directories a killed supervisor could not remove are removed here."""
    before = _offload_cgroups()
    yield
    busy = []
    for root in _offload_cgroups() - before:
        for cgroup in [*sorted(p for p in root.iterdir() if p.is_dir()), root]:
            procs = (cgroup / "cgroup.procs").read_text().split() if cgroup.exists() else []
            if procs:
                busy.append(f"{cgroup}: {' '.join(procs)}")
                continue
            with contextlib.suppress(OSError):
                cgroup.rmdir()
    assert not busy, f"task cgroups still hold processes after the run: {busy}"


@pytest.fixture(autouse=True)
def _no_detached_supervisor_left(offload_home: Path) -> Iterator[None]:
    """Stops any supervisor a front end started on demand during the test.

    A front end starts one and returns at once, so at teardown it may still be starting
    (not yet listening on its FIFO): look for the process itself, not only the FIFO.
    """
    yield
    stop_detached_supervisors(offload_home)


def stop_detached_supervisors(offload_home: Path) -> None:
    """SIGTERMs the supervisors front ends started for this home and waits for them."""
    if not (offload_home / "supervisor.out").exists():
        return  # no front end ever started one for this home
    for proc in _supervisors_of(offload_home):
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.Error:
            continue
    wait_until(lambda: not _supervisors_of(offload_home), timeout=30, what="supervisors to stop")


# A test that starts a real supervisor, the real CLI, a live HTTP or MCP server or a fake
# provider server spends a second or more on process start-up: it belongs to the whole
# suite, not to the fast subset (`scripts/test -m "not slow"`).
SLOW_FIXTURES = frozenset(
    {"start_supervisor", "cli", "llm_env", "api", "dash", "session", "providers"}
)


# Slow for reasons of their own (races, many processes, real interpreters started).
SLOW_TESTS = frozenset(
    {
        "test_racing_claimers_claim_each_task_exactly_once",
        "test_bad_policy_fails_at_start_with_the_pattern_named",
        "test_on_demand_supervisor_ignores_modules_in_the_workspace",
        "test_offload_serve_prints_the_url_and_stops_on_ctrl_c",
        "test_read_tail_matches_a_whole_file_tail_on_any_bytes",
        "test_apply_limits_cpu_limit_stops_a_busy_child",
        "test_timeout_kills_double_forked_children",
        "test_timeout_kills_the_commands_whole_tree",
        "test_a_deleted_current_directory_gets_one_clear_line",
        "test_beyond_loopback_every_read_needs_the_token",
        "test_sdks_are_imported_only_when_a_provider_is_built",
        "test_claim_cost_does_not_grow_per_task_with_the_full_groups",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        name = getattr(item, "originalname", item.name)
        if name in SLOW_TESTS or SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI a skipped test fails the run: a missing server, binary or kernel feature
    there means the install step is wrong, not that the test may be left out."""
    if not os.environ.get("CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = reporter.stats.get("skipped", [])
    if skipped and exitstatus == 0:
        for report in skipped:
            reporter.write_line(f"skipped under CI: {report.nodeid}: {report.longrepr}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
