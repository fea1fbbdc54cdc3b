"""Turning what a front end received into a validated `TaskSpec`.

Every front end (CLI, MCP, HTTP) passes its raw fields through `build_spec`, so a bad
submission is refused the same way everywhere, with one line that says what was wrong
and how to fix it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from offload.config import Settings
from offload.errors import InvalidInput, PolicyRefused
from offload.policies.enforce import check_env_names, check_task_command
from offload.policies.environment import check_task_env
from offload.policies.limits import check_group, check_priority, check_timeout
from offload.policies.paths import resolve_inside
from offload.policies.submitter_env import capture_environ
from offload.policies.task_policy import TaskPolicy
from offload.queue.members import check_labels
from offload.queue.models import LLM_TYPES, TASK_TYPES, TaskSpec
from offload.records import record

TYPE_CHECKING = False  # typing costs ~3 ms of every CLI call; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from offload.policies.commands import CommandPolicy

__all__ = ["MAX_BATCH", "MAX_COMMAND_BYTES", "MAX_SPEC_BYTES", "Submitter", "FIELDS"]

MAX_COMMAND_BYTES = 65_536
MAX_SPEC_BYTES = 262_144
MAX_BATCH = 1_000
MAX_DEPENDENCIES = 100
MAX_CONTEXT_FILES = 50
FIELDS = frozenset(
    {
        "type",
        "task_type",
        "command",
        "spec",
        "cwd",
        "timeout_seconds",
        "timeout",
        "priority",
        "group",
        "depends_on",
        "after",
        "env",
        "name",
        "labels",
        "output_path",
        "output",
        "context_files",
        "context",
        "model",
        "large_context",
        "max_turns",
        "parent_id",
        "sandbox",
        "network",
        "on",
    }
)
_ALIASES = {
    "task_type": "type",
    "timeout": "timeout_seconds",
    "after": "depends_on",
    "output": "output_path",
    "context": "context_files",
}


def _text(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidInput(f"{name} contains a NUL byte")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise InvalidInput(f"{name} is {size} bytes; the limit is {limit}")
    return value


def _strings(name: str, value: Any, limit: int) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise InvalidInput(f"{name} must be a list of strings")
    if len(value) > limit:
        raise InvalidInput(f"{name} has {len(value)} entries; the limit is {limit}")
    return tuple(_text(name, v, 4096) for v in value)


@record
class Submitter:
    """Validates submissions for one workspace under one effective policy.

    Attributes:
        settings: The front end's settings.
        workspace: The directory the front end works in (the first root).
        task_policy: The policy every task it builds is judged by and stored with.
        person: True for a person's own door (the CLI), which may turn a task's sandbox
            off; an agent's doors may only narrow their containment.
    """

    settings: Settings
    workspace: Path
    task_policy: TaskPolicy
    person: bool = False

    @classmethod
    def for_workspace(
        cls,
        settings: Settings,
        workspace: Path | str,
        *,
        policy: TaskPolicy | None = None,
        sandbox: bool | None = None,
        person: bool = False,
    ) -> Submitter:
        """Builds a submitter whose workspace root is `workspace` (plus configured roots).

        Args:
            settings: The front end's settings.
            workspace: The front end's directory.
            policy: The policy to judge and store instead of the one `settings` give (a
                sub-task passes its parent's, which it may only narrow).
            sandbox: The front end's sandbox decision (see `TaskPolicy.from_settings`).
            person: A person's own door (see the class).

        Raises:
            ConfigError: when an allow/deny pattern is not a valid regex.
        """
        root = Path(workspace).resolve()
        if policy is None:
            configured = [Path(os.path.expanduser(r)).resolve() for r in settings.workspace_roots]
            policy = TaskPolicy.from_settings(settings, [root, *configured], sandbox=sandbox)
        policy.command_policy()  # a stored pattern that does not compile fails here
        return cls(settings, root, policy, person)

    @property
    def policy(self) -> CommandPolicy:
        """The compiled command rules of the task policy."""
        return self.task_policy.command_policy(forbidden=[self.settings.home])

    @property
    def roots(self) -> list[Path]:
        """The directories every path of a task must stay inside."""
        if self.task_policy.roots:
            return [Path(root) for root in self.task_policy.roots]
        configured = [Path(os.path.expanduser(r)).resolve() for r in self.settings.workspace_roots]
        return [self.workspace, *configured]

    def build(
        self,
        raw: Mapping[str, Any],
        resolve_id: Callable[[str], str],
        environ: Mapping[str, str] | None = None,
        *,
        captured: bool = False,
    ) -> TaskSpec:
        """Validates `raw` (the fields of ARCHITECTURE §3) into a TaskSpec.

        `resolve_id` turns a task id or prefix into the full id of an existing task (for
        `depends_on` and `parent_id`) or raises NotFound/AmbiguousId. `environ` is the
        submitting front end's environment: the task runs with its captured part
        (`capture_environ`), or with `environ` itself when it is `captured` already (a
        batch captures it once for all its tasks); without it, with the supervisor's.

        Raises:
            InvalidInput: for a missing, malformed or out-of-range field.
            PolicyRefused: for a command, path or env variable that policy refuses.
            NotFound: when a dependency or the parent names no task.
        """
        if not isinstance(raw, Mapping):
            raise InvalidInput("a task must be an object of fields (type, command, spec, ...)")
        fields = {_ALIASES.get(k, k): v for k, v in raw.items() if v is not None}
        unknown = sorted(set(raw) - FIELDS)
        if unknown:
            raise InvalidInput(
                f"unknown field(s) {', '.join(unknown)}; see `offload submit --help`"
            )
        task_type = fields.get("type", "shell")
        if task_type not in TASK_TYPES:
            raise InvalidInput(
                f"unknown task type '{task_type}'; use one of {', '.join(TASK_TYPES)}"
            )
        cwd = self._cwd(fields.get("cwd"))
        command, spec = self._work(task_type, fields, cwd)
        return TaskSpec(
            type=task_type,
            command=command,
            spec=spec,
            cwd=str(cwd),
            workspace=str(self.workspace),
            timeout_seconds=check_timeout(
                _number("timeout_seconds", fields.get("timeout_seconds"))
            ),
            priority=check_priority(_integer("priority", fields.get("priority", 5))),
            group=check_group(fields.get("group")),
            depends_on=tuple(
                resolve_id(d)
                for d in _strings("depends_on", fields.get("depends_on"), MAX_DEPENDENCIES)
            ),
            env=self._env(fields.get("env")),
            name=_text("name", fields["name"], 200) if "name" in fields else None,
            labels=_strings("labels", fields.get("labels"), 20),
            output_path=self._output_path(task_type, fields.get("output_path"), cwd),
            context_files=self._context_files(fields.get("context_files"), cwd),
            model=_text("model", fields["model"], 200) if "model" in fields else None,
            large_context=_boolean("large_context", fields.get("large_context", False)),
            max_turns=_turns(fields.get("max_turns"), self.settings.agent_max_turns),
            parent_id=_parent_id(fields.get("parent_id"), resolve_id),
            policy=self.task_policy.for_task(
                self._sandbox(task_type, fields.get("sandbox")),
                _optional_boolean("network", fields.get("network")),
                may_loosen=self.person,
            ).to_json(),
            environ=self._environ(environ, captured),
            run_on=check_labels(fields.get("on"), "on"),
        )

    def _environ(self, environ: Mapping[str, str] | None, captured: bool) -> Mapping[str, str]:
        if environ is None:
            return {}
        return environ if captured else capture_environ(environ, self.settings.env_allow)

    def _env(self, value: Any) -> dict[str, str]:
        env = check_task_env(_mapping("env", value))
        if self.task_policy.has_allow_list and "PATH" in env:
            raise PolicyRefused(
                "env PATH cannot be set while an allow list is in force: it would choose "
                "which program an allowed command name runs"
            )
        decision = check_env_names(env, self.task_policy)
        if not decision.allowed:
            raise PolicyRefused(decision.reason)
        return env

    def _inside(self, path: str, base: Path) -> Path:
        """Resolves `path` inside the workspace roots and outside offload's data dir."""
        return resolve_inside(path, self.roots, base=base, forbidden=[self.settings.home])

    def _sandbox(self, task_type: str, value: Any) -> bool | None:
        """The task's own sandbox choice. With `sandbox = auto`, a model chooses an agent
        task's commands: it is an agent's work, sandboxed whoever queued it, unless a
        person turns that off for the task."""
        asked = _optional_boolean("sandbox", value)
        if asked is None and task_type == "agent":
            return True if str(self.settings.sandbox).lower() == "auto" else None
        return asked

    def _cwd(self, value: Any) -> Path:
        if value is None:
            return self.workspace
        path = self._inside(_text("cwd", value, 4096), self.workspace)
        if not path.is_dir():
            raise InvalidInput(f"cwd '{value}' is not an existing directory")
        return path

    def _work(self, task_type: str, fields: Mapping[str, Any], cwd: Path) -> tuple[Any, str | None]:
        if task_type == "shell":
            command = fields.get("command")
            if isinstance(command, list):
                command = list(_strings("command", command, 4096))
                if not command or not command[0]:
                    raise InvalidInput("command is empty; give the command to run")
            elif command is None or not _text("command", command, MAX_COMMAND_BYTES).strip():
                raise InvalidInput("command is empty; give the command to run")
            decision = check_task_command(
                command, self.task_policy, cwd=cwd, data_dir=self.settings.home
            )
            if not decision.allowed:
                raise PolicyRefused(decision.reason)
            return command, None
        spec = fields.get("spec")
        if spec is None or not _text("spec", spec, MAX_SPEC_BYTES).strip():
            raise InvalidInput(f"a {task_type} task needs a spec: say what it should produce")
        return None, spec

    def _output_path(self, task_type: str, value: Any, cwd: Path) -> str | None:
        if value is None:
            if task_type in {"write_file", "test_gen", "docs"}:
                raise InvalidInput(f"a {task_type} task needs output_path: the file it writes")
            return None
        return str(self._inside(_text("output_path", value, 4096), cwd))

    def _context_files(self, value: Any, cwd: Path) -> tuple[str, ...]:
        out = []
        for name in _strings("context_files", value, MAX_CONTEXT_FILES):
            path = self._inside(name, cwd)
            if not path.is_file():
                raise InvalidInput(f"context file '{name}' does not exist or is not a file")
            out.append(str(path))
        return tuple(out)


def _parent_id(value: Any, resolve_id: Callable[[str], str]) -> str | None:
    """The full id of the existing task `value` names (an id or unique prefix), or None."""
    if value is None:
        return None
    return resolve_id(_text("parent_id", value, 64))


def _number(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInput(f"{name} must be a number")
    try:
        return float(value)
    except ValueError:
        raise InvalidInput(f"{name} must be a number, got '{value}'") from None


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"{name} must be a whole number")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a whole number, got '{value}'") from None
    if number != value and str(number) != str(value).strip():
        raise InvalidInput(f"{name} must be a whole number, got '{value}'")
    return number


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise InvalidInput(f"{name} must be true or false")


def _optional_boolean(name: str, value: Any) -> bool | None:
    return None if value is None else _boolean(name, value)


def _mapping(name: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{name} must be an object of NAME: value pairs")
    return value


def _turns(value: Any, ceiling: int) -> int | None:
    if value is None:
        return None
    turns = _integer("max_turns", value)
    if not 1 <= turns <= ceiling:
        raise InvalidInput(f"max_turns must be between 1 and {ceiling}, got {turns}")
    return turns


def llm_type(task_type: str) -> bool:
    """True for the single-call LLM task types."""
    return task_type in LLM_TYPES
