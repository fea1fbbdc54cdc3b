"""Carrying out the model's tool calls: each call becomes a `ToolResult`, never an exception.

A refused or failed call (a path out of the workspace, a command the policy refuses, a
missing file, bad arguments) comes back to the model as an error result, so the loop can
go on and the model can correct itself.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offload.config import Settings
from offload.errors import OffloadError, PolicyRefused
from offload.policies.enforce import check_env_names, check_task_command
from offload.policies.environment import build_task_env
from offload.policies.task_policy import TaskPolicy
from offload.queue.models import Task
from offload.queue.store import Store
from offload.supervisor.sandbox import command_sandbox
from offload.workers.agent.commands import run_shell
from offload.workers.agent.schemas import TOOL_NAMES
from offload.workers.agent.staging import Staging
from offload.workers.providers.conversation import ToolCall, ToolResult

__all__ = ["MAX_LIST_ENTRIES", "MAX_SEARCH_MATCHES", "ToolBox", "ToolError"]

MAX_LIST_ENTRIES = 500
MAX_SEARCH_MATCHES = 200
MAX_SEARCH_FILE_BYTES = 1_048_576
MAX_LINE_CHARS = 300
SUBTASK_FIELDS = frozenset(
    {
        "type",
        "command",
        "spec",
        "name",
        "output_path",
        "context_files",
        "priority",
        "timeout_seconds",
        "model",
    }
)


class ToolError(OffloadError):
    """A tool call that cannot be carried out; its message goes back to the model."""


def _text_arg(arguments: Mapping[str, Any], name: str, default: str | None = None) -> str:
    value = arguments.get(name, default)
    if not isinstance(value, str):
        raise ToolError(f"argument '{name}' must be a string")
    return value


def _int_arg(arguments: Mapping[str, Any], name: str, default: int) -> int:
    number = _number_arg(arguments, name, default)
    if number < 1 or number != int(number):
        raise ToolError(f"argument '{name}' must be a whole number of at least 1")
    return int(number)


def _number_arg(arguments: Mapping[str, Any], name: str, default: float) -> float:
    value = arguments.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError(f"argument '{name}' must be a positive number")
    if not math.isfinite(value) or value <= 0:
        raise ToolError(f"argument '{name}' must be a finite positive number, not {value}")
    return float(value)


@dataclass
class ToolBox:
    """The tools of one agent task, bound to its staging view, policy and store.

    `policy` is the policy stored with the task: its commands and sub-tasks are judged by
    it, never by the settings of the process that runs the worker.
    """

    task: Task
    settings: Settings
    staging: Staging
    policy: TaskPolicy
    store: Store
    environ: Mapping[str, str]
    wake: Callable[[], None]
    note: Callable[[str], None] = lambda _: None

    def run(self, call: ToolCall) -> ToolResult:
        """Carries out one call; every failure becomes an error result."""
        if call.invalid:
            return ToolResult(call.id, f"{call.name}: {call.invalid}", is_error=True)
        handler = getattr(self, f"_tool_{call.name}", None)
        if call.name not in TOOL_NAMES or handler is None:
            known = ", ".join(TOOL_NAMES)
            return ToolResult(call.id, f"unknown tool {call.name!r}; use one of {known}", True)
        try:
            return ToolResult(call.id, handler(call.arguments))
        except (OffloadError, OSError, ValueError, ArithmeticError) as exc:
            reason = f"{exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
            kind = "refused" if isinstance(exc, PolicyRefused) else "failed"
            return ToolResult(call.id, f"{call.name} {kind}: {reason}", is_error=True)

    # -- read-only tools --------------------------------------------------------------
    def _tool_read_file(self, arguments: Mapping[str, Any]) -> str:
        rel = self.staging.confine(_text_arg(arguments, "path"))
        start = _int_arg(arguments, "start_line", 1)
        limit = self.settings.agent_read_max_bytes
        data, size = self.staging.read_bytes(rel, limit)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(data) - 4:  # not merely a character cut at the byte cap
                raise ToolError(f"{rel} is not UTF-8 text") from None
            text = data[: exc.start].decode("utf-8")
        lines = text.splitlines(keepends=True)
        count = _int_arg(arguments, "max_lines", max(1, len(lines)))
        part = lines[start - 1 : start - 1 + count]
        body = "".join(part)
        end = start - 1 + len(part)
        notes = []
        if start > 1 or end < len(lines):
            notes.append(f"lines {start}-{end} of {len(lines)}")
        if size > len(data):
            notes.append(f"only the first {len(data)} of {size} bytes (agent_read_max_bytes)")
        if notes:
            body += f"\n[{rel}: {'; '.join(notes)}; ask for more with start_line]"
        return body if body else f"[{rel} is empty]"

    def _tool_list_dir(self, arguments: Mapping[str, Any]) -> str:
        rel = self.staging.confine(_text_arg(arguments, "path", "."))
        entries = self.staging.list_dir(rel)
        lines = [f"{e.name}/" if e.is_dir else f"{e.name}  ({e.size} bytes)" for e in entries]
        if len(lines) > MAX_LIST_ENTRIES:
            more = len(lines) - MAX_LIST_ENTRIES
            lines = [*lines[:MAX_LIST_ENTRIES], f"[... {more} more entries]"]
        return "\n".join(lines) if lines else f"[{rel} is empty]"

    def _tool_search_text(self, arguments: Mapping[str, Any]) -> str:
        pattern_text = _text_arg(arguments, "pattern")
        try:
            pattern = re.compile(pattern_text)
        except re.error as exc:
            raise ToolError(f"invalid regular expression {pattern_text!r}: {exc}") from None
        rel = self.staging.confine(_text_arg(arguments, "path", "."))
        glob = _text_arg(arguments, "glob", "*")
        matches: list[str] = []
        for name, path in self.staging.walk_files(rel):
            if not fnmatch.fnmatch(Path(name).name, glob) and not fnmatch.fnmatch(name, glob):
                continue
            if _search_file(name, path, pattern, matches):
                more = "; narrow the pattern, path or glob"
                return "\n".join([*matches, f"[stopped at {MAX_SEARCH_MATCHES} matches{more}]"])
        return "\n".join(matches) if matches else "no matches"

    # -- tools with effects -------------------------------------------------------------
    def _tool_write_file(self, arguments: Mapping[str, Any]) -> str:
        rel = self.staging.confine(_text_arg(arguments, "path"))
        content = _text_arg(arguments, "content")
        data = content.encode("utf-8")
        self.staging.write(rel, data)
        return f"staged {rel} ({len(data)} bytes); the workspace gets it when the task succeeds"

    def _tool_run_command(self, arguments: Mapping[str, Any]) -> str:
        command = _text_arg(arguments, "command")
        if not command.strip():
            raise ToolError("command is empty")
        in_staging = self.settings.agent_run_commands_in == "staging"
        rel = self.staging.confine(_text_arg(arguments, "cwd", self.task.cwd or "."))
        self._judge(command, in_staging, rel)
        if in_staging and not self.staging.materialized:
            self.note(f"copying the workspace into {self.staging.root} for commands")
        base = self.staging.materialize() if in_staging else self.staging.workspace
        cwd = base / rel
        if not cwd.is_dir():
            raise ToolError(f"cwd {rel} is not a directory")
        limit = self.settings.agent_command_timeout_seconds
        timeout = min(_number_arg(arguments, "timeout_seconds", limit), limit)
        env = build_task_env(
            self.environ, self.task.env, self.task.id, extra_allow=self.settings.env_allow
        )
        env["PWD"] = str(cwd)
        cap = self.settings.agent_command_output_bytes
        policy = TaskPolicy.from_json(getattr(self.task, "policy", None))
        box = command_sandbox(policy, self.settings, base, cwd, (self.staging.workspace,))
        run = run_shell(
            command, cwd=cwd, env=env, timeout_seconds=timeout, cap_bytes=cap, sandbox=box
        )
        where = "the staging copy" if in_staging else "the workspace"
        text = run.render(timeout, cap)
        if run.timed_out:
            raise ToolError(text)
        return f"ran in {where}: {text}"

    def _judge(self, command: str, in_staging: bool, rel: str) -> None:
        """Refuse a command (or the task's env) that the task's stored policy refuses.

        Redirections may point inside the directory the command runs over: the staging
        copy (which lives in the data dir, so only it is open there) or the workspace.
        """
        base = self.staging.root if in_staging else self.staging.workspace
        decision = check_env_names(self.task.env or {}, self.policy)
        if decision.allowed:
            decision = check_task_command(
                command,
                self.policy,
                cwd=base / rel,
                data_dir=None if in_staging else self.settings.home,
                roots=[base],
            )
        if not decision.allowed:
            raise PolicyRefused(decision.reason)

    def _tool_submit_task(self, arguments: Mapping[str, Any]) -> str:
        from offload.desk import open_desk

        unknown = sorted(set(arguments) - SUBTASK_FIELDS)
        if unknown:
            raise ToolError(f"unknown field(s) {', '.join(unknown)}")
        if arguments.get("type") == "agent":
            raise ToolError("an agent task cannot queue another agent task")
        most = self.settings.agent_max_subtasks
        if most == 0:
            raise ToolError("agent tasks may not queue tasks here (agent_max_subtasks is 0)")
        children = self.store.list(parent_id=self.task.id, limit=most)
        if len(children) >= most:
            raise ToolError(
                f"this task has queued {len(children)} tasks already; agent_max_subtasks is {most}"
            )
        desk = open_desk(
            self.settings,
            workspace=self.task.workspace,
            confined=True,
            store=self.store,
            wake=self.wake,
            environ=self.task.environ,  # a sub-task runs with its parent's environment
            policy=self.policy,  # ... and its parent's policy, which its fields cannot widen
            agent=True,
        )
        [child] = desk.submit([{**arguments, "parent_id": self.task.id}])
        return f"queued {child.type} task {child.id} (a child of this task); it runs on its own"


def _search_file(name: str, path: Path, pattern: re.Pattern[str], matches: list[str]) -> bool:
    """Appends the file's matching lines; True once the match cap is reached."""
    try:
        if path.stat().st_size > MAX_SEARCH_FILE_BYTES:
            return False
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.search(line):
            shown = line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + "..."
            matches.append(f"{name}:{number}: {shown}")
            if len(matches) >= MAX_SEARCH_MATCHES:
                return True
    return False
