"""The tools an agent task offers the model: names, descriptions, JSON-schema parameters."""

from __future__ import annotations

from typing import Any

from offload.queue.models import LLM_TYPES
from offload.workers.providers.conversation import Tool

__all__ = ["TOOLS", "TOOL_NAMES"]


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


_PATH = {"type": "string", "description": "A path relative to the workspace root."}

TOOLS: tuple[Tool, ...] = (
    Tool(
        "read_file",
        "Read a text file of the workspace (your own staged writes included). Long files "
        "are returned in part; ask for more with start_line.",
        _object(
            {
                "path": _PATH,
                "start_line": {"type": "integer", "minimum": 1, "description": "1-based."},
                "max_lines": {"type": "integer", "minimum": 1},
            },
            ["path"],
        ),
    ),
    Tool(
        "list_dir",
        "List a directory of the workspace: sub-directories end with '/', files show their size.",
        _object({"path": {**_PATH, "default": "."}}, []),
    ),
    Tool(
        "search_text",
        "Search the workspace's text files for a regular expression (Python syntax); "
        "returns path:line: text for each match.",
        _object(
            {
                "pattern": {"type": "string"},
                "path": {**_PATH, "default": "."},
                "glob": {"type": "string", "description": "Only files matching, e.g. *.py"},
            },
            ["pattern"],
        ),
    ),
    Tool(
        "write_file",
        "Write a file's complete new content. Writes are staged: the workspace changes "
        "only when the task succeeds, all files at once.",
        _object({"path": _PATH, "content": {"type": "string"}}, ["path", "content"]),
    ),
    Tool(
        "run_command",
        "Run a shell command (/bin/sh -c) and get its exit code and output, truncated "
        "when long. Commands are checked against the project's command policy.",
        _object(
            {
                "command": {"type": "string"},
                "cwd": {**_PATH, "description": "Directory to run in (default: the root)."},
                "timeout_seconds": {"type": "number", "exclusiveMinimum": 0},
            },
            ["command"],
        ),
    ),
    Tool(
        "submit_task",
        "Queue another offload task to run in the background (a shell command or a "
        "single LLM job) on the workspace as it is now; returns its id at once. It is "
        "recorded as a child of this task.",
        _object(
            {
                "type": {"type": "string", "enum": ["shell", *LLM_TYPES]},
                "command": {"type": "string", "description": "For shell tasks."},
                "spec": {"type": "string", "description": "For LLM tasks."},
                "name": {"type": "string"},
                "output_path": _PATH,
                "context_files": {"type": "array", "items": {"type": "string"}},
                "priority": {"type": "integer", "minimum": 1, "maximum": 10},
                "timeout_seconds": {"type": "number"},
                "model": {"type": "string"},
            },
            ["type"],
        ),
    ),
)

TOOL_NAMES = tuple(tool.name for tool in TOOLS)
