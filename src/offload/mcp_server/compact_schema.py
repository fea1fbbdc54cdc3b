"""Shrinking the JSON schemas pydantic writes, so `tools/list` costs the agent little context.

Pydantic spells an optional field as `anyOf: [X, {"type": "null"}]` with `default: null`
and a `title` on every node. None of that tells an agent anything the field's absence
from `required` does not, and it triples the size of a schema. The arguments are still
validated by the full pydantic model on the server.
"""

from __future__ import annotations

from typing import Any

__all__ = ["compact"]

_NULL = {"type": "null"}


def compact(schema: Any) -> Any:
    """A copy of `schema` without titles, null branches of optionals, or null defaults."""
    if isinstance(schema, list):
        return [compact(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    node = dict(schema)
    branches = node.get("anyOf")
    if isinstance(branches, list) and _NULL in branches:
        rest = [b for b in branches if b != _NULL]
        del node["anyOf"]
        if len(rest) == 1 and isinstance(rest[0], dict):
            node = {**rest[0], **node}
        elif rest:
            node["anyOf"] = rest
    out = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "default" and value is None:
            continue
        out[key] = compact(value)
    return out
