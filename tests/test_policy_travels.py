"""Policies travel with the task (issue 10, item 3): stored at submit, enforced by the agent
worker whatever its own settings, inherited (never widened) by sub-tasks, re-checked at
spawn and on retry."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakes.agent import AgentRun, openai_results, submit_agent
from fakes.environment import LlmEnv
from offload import records
from offload.config import Settings, load_settings
from offload.errors import PolicyRefused
from offload.policies.enforce import recheck, stored_policy
from offload.policies.limits import Limits
from offload.policies.task_policy import TaskPolicy
from offload.queue.models import TaskSpec
from offload.queue.sqlite import SqliteStore
from offload.submission import Submitter
from offload.supervisor.containment import Containment
from offload.supervisor.pidns import PidNamespaces
from offload.supervisor.sandbox import Sandbox
from offload.supervisor.spawn import SpawnError, spawn_task

pytest_plugins = ["fakes.fixtures"]


def _front_end(**changes: object) -> Settings:
    return records.replace(load_settings(), **changes)  # type: ignore[arg-type]


def test_the_submitter_stores_its_effective_policy(workspace: Path) -> None:
    settings = _front_end(allow=(r"^echo\b",), deny=("rm -rf",), env_allow=("MY_*",))
    spec = Submitter.for_workspace(settings, workspace).build({"command": "echo hi"}, str)
    policy = TaskPolicy.from_json(spec.policy)
    assert policy.allow == ((r"^echo\b",),) and policy.deny == ("rm -rf",)
    assert policy.env_allow == ("MY_*",) and policy.roots == (str(workspace.resolve()),)


@pytest.mark.parametrize("name", ["MAKEFLAGS", "GIT_CONFIG_COUNT", "PYTHONWARNINGS", "BROWSER"])
def test_the_submitter_refuses_env_off_the_env_allow_list(workspace: Path, name: str) -> None:
    submitter = Submitter.for_workspace(_front_end(allow=(r"^make\b",)), workspace)
    with pytest.raises(PolicyRefused, match=name):
        submitter.build({"command": "make", "env": {name: "x"}}, str)
    open_submitter = Submitter.for_workspace(_front_end(), workspace)
    assert open_submitter.build({"command": "make", "env": {name: "x"}}, str).env == {name: "x"}


def test_an_allowed_echo_cannot_rewrite_the_config(workspace: Path) -> None:
    settings = _front_end(allow=(r"^echo\b",))
    submitter = Submitter.for_workspace(settings, workspace)
    for line in (
        f"echo \"allow = ['.*']\" > {settings.home}/config.toml",
        "echo x > $OFFLOAD_HOME/config.toml",
        "echo=1 sh -c id",
    ):
        with pytest.raises(PolicyRefused):
            submitter.build({"command": line}, str)
    assert submitter.build({"command": "echo ok > out.txt"}, str).command == "echo ok > out.txt"


@pytest.mark.slow
def test_an_agent_obeys_its_stored_policy_not_the_workers_settings(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    fake = llm_env.openai
    fake.reply_tool_calls(
        [
            ("run_command", {"command": "id"}),
            ("run_command", {"command": "echo=1 sh -c id"}),
            ("submit_task", {"type": "shell", "command": "id"}),
            ("submit_task", {"type": "shell", "command": "echo child"}),
            ("run_command", {"command": "echo fine"}),
        ]
    )
    fake.reply_text("Done.")
    front_end = _front_end(allow=(r"^pytest( |$)", r"^echo\b"))
    task = submit_agent(store, workspace, settings=front_end)
    AgentRun(store)(task)  # the worker's settings have no allow list at all
    ran_id, assigned, sub_id, sub_echo, fine = openai_results(fake.bodies()[1])
    assert "run_command refused" in ran_id and "'id' is not allowed" in ran_id
    assert "run_command refused" in assigned
    assert "submit_task refused" in sub_id and "'id' is not allowed" in sub_id
    assert sub_echo.startswith("queued shell task")
    assert "exit code 0" in fine
    [child] = store.list(parent_id=task.id)
    assert stored_policy(child) == stored_policy(task)  # inherited, not the worker's


@pytest.mark.slow
def test_a_sub_task_cannot_widen_its_parents_policy(
    llm_env: LlmEnv, store: SqliteStore, workspace: Path
) -> None:
    llm_env.without_aws()
    fake = llm_env.openai
    fake.reply_tool_calls(
        [
            ("submit_task", {"type": "shell", "command": "make", "env": {"MAKEFLAGS": "x"}}),
            ("submit_task", {"type": "shell", "command": "rm -r -f build"}),
        ]
    )
    fake.reply_text("Done.")
    front_end = _front_end(deny=("rm -rf",))
    task = submit_agent(store, workspace, settings=front_end)
    AgentRun(store, allow=(".*",))(task)
    env_widened, denied = openai_results(fake.bodies()[1])
    assert "unknown field(s) env" in env_widened
    assert "submit_task refused" in denied and "deny rule 'rm -rf'" in denied
    assert store.list(parent_id=task.id) == []


def _stored(store: SqliteStore, workspace: Path, command: str, policy: TaskPolicy) -> TaskSpec:
    spec = TaskSpec(
        command=command, cwd=str(workspace), workspace=str(workspace), policy=policy.to_json()
    )
    [task] = store.submit([spec])
    return task  # type: ignore[return-value]


def test_retry_rechecks_the_stored_policy_and_the_policy_now(
    store: SqliteStore, workspace: Path
) -> None:
    roots = (str(workspace),)
    task = _stored(store, workspace, "make test", TaskPolicy(allow=((r"^make\b",),), roots=roots))
    assert recheck(task, TaskPolicy(roots=roots)).allowed
    now = TaskPolicy(allow=((r"^pytest\b",),), roots=roots)
    decision = recheck(task, now)
    assert not decision.allowed and "the policy now" in decision.reason
    stricter = _stored(store, workspace, "id", TaskPolicy(allow=((r"^make\b",),), roots=roots))
    decision = recheck(stricter, TaskPolicy(roots=roots))
    assert not decision.allowed and "its stored policy" in decision.reason
    denied = _stored(store, workspace, "/bin/rm -fr x", TaskPolicy(roots=roots))
    assert not recheck(denied, TaskPolicy(deny=("rm -rf",), roots=roots)).allowed


def test_the_supervisor_refuses_at_spawn_what_the_stored_policy_refuses(
    store: SqliteStore, workspace: Path, tmp_path: Path
) -> None:
    policy = TaskPolicy(allow=((r"^echo\b",),), roots=(str(workspace),))
    task = store.get(_stored(store, workspace, "echo=1 sh -c id", policy).id)
    logs = tmp_path / "spawn-logs"
    logs.mkdir()
    with pytest.raises(SpawnError, match="refused by the task's policy"):
        spawn_task(
            task,
            logs_dir=logs,
            parent_env={},
            shell_env={"PATH": "/usr/bin:/bin"},
            env_allow=(),
            limits=Limits(),
            containment=Containment(
                cgroups=None,
                pidns=PidNamespaces(False, "not needed here"),
                sandbox=Sandbox(None, "not needed here"),
            ),
        )
    assert not (logs / f"{task.id}.log").exists()
