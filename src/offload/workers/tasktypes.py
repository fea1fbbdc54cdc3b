"""The LLM task types: each is a prompt template plus an output contract.

| type       | contract | what is written                                     |
|------------|----------|-----------------------------------------------------|
| write_file | file     | `output_path`, the answer is the whole file         |
| test_gen   | file     | `output_path`, a test file for the context files    |
| docs       | file     | `output_path`, documentation                        |
| code_task  | files    | every `<file path=...>` block of the answer         |
| refactor   | files    | every `<file path=...>` block of the answer         |
| review     | text     | nothing (or `output_path` if given); text is result |
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "FILES_CONTRACT",
    "PREAMBLE",
    "TASK_TYPES",
    "Contract",
    "TaskType",
    "contract_text",
    "task_type",
]


class Contract(StrEnum):
    """What shape an answer must have."""

    FILE = "file"  # the answer is the complete content of output_path
    FILES = "files"  # the answer lists several files in <file path="..."> blocks
    TEXT = "text"  # the answer is text stored as the task's result


@dataclass(frozen=True)
class TaskType:
    """One task type: its contract, whether it must have output_path, and its instructions."""

    name: str
    contract: Contract
    needs_output: bool
    instructions: str


PREAMBLE = (
    "You are a background worker of offload, completing one software task on your own. "
    "Nobody can answer questions: make sensible assumptions, follow the project's "
    "conventions as the context shows them, and produce finished work, not a sketch."
)

_FILE_CONTRACT = (
    "Answer with the complete contents of the output file and nothing else: no "
    "explanation before or after it and no Markdown code fence around it. If the file "
    "already exists its current contents are given; return the whole new file."
)

FILES_CONTRACT = (
    "Answer with every file you create or change, each complete, in this exact format:\n"
    '<file path="path/relative/to/the/workspace/root">\n'
    "the full contents of the file\n"
    "</file>\n"
    "Use one block per file. Paths are relative to the workspace root and must stay "
    "inside it. Files you do not list are left as they are. After the last block you may "
    "add a short summary of what you changed; write nothing else outside the blocks."
)

_TEXT_CONTRACT = "Answer in Markdown."

TASK_TYPES: dict[str, TaskType] = {
    t.name: t
    for t in (
        TaskType(
            "write_file",
            Contract.FILE,
            True,
            "Write the file described by the task.",
        ),
        TaskType(
            "test_gen",
            Contract.FILE,
            True,
            "Write a complete, runnable test file for the code in the context files, in "
            "the project's test framework (pytest for Python unless the context shows "
            "otherwise). Cover every public function: normal cases, edge cases and errors. "
            "Import the code under test the way the project's other code does.",
        ),
        TaskType(
            "docs",
            Contract.FILE,
            True,
            "Write the documentation described by the task, for the people who will use "
            "the code in the context files. Use Markdown unless the output file's "
            "extension says otherwise. Be accurate to the code; invent nothing.",
        ),
        TaskType(
            "code_task",
            Contract.FILES,
            False,
            "Implement what the task asks. You may create new files and change existing "
            "ones; return each of them in full.",
        ),
        TaskType(
            "refactor",
            Contract.FILES,
            False,
            "Refactor the code in the context files as the task asks, without changing "
            "its behaviour. Return every file you change in full.",
        ),
        TaskType(
            "review",
            Contract.TEXT,
            False,
            "Review the code in the context files as the task asks. List findings by "
            "severity (bugs and security first), each with file and line and a concrete "
            "fix. Say plainly when something is fine.",
        ),
    )
}

_CONTRACT_TEXT = {
    Contract.FILE: _FILE_CONTRACT,
    Contract.FILES: FILES_CONTRACT,
    Contract.TEXT: _TEXT_CONTRACT,
}


def task_type(name: str) -> TaskType:
    """The definition of LLM task type `name`.

    Raises:
        KeyError: for a type that is not an LLM task type.
    """
    return TASK_TYPES[name]


def contract_text(contract: Contract) -> str:
    """The output-format instructions of a contract."""
    return _CONTRACT_TEXT[contract]
