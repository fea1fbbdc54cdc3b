"""The service layer: scoping, the verbs every front end shares, and the files it owns.

A real SQLite store in the test's OFFLOAD_HOME, tasks moved through their states with the
Store's own supervisor verbs (no supervisor process), and a wake counter instead of a
supervisor. Each scoping test fails if the desk's workspace scope is dropped.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from mcp import Client

from offload.config import load_settings
from offload.desk import Desk, check_task_id, open_desk
from offload.errors import InvalidInput, NotFound
from offload.queue.models import State, Task, TaskSpec
from offload.queue.sqlite import SqliteStore
from test_mcp_support import call, make_server


class Wakes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    other = tmp_path / "elsewhere"
    other.mkdir()
    return other


def desk_for(workspace: Path, store: SqliteStore, *, confined: bool, wakes: Wakes) -> Desk:
    return open_desk(
        load_settings(), workspace=workspace, confined=confined, store=store, wake=wakes
    )


def submit_in(store: SqliteStore, where: Path, command: str = "true") -> Task:
    return store.submit([TaskSpec(command=command, cwd=str(where), workspace=str(where))])[0]


def finish(store: SqliteStore, task: Task, state: State) -> Task:
    [claimed] = [t for t in store.claim(100, "test", {}) if t.id == task.id] or [None]
    assert claimed is not None, "the task was not claimable"
    store.mark_started(task.id, pid=1, pgid=1, proc_start=None, cgroup=None, log_path="")
    store.finish(task.id, state, exit_code=0 if state is State.COMPLETED else 1)
    return store.get(task.id)


def test_a_confined_desk_sees_only_its_workspace(
    workspace: Path, elsewhere: Path, store: SqliteStore
) -> None:
    wakes = Wakes()
    desk = desk_for(workspace, store, confined=True, wakes=wakes)
    mine, foreign = submit_in(store, workspace), submit_in(store, elsewhere)
    assert desk.task(mine.id[:8]).id == mine.id
    for verb in (desk.task, desk.cancel, desk.retry):
        with pytest.raises(NotFound, match="in this workspace"):
            verb(foreign.id)
    with pytest.raises(NotFound):
        desk.tasks([mine.id, foreign.id])
    assert [t.id for t in desk.listing()] == [mine.id]
    with pytest.raises(InvalidInput, match="agents_see_all_workspaces = true"):
        desk.listing(all_workspaces=True)  # other projects' command lines may hold secrets
    with pytest.raises(NotFound):
        desk.submit([{"command": "true", "depends_on": [foreign.id]}])


def test_a_person_may_let_agents_list_every_workspace(
    workspace: Path, elsewhere: Path, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OFFLOAD_AGENTS_SEE_ALL_WORKSPACES", "true")
    desk = desk_for(workspace, store, confined=True, wakes=Wakes())
    mine, foreign = submit_in(store, workspace), submit_in(store, elsewhere)
    assert {t.id for t in desk.listing(all_workspaces=True)} == {mine.id, foreign.id}
    unconfined = desk_for(workspace, store, confined=False, wakes=Wakes())
    monkeypatch.delenv("OFFLOAD_AGENTS_SEE_ALL_WORKSPACES")
    assert len(unconfined.listing(all_workspaces=True)) == 2  # a person's door sees all


def test_retry_failed_and_purge_keep_to_the_scope(
    workspace: Path, elsewhere: Path, store: SqliteStore
) -> None:
    wakes = Wakes()
    desk = desk_for(workspace, store, confined=True, wakes=wakes)
    mine_failed = finish(store, submit_in(store, workspace), State.FAILED)
    theirs_failed = finish(store, submit_in(store, elsewhere), State.FAILED)
    mine_done = finish(store, submit_in(store, workspace), State.COMPLETED)
    theirs_done = finish(store, submit_in(store, elsewhere), State.COMPLETED)

    assert [t.id for t in desk.retry_failed()] == [mine_failed.id]
    assert store.get(theirs_failed.id).state is State.FAILED
    assert wakes.count == 1

    assert [t.id for t in desk.purge()] == [mine_done.id]
    assert store.get(theirs_done.id).state is State.COMPLETED


def test_an_unconfined_desk_acts_on_every_workspace(
    workspace: Path, elsewhere: Path, store: SqliteStore
) -> None:
    desk = desk_for(workspace, store, confined=False, wakes=Wakes())
    theirs = finish(store, submit_in(store, elsewhere), State.FAILED)
    assert desk.task(theirs.id).id == theirs.id
    assert [t.id for t in desk.retry_failed()] == [theirs.id]
    assert desk.confined_to(str(workspace)).listing() == []


def test_purge_removes_the_files_the_task_owned(workspace: Path, store: SqliteStore) -> None:
    settings = load_settings()
    desk = desk_for(workspace, store, confined=True, wakes=Wakes())
    task = finish(store, submit_in(store, workspace), State.COMPLETED)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log = settings.logs_dir / f"{task.id}.log"
    turns = settings.logs_dir / f"{task.id}.turns.jsonl"
    staging = settings.logs_dir / f"{task.id}.staging"
    keep = settings.logs_dir / "other.log"
    for path in (log, turns, keep):
        path.write_text("x")
    (staging / "sub").mkdir(parents=True)
    (staging / "sub" / "f.py").write_text("x")
    (staging / "escape").symlink_to(workspace)
    (workspace / "precious").write_text("keep me")

    assert [t.id for t in desk.purge()] == [task.id]
    assert not log.exists() and not turns.exists() and not staging.exists()
    assert keep.exists() and (workspace / "precious").read_text() == "keep me"


def test_output_is_read_through_the_desk(workspace: Path, store: SqliteStore) -> None:
    settings = load_settings()
    desk = desk_for(workspace, store, confined=True, wakes=Wakes())
    task = finish(store, submit_in(store, workspace), State.COMPLETED)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    (settings.logs_dir / f"{task.id}.log").write_bytes(b"one\ntwo\n\xff three\n")
    assert desk.tail(task, 1, 1024).text == "\ufffd three\n"
    data, offset = desk.read_output(task, 4)
    assert (data, offset) == (b"two\n\xff three\n", 16)
    assert b"".join(desk.follow(task)) == b"one\ntwo\n\xff three\n"


def test_batches_are_all_or_nothing_and_name_the_entry(workspace: Path, store: SqliteStore) -> None:
    wakes = Wakes()
    desk = desk_for(workspace, store, confined=True, wakes=wakes)
    with pytest.raises(InvalidInput, match=r"^entry 2: "):
        desk.submit([{"command": "true"}, {"command": ""}], entry_word="entry {n}")
    assert desk.listing() == [] and wakes.count == 0
    assert len(desk.submit([{"command": "true"}, {"command": "false"}])) == 2
    assert wakes.count == 1
    assert desk.count("pending") == 2 and desk.count() == 2


@pytest.mark.parametrize("text", ["abc", "xyz123", "a" * 33, " ", "../etc"])
def test_an_id_that_cannot_name_a_task_is_refused(text: str) -> None:
    with pytest.raises(NotFound, match="is not a task id"):
        check_task_id(text)


def test_mcp_retry_failed_and_purge_stay_in_the_servers_workspace(
    workspace: Path, elsewhere: Path, store: SqliteStore
) -> None:
    mine_failed = finish(store, submit_in(store, workspace), State.FAILED)
    theirs_failed = finish(store, submit_in(store, elsewhere), State.FAILED)
    mine_done = finish(store, submit_in(store, workspace), State.COMPLETED)
    theirs_done = finish(store, submit_in(store, elsewhere), State.COMPLETED)

    async def scenario() -> None:
        async with Client(make_server(workspace, wake=lambda: None)) as client:
            retried = await call(client, "retry_failed")
            assert retried["task_ids"] == [mine_failed.id]
            assert (await call(client, "purge_tasks"))["purged"] == 1

    anyio.run(scenario)
    assert store.get(theirs_failed.id).state is State.FAILED
    assert store.get(theirs_done.id).state is State.COMPLETED
    with pytest.raises(NotFound):
        store.get(mine_done.id)
