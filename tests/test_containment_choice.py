"""Which containment a submission gets: by door, by setting, by the task's own fields.

`sandbox = auto` (the default) sandboxes what an agent starts (MCP, an agent's sub-tasks)
and leaves a person's own CLI tasks alone unless asked; an agent can never turn its own
containment off; a retry is judged again by the policy stored with the task and the one in
force now.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from conftest import wait_until
from offload.config import load_settings
from offload.desk import open_desk
from offload.errors import PolicyRefused
from offload.policies.task_policy import TaskPolicy
from offload.queue.models import State
from offload.queue.sqlite import SqliteStore
from offload.supervisor.sandbox import probe_sandbox
from test_mcp_support import call, error_text, make_server


def _policy(store: SqliteStore, task_id: str) -> TaskPolicy:
    return TaskPolicy.from_json(store.get(task_id).policy)


@pytest.mark.parametrize(
    ("mode", "agent", "sandboxed"),
    [
        ("auto", True, True),
        ("auto", False, False),
        ("on", False, True),
        ("off", True, False),
    ],
)
def test_the_door_and_the_setting_choose_the_sandbox(
    mode: str, agent: bool, sandboxed: bool, workspace: Path, store: SqliteStore
) -> None:
    settings = load_settings(overrides={"sandbox": mode})
    desk = open_desk(settings, workspace=workspace, confined=True, store=store,
                     wake=lambda: None, agent=agent)  # fmt: skip
    [task] = desk.submit([{"command": "true"}])
    assert _policy(store, task.id).sandbox is sandboxed


def test_an_agent_cannot_loosen_its_containment(workspace: Path, store: SqliteStore) -> None:
    settings = load_settings(overrides={"sandbox_network": False})
    desk = open_desk(settings, workspace=workspace, confined=True, store=store,
                     wake=lambda: None, agent=True)  # fmt: skip
    for fields in ({"sandbox": False}, {"network": True}):
        with pytest.raises(PolicyRefused, match="cannot turn its own sandbox"):
            desk.submit([{"command": "true", **fields}])
    [task] = desk.submit([{"command": "true", "network": False}])
    assert _policy(store, task.id).network is False
    assert store.list() == [store.get(task.id)]  # nothing else was stored


def test_a_person_may_ask_for_the_sandbox_or_turn_it_off(
    workspace: Path, store: SqliteStore
) -> None:
    settings = load_settings(overrides={"sandbox": "on"})
    desk = open_desk(settings, workspace=workspace, confined=False, store=store,
                     wake=lambda: None)  # fmt: skip
    [off] = desk.submit([{"command": "true", "sandbox": False}])
    [cut] = desk.submit([{"command": "true", "network": False, "sandbox": None}])
    assert _policy(store, off.id).sandbox is False
    assert (_policy(store, cut.id).sandbox, _policy(store, cut.id).network) == (True, False)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_mcp_refuses_to_lift_the_network_cut(workspace: Path) -> None:
    async def scenario() -> None:
        server = make_server(workspace, wake=lambda: None, sandbox_network=False)
        async with Client(server) as client:
            refused = await client.call_tool("submit_task", {"command": "true", "network": True})
            assert "cannot turn its own sandbox or network cut off" in error_text(refused)
            ok = await call(client, "submit_task", command="true", network=False)
            assert ok["state"] == "pending"

    anyio.run(scenario)


@pytest.mark.slow
@pytest.mark.skipif(not probe_sandbox().available, reason="bubblewrap is not available")
def test_an_mcp_task_runs_in_the_sandbox_and_a_cli_task_does_not(
    workspace: Path,
    store: SqliteStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    start_supervisor: Callable[..., Any],
    cli: Callable[..., Any],
) -> None:
    home = tmp_path / "user"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("PLANTED-KEY\n")
    monkeypatch.setenv("HOME", str(home))
    start_supervisor()

    async def submit() -> str:
        async with Client(make_server(workspace)) as client:
            return str((await call(client, "submit_task", command="cat ~/.ssh/id_rsa"))["task_id"])

    agents = anyio.run(submit)
    persons = cli("submit", "--", "cat ~/.ssh/id_rsa", HOME=str(home)).stdout.strip()
    for task_id in (agents, persons):
        wait_until(lambda t=task_id: store.get(t).is_final, timeout=30, what="the task")
    agent_task, person_task = store.get(agents), store.get(persons)
    assert "sandbox" in (agent_task.containment or "")
    assert agent_task.state is State.FAILED
    assert "PLANTED-KEY" not in Path(agent_task.log_path or "").read_text()
    assert "sandbox" not in (person_task.containment or "")
    assert Path(person_task.log_path or "").read_text() == "PLANTED-KEY\n"


def test_retry_is_judged_by_the_policy_now_and_the_stored_one(
    workspace: Path, store: SqliteStore
) -> None:
    open_door = open_desk(load_settings(), workspace=workspace, confined=True, store=store,
                          wake=lambda: None)  # fmt: skip
    [task] = open_door.submit([{"command": "curl example.invalid"}])
    store.claim(1, "test", {})
    store.finish(task.id, State.FAILED, exit_code=1)
    strict = open_desk(load_settings(overrides={"deny": ["^curl"]}), workspace=workspace,
                       confined=True, store=store, wake=lambda: None)  # fmt: skip
    with pytest.raises(PolicyRefused, match="refused by the policy now"):
        strict.retry(task.id)
    with pytest.raises(PolicyRefused, match=rf"task {task.id[:12]} is refused.*Nothing was"):
        strict.retry_failed()
    assert store.get(task.id).state is State.FAILED
    assert open_door.retry(task.id).state is State.PENDING


@pytest.mark.slow
def test_the_cli_flags_choose_the_containment(cli: Callable[..., Any], store: SqliteStore) -> None:
    asked = cli("submit", "--sandbox", "--", "true").stdout.strip()
    cut = cli("submit", "--no-network", "--", "true").stdout.strip()
    plain = cli("submit", "--", "true").stdout.strip()
    off = cli("submit", "--no-sandbox", "--", "true", OFFLOAD_SANDBOX="on").stdout.strip()
    assert _policy(store, asked).sandbox and _policy(store, asked).network
    assert _policy(store, cut).sandbox and not _policy(store, cut).network
    assert not _policy(store, plain).sandbox
    assert not _policy(store, off).sandbox
