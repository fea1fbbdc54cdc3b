"""Building the prompt of an LLM task: steering rules, the type's instructions and output
contract, the spec, and the context files, each clearly delimited.
"""

from __future__ import annotations

from collections.abc import Sequence

from offload.workers.context import ContextFile
from offload.workers.providers.base import Prompt
from offload.workers.steering import Rules
from offload.workers.tasktypes import PREAMBLE, TaskType, contract_text

__all__ = ["build_prompt", "system_prompt"]


def system_prompt(kind: TaskType, rules: Rules | None) -> str:
    """The system prompt: the project's rules first (steering), then the task type's own."""
    parts = []
    if rules is not None:
        parts.append(
            "Project rules (from the project's rules file; follow them in everything you "
            f"write):\n<project_rules>\n{rules.text}\n</project_rules>"
        )
    parts += [PREAMBLE, kind.instructions, contract_text(kind.contract)]
    return "\n\n".join(parts)


def _block(tag: str, item: ContextFile) -> str:
    return f'<{tag} path="{item.display}">\n{item.text}\n</{tag}>'


def build_prompt(
    kind: TaskType,
    spec: str,
    *,
    rules: Rules | None,
    context: Sequence[ContextFile],
    output_display: str | None,
    current_output: ContextFile | None,
    max_tokens: int,
) -> Prompt:
    """The full prompt of one task.

    Args:
        kind: The task type.
        spec: What the submitter asked for.
        rules: The steering rules, if any.
        context: The context files, in the order given.
        output_display: The output file as the model should name it, if any.
        current_output: The output file's current contents, when it exists already.
        max_tokens: The answer's token cap.
    """
    parts = [f"Task:\n{spec.strip()}"]
    if output_display:
        parts.append(f"Output file: {output_display}")
    if context:
        parts.append("Context files:\n" + "\n\n".join(_block("context", c) for c in context))
    if current_output is not None:
        parts.append("Current contents of the output file:\n" + _block("current", current_output))
    return Prompt(system=system_prompt(kind, rules), user="\n\n".join(parts), max_tokens=max_tokens)
