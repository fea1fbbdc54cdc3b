"""The agent's system prompt (steering rules first) and its first message (spec, context)."""

from __future__ import annotations

from collections.abc import Sequence

from offload.workers.context import ContextFile
from offload.workers.steering import Rules

__all__ = ["first_message", "system_prompt"]

_INSTRUCTIONS = """\
You are a coding agent working on a software project for a developer who is busy with \
other work. You act only through the tools you are given, in a loop: each reply of yours \
is one turn; you may call several tools in one turn.

How the workspace works:
- Paths are relative to the workspace root; nothing outside it can be read or written.
- write_file stages a file's complete new content. The workspace itself changes only when \
you finish successfully, with all your files at once; if a file was changed by someone \
else after you read it, nothing is applied. Read a file before you rewrite it.
- {commands}
- A tool error says what was wrong: correct the call and go on.
- You have at most {max_turns} turns. When the work is done, reply with a short summary \
of what you changed and call no tool: that ends the task."""

_IN_STAGING = (
    "run_command runs in a copy of the workspace that holds your staged files. Edits a "
    "command makes to existing files (a formatter, a fixer) are kept like your own; files a "
    "command creates are not: write those with write_file."
)
_IN_WORKSPACE = (
    "run_command runs in the workspace itself, which does not hold your staged files until "
    "the task succeeds; commands see the files as they were."
)


def system_prompt(rules: Rules | None, max_turns: int, commands_in: str) -> str:
    """The project's rules (steering), then how the agent works."""
    parts = []
    if rules is not None:
        parts.append(
            "Project rules (from the project's rules file; follow them in everything you "
            f"do):\n<project_rules>\n{rules.text}\n</project_rules>"
        )
    commands = _IN_STAGING if commands_in == "staging" else _IN_WORKSPACE
    parts.append(_INSTRUCTIONS.format(commands=commands, max_turns=max_turns))
    return "\n\n".join(parts)


def first_message(spec: str, context: Sequence[ContextFile]) -> str:
    """The task as the model first reads it, with any context files."""
    parts = [f"Task:\n{spec.strip()}"]
    if context:
        blocks = [f'<context path="{c.display}">\n{c.text}\n</context>' for c in context]
        parts.append("Context files:\n" + "\n\n".join(blocks))
    return "\n\n".join(parts)
