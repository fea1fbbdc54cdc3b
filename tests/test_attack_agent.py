"""An agent task's model as the attacker: what its commands leave in the staging copy must
not carry files from outside it into the workspace."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from offload.config import Settings
from offload.policies.task_policy import TaskPolicy
from offload.workers.agent.staging import Staging
from offload.workers.agent.tools import ToolBox
from offload.workers.providers import ToolCall


def test_a_directory_link_a_command_plants_does_not_carry_a_file_into_the_workspace(
    tmp_path: Path,
) -> None:
    base = tmp_path.resolve()
    workspace, home, secrets = base / "agent-ws", base / "agent-home", base / "secrets"
    for folder in (workspace, home, secrets):
        folder.mkdir()
    (secrets / "id_ed25519").write_text("PRIVATE-KEY-PLANTED\n")
    settings = Settings(home=home, agent_run_commands_in="staging")
    staging = Staging.fresh(workspace, home / "logs" / "t.staging", (), private=home)
    task: Any = SimpleNamespace(id="t1", cwd=".", env={}, workspace=str(workspace), policy=None)
    box = ToolBox(
        task=task,
        settings=settings,
        staging=staging,
        policy=TaskPolicy(),
        store=None,  # type: ignore[arg-type]
        environ={"PATH": os.environ["PATH"]},
        wake=lambda: None,
    )

    def call(name: str, **arguments: Any) -> str:
        return box.run(ToolCall(id="1", name=name, arguments=arguments)).content

    call("write_file", path="keys/id_ed25519", content="decoy\n")  # a name it will apply
    ran = call("run_command", command=f"rm -rf keys && ln -s {secrets} keys && echo linked")
    assert "linked" in ran
    changes, _ = staging.changes()
    assert all(b"PLANTED" not in change.data for change in changes)
    assert "keys/id_ed25519" not in [change.rel for change in changes]
