"""The dashboard in a real browser: Debian's chromium driven by Playwright, headless.

Against a real server (uvicorn on a thread) and a real supervisor, with tasks submitted
through the real CLI. Screenshots land in the artifacts directory ($ARTIFACTS_DIR, else
./artifacts); docs/dashboard.png is a copy of one of them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import marked_processes, wait_until
from offload.clock import now_ms
from offload.config import load_settings
from offload.queue.models import State, TaskSpec
from offload.queue.sqlite import SqliteStore
from offload.supervisor.wake import WakeFifo
from offload.web.serve import ServerThread, prepare
from offload.workers.agent.transcript import Transcript, transcript_path

playwright_sync = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.slow  # a real browser: seconds per test

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("ARTIFACTS_DIR") or Path(__file__).parents[1] / "artifacts")
DAY_MS = 86_400_000
UI_TIMEOUT_MS = 20_000
Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless chromium for the module; each test gets its own context."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: apt-get install chromium")
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    with playwright_sync.sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@dataclass
class Dash:
    """A running server, a browser page, and what the page showed."""

    url: str
    base: str
    page: Any
    dialogs: list[str]
    errors: list[str]

    def open(self, url: str | None = None) -> None:
        self.page.goto(url or self.url)
        self.page.wait_for_selector("#conn.conn-live", timeout=UI_TIMEOUT_MS)

    def row(self, task_id: str) -> Any:
        return self.page.locator(f'#rows tr[data-id="{task_id}"]')

    def wait_row_state(self, task_id: str, word: str) -> None:
        self.row(task_id).locator(f".badge:text-is('{word}')").wait_for(timeout=UI_TIMEOUT_MS)


@pytest.fixture
def dash(offload_home: Path, browser: Any) -> Iterator[Dash]:
    prepared = prepare(load_settings(), "127.0.0.1", 0, False)
    context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="light")
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    dialogs: list[str] = []
    errors: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    with ServerThread(prepared):
        yield Dash(prepared.url, f"http://127.0.0.1:{prepared.port}", page, dialogs, errors)
        context.close()


def _submit(cli: Cli, command: str, *options: str) -> str:
    done = cli("submit", *options, "--", command)
    assert done.returncode == 0, done.stderr
    return str(done.stdout.strip())


def _shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


def test_a_cli_task_appears_and_completes_without_a_reload(
    dash: Dash, start_supervisor: Any, cli: Cli
) -> None:
    start_supervisor()
    dash.open()
    assert "token=" not in dash.page.url  # taken out of the address bar and history
    dash.page.evaluate("window.__sameDocument = true")
    task_id = _submit(cli, "sleep 0.5; echo finished")
    dash.row(task_id).wait_for()
    dash.wait_row_state(task_id, "completed")
    assert dash.page.evaluate("window.__sameDocument") is True
    wait_until(lambda: dash.page.text_content("#n-completed") == "1", what="the completed chip")
    assert dash.errors == []


def test_keyboard_filter_open_and_close(dash: Dash, store: SqliteStore) -> None:
    here = str(Path.cwd())
    store.submit(
        [TaskSpec(command=c, cwd=here, workspace=here) for c in ("make docs", "make test")]
    )
    dash.open()
    page = dash.page
    page.locator("#rows tr").nth(1).wait_for()
    page.keyboard.press("/")
    page.keyboard.type("docs")
    wait_until(lambda: page.locator("#rows tr").count() == 1, what="the filter to apply")
    page.locator("#rows tr").first.focus()
    page.keyboard.press("Enter")
    page.locator("#detail-title:text-is('make docs')").wait_for()
    page.keyboard.press("Escape")
    page.locator("#detail").wait_for(state="hidden")


def test_cancel_from_the_page_kills_the_running_task(
    dash: Dash, start_supervisor: Any, cli: Cli
) -> None:
    start_supervisor()
    task_id = _submit(cli, "echo started; sleep 300 & sleep 300; wait")
    dash.open()
    dash.wait_row_state(task_id, "running")
    wait_until(lambda: len(marked_processes(task_id)) >= 2, timeout=20, what="the task's tree")
    dash.row(task_id).click()
    dash.page.locator("#output:has-text('started')").wait_for()  # live output, followed
    dash.page.click("#cancel")
    dash.page.locator("#detail-badge:text-is('cancelled')").wait_for()
    dash.wait_row_state(task_id, "cancelled")
    wait_until(lambda: not marked_processes(task_id), timeout=20, what="no process left")


def test_task_text_is_shown_as_text_never_as_html(
    dash: Dash, start_supervisor: Any, cli: Cli
) -> None:
    start_supervisor()
    payload = "<script>alert(1)</script>"
    name = "<img src=x onerror=alert(2)><b>bold</b>"
    task_id = _submit(
        cli, f"printf '%s\\n' '{payload}' '<img src=x onerror=alert(3)>'", "--name", name
    )
    dash.open()
    dash.wait_row_state(task_id, "completed")
    dash.row(task_id).click()
    output = dash.page.locator("#output")
    output.locator(f"text={payload}").wait_for()
    assert output.text_content() == f"{payload}\n<img src=x onerror=alert(3)>\n"
    assert dash.row(task_id).locator(".c-title").text_content() == name
    assert dash.page.text_content("#detail-title") == name
    assert dash.page.locator("#output *, #rows img, #rows b, #detail img, #detail b").count() == 0
    assert dash.dialogs == []


def _turn(index: int, text: str, calls: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {
        "index": index,
        "attempt": 1,
        "at": now_ms(),
        "provider": "openai",
        "model": "gpt-4o-mini",
        "text": text,
        "stop": "tool_use" if calls else "end_turn",
        "tool_calls": calls,
        "tokens_in": 1200 * index,
        "tokens_out": 80,
        "tokens_cached": 0,
        "cost_usd": 0.0004,
        "error": None,
        **fields,
    }


def test_an_agent_tasks_turns_are_shown_as_text_and_follow_its_events(
    dash: Dash, store: SqliteStore, request: pytest.FixtureRequest
) -> None:
    here = str(Path.cwd())
    settings = load_settings()
    # The test plays the supervisor running this task, so it holds the wake FIFO as one
    # does: else the page's reads start a real one, which finds the task's runner gone
    # and marks it interrupted before the test finishes it.
    playing = WakeFifo(settings.home)
    request.addfinalizer(playing.close)
    [task] = store.submit([TaskSpec(type="agent", spec="tidy up", cwd=here, workspace=here)])
    store.claim(1, "test", {})
    log = settings.logs_dir / f"{task.id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("[1/20] turn 1: calling openai:gpt-4o-mini\n", encoding="utf-8")
    store.mark_started(
        task.id,
        pid=os.getpid(),
        pgid=os.getpgid(0),
        proc_start=None,
        cgroup=None,
        log_path=str(log),
    )
    transcript = Transcript(transcript_path(settings, task.id))
    said = "<img src=x onerror=alert(1)> let me look"
    result = "<script>alert(2)</script>"
    call = {"id": "c1", "name": "read_file", "arguments": {"path": "a.py"}, "result": result}
    failed = {"id": "c2", "name": "run_command", "arguments": {"command": "rm -rf /"}}
    failed |= {"result": "refused by the policy", "is_error": True}
    transcript.append(_turn(1, said, [call, failed]))

    dash.open(f"{dash.url}#task/{task.id}")
    turns = dash.page.locator("#turns-list > li")
    turns.first.wait_for()
    assert turns.count() == 1
    first = turns.first
    assert first.locator(".turn-head").text_content() == (
        "Turn 1 · gpt-4o-mini · 1200 in / 80 out · $0.0004"
    )
    assert first.locator(".turn-text").text_content() == said
    assert first.locator(".call-result").first.text_content() == result
    assert '"path": "a.py"' in (first.locator(".call-args").first.text_content() or "")
    assert first.locator(".call-error .call-result").text_content() == "refused by the policy"

    # The next turn (a failed one) appears when the task's next event arrives.
    transcript.append(_turn(2, "", [], error="provider said <b>no</b>", cost_usd=None))
    store.finish(task.id, State.FAILED, error="the provider failed")
    dash.page.locator("#turns-list > li.turn-error .turn-err").wait_for()
    assert turns.count() == 2
    assert turns.nth(1).locator(".turn-err").text_content() == "Error: provider said <b>no</b>"
    assert dash.page.locator("#turns img, #turns script, #turns b").count() == 0
    assert dash.dialogs == [] and dash.errors == []
    _shot(dash.page, "dashboard-turns.png")


def test_without_the_token_the_page_shows_nothing_and_writes_are_refused(
    dash: Dash, store: SqliteStore
) -> None:
    here = str(Path.cwd())
    [task] = store.submit([TaskSpec(command="sleep 1", cwd=here, workspace=here)])
    dash.page.goto(dash.base + "/")  # the bare address: no token, no cookie
    dash.page.locator("#banner:has-text('open the link')").wait_for()
    assert dash.row(task.id).count() == 0  # reads need the token too, on loopback
    read = dash.page.request.get(f"{dash.base}/api/tasks/{task.id}")
    assert read.status == 401
    refused = dash.page.request.post(f"{dash.base}/api/tasks/{task.id}/cancel")
    assert refused.status == 401
    assert store.get(task.id).state is State.PENDING


def test_with_the_read_cookie_alone_the_page_is_read_only(dash: Dash, store: SqliteStore) -> None:
    here = str(Path.cwd())
    # long enough to stay cancellable: a supervisor the page wakes may start it, and the
    # cancel button goes once a task has ended (a `sleep 1` could end before the click)
    [task] = store.submit([TaskSpec(command="sleep 60", cwd=here, workspace=here)])
    dash.open()  # the printed link: the token, and the read cookie
    dash.page.evaluate("sessionStorage.clear()")  # a new tab keeps the cookie alone
    dash.open(dash.base + "/")
    dash.page.locator("#banner").wait_for()
    dash.row(task.id).click()
    dash.page.click("#cancel")
    dash.page.locator("#toast:has-text('needs the token')").wait_for()
    # Not cancelled, nor asked to be (a supervisor the page woke may have started it).
    after = store.get(task.id)
    assert after.state in (State.PENDING, State.RUNNING), after.state
    assert not after.cancel_requested


def _seed_history(home: Path, here: str) -> None:
    """Two weeks of finished tasks (some LLM ones with a cost), written with a past clock."""
    clock = {"now": 0}
    past = SqliteStore(home / "queue.db", clock=lambda: clock["now"])
    try:
        today = now_ms()
        for days_ago in range(13, -1, -1):
            clock["now"] = today - days_ago * DAY_MS - 3_600_000
            count = (days_ago * 7) % 6 + 1
            specs = [
                TaskSpec(command=f"make check-{i}", cwd=here, workspace=here) for i in range(count)
            ]
            if days_ago % 3 == 0:
                specs.append(
                    TaskSpec(
                        type="docs", spec="document the retry policy", cwd=here, workspace=here
                    )
                )
            for n, task in enumerate(past.submit(specs)):
                past.claim(1, "history", {})
                clock["now"] += 20_000 + 37_000 * n
                if task.type == "docs":
                    cost = 0.02 * (days_ago % 4 + 1)
                    past.record_usage(
                        task.id,
                        tokens_in=9000,
                        tokens_out=1500,
                        cost_usd=cost,
                        model_used="gpt-4o-mini",
                    )
                past.finish(task.id, State.COMPLETED, exit_code=0)
    finally:
        past.close()


def test_dashboard_screenshot(
    dash: Dash, start_supervisor: Any, cli: Cli, offload_home: Path, workspace: Path
) -> None:
    _seed_history(offload_home, str(workspace))
    start_supervisor(max_concurrent="2")
    _submit(cli, "echo 'collected 214 items'; echo '214 passed in 3.2s'", "--name", "pytest -q")
    _submit(
        cli,
        "echo 'FAILED tests/test_io.py::test_read - AssertionError' >&2; exit 1",
        "--name",
        "unit tests (py3.11)",
    )
    compile_id = _submit(
        cli,
        'for i in $(seq 1 100); do echo "[$i/100] compiling module_$i"; sleep 0.4; done',
        "--name",
        "build assets",
    )
    _submit(cli, "sleep 300", "--name", "integration tests", "--priority", "3")
    _submit(cli, "make docs", "--name", "make docs")
    dash.open()
    dash.wait_row_state(compile_id, "running")
    dash.page.locator(f'#rows tr[data-id="{compile_id}"] .pct').wait_for()
    dash.page.locator("#n-failed:text-is('1')").wait_for()
    wide = _shot(dash.page, "dashboard.png")

    dash.row(compile_id).click()
    dash.page.locator("#output:has-text('compiling module_3')").wait_for()
    _shot(dash.page, "dashboard-detail.png")
    dash.page.keyboard.press("Escape")

    dash.page.set_viewport_size({"width": 390, "height": 844})
    overflow = dash.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, "the page scrolls sideways on a phone"
    _shot(dash.page, "dashboard-phone.png")
    assert wide.stat().st_size > 10_000
    assert dash.errors == []


def _finished(store: SqliteStore, state: State, **fields: Any) -> str:
    here = str(Path.cwd())
    [task] = store.submit([TaskSpec(command=f"exit {state.value}", cwd=here, workspace=here)])
    store.claim(1, "test", {})
    store.finish(task.id, state, **fields)
    return task.id


def test_the_failed_chip_counts_and_shows_timed_out_tasks(dash: Dash, store: SqliteStore) -> None:
    failed = _finished(store, State.FAILED, exit_code=3, error="exited with code 3")
    timed_out = _finished(store, State.TIMED_OUT, error="timed out after 1 s")
    done = _finished(store, State.COMPLETED, exit_code=0)
    dash.open()
    wait_until(lambda: dash.page.text_content("#n-failed") == "2", what="failed + timed out")
    dash.page.click("button.chip[data-state='failed']")
    dash.row(timed_out).wait_for()
    dash.row(failed).wait_for()
    dash.row(done).wait_for(state="detached")
    assert dash.errors == []


def test_the_cancelling_toast_goes_once_the_task_is_cancelled(
    dash: Dash, start_supervisor: Any, cli: Cli
) -> None:
    start_supervisor(grace_seconds="1")
    task_id = _submit(cli, "trap '' TERM; echo started; sleep 300")  # outlives SIGTERM
    dash.open()
    dash.wait_row_state(task_id, "running")
    dash.row(task_id).click()
    dash.page.locator("#output:has-text('started')").wait_for()
    dash.page.click("#cancel")
    dash.page.locator("#toast:has-text('Cancelling')").wait_for()
    dash.page.locator("#detail-badge:text-is('cancelled')").wait_for()
    # The toast's own timer is 6 s: it must give way well before that.
    dash.page.locator("#toast:has-text('Cancelled')").wait_for(timeout=3000)
    assert "Cancelling" not in (dash.page.text_content("#toast") or "")


def test_follow_is_ticked_only_while_the_task_runs(
    dash: Dash, start_supervisor: Any, cli: Cli
) -> None:
    start_supervisor()
    finished = _submit(cli, "echo done")
    running = _submit(cli, "echo running; sleep 300")
    dash.open()
    dash.wait_row_state(finished, "completed")
    dash.wait_row_state(running, "running")
    dash.row(running).click()
    dash.page.locator("#output:has-text('running')").wait_for()
    assert dash.page.is_checked("#follow")
    dash.row(finished).click()
    dash.page.locator("#output:has-text('done')").wait_for()
    assert not dash.page.is_checked("#follow")
    cli("cancel", running)


def test_the_chart_keeps_fourteen_days_after_a_purge(
    dash: Dash, store: SqliteStore, offload_home: Path
) -> None:
    _seed_history(offload_home, str(Path.cwd()))
    dash.open()
    wait_until(lambda: dash.page.locator("#chart g.day").count() == 14, what="14 days")
    dash.page.click("#purge")
    dash.page.click("#purge")  # the second click confirms
    dash.page.locator("#toast:has-text('Purged')").wait_for()
    wait_until(lambda: dash.page.text_content("#n-completed") == "0", what="purged")
    assert dash.page.locator("#chart g.day").count() == 14

    # A server that leaves out the empty days still gets a 14-day chart.
    def trimmed(route: Any) -> None:
        answer = route.fetch().json()
        answer["days"] = [d for d in answer["days"] if d["finished"]][:3]
        route.fulfill(json=answer)

    dash.page.route("**/api/stats", trimmed)
    dash.page.reload()
    dash.page.wait_for_selector("#conn.conn-live")
    wait_until(lambda: dash.page.locator("#chart g.day").count() == 14, what="14 slots")
    assert dash.errors == []
