"""The MCP tools' SDK registrations, from schemas published beside this module.

Deriving eleven tools' input and output schemas from their signatures costs pydantic
about 20 ms, half of what `offload mcp` took to start beyond the SDK's own import. So the
schemas the signatures give are published in `tool_schemas.json`, and `registrations`
builds each tool from them, its argument and output models left to its first call.
`derived` is the SDK's own derivation, which the file must equal (`tests/test_mcp_
schemas.py`); `python -m offload.mcp_server.published PATH` writes it anew.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.context_injection import find_context_parameter
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata, func_metadata
from mcp_types import ToolAnnotations
from pydantic import ConfigDict, PrivateAttr, model_validator

from offload.mcp_server.compact_schema import compact

__all__ = ["DECLARED_OUTPUTS", "PUBLISHED_SCHEMAS", "derived", "registrations", "schemas"]

PUBLISHED_SCHEMAS = Path(__file__).with_name("tool_schemas.json")
# Every tool answers structured content; these also declare its schema. The read tools'
# answers are self-describing and their schemas would push tools/list past 4.5 KB.
DECLARED_OUTPUTS = frozenset({"submit_task", "submit_batch", "cancel_task", "retry_task"})

Specs = Sequence[tuple[Any, ToolAnnotations | None]]  # each tool's function and hints


def registrations(specs: Specs) -> list[Tool]:
    """The tools, with their published schemas and models built at each one's first call."""
    published = json.loads(PUBLISHED_SCHEMAS.read_text(encoding="utf-8"))
    return [
        Tool(
            fn=fn,
            name=fn.__name__,
            title=None,
            description=(fn.__doc__ or "").strip(),
            parameters=published[fn.__name__]["parameters"],
            fn_metadata=_FirstCallMetadata.of(fn, published[fn.__name__]["output"]),
            is_async=inspect.iscoroutinefunction(fn),
            context_kwarg=find_context_parameter(fn),
            annotations=hints,
        )
        for fn, hints in specs
    ]


def derived(specs: Specs) -> list[Tool]:
    """The tools as the SDK derives them from their signatures, with compacted schemas."""
    out = []
    for fn, hints in specs:
        tool = Tool.from_function(
            fn, description=(fn.__doc__ or "").strip(), annotations=hints, structured_output=True
        )
        tool.parameters = compact(tool.parameters)
        tool.fn_metadata.arg_model = _strict(tool.fn_metadata.arg_model)
        tool.fn_metadata.output_schema = _declared_output(tool)
        out.append(tool)
    return out


def schemas(tools: list[Tool]) -> dict[str, dict[str, Any]]:
    """What is published for each tool: its input and declared output schemas."""
    return {
        t.name: {"parameters": t.parameters, "output": t.fn_metadata.output_schema} for t in tools
    }


def _declared_output(tool: Tool) -> dict[str, Any] | None:
    if tool.name not in DECLARED_OUTPUTS:
        return None
    output: dict[str, Any] = compact(tool.fn_metadata.output_schema)
    output.pop("description", None)
    return output


def _strict(model: type[ArgModelBase]) -> type[ArgModelBase]:
    """`model` refusing unknown arguments: a typo such as `timeout_secnds` must not silently
    mean "no timeout". The advertised schema is left as is (tools/list stays small)."""
    config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")
    strict: type[ArgModelBase] = type(model.__name__, (model,), {"model_config": config})
    return strict


class _Unbuilt(ArgModelBase):
    """The argument model a tool has until its own is built: it accepts nothing, so a path
    that reads the model before `_FirstCallMetadata` has built it refuses the call rather
    than dropping every argument it does not know."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _never(cls, data: Any) -> Any:
        raise ValueError("the tool's argument model is not built yet")


class _FirstCallMetadata(FuncMetadata):
    """A tool's argument and output models, built from its signature at its first call.

    Until then the tool has only its published schemas; the SDK reads `arg_model`,
    `output_model` and `wrap_output` only in the three methods below.
    """

    _fn: Any = PrivateAttr(default=None)

    @classmethod
    def of(cls, fn: Any, output_schema: dict[str, Any] | None) -> _FirstCallMetadata:
        meta = cls(arg_model=_Unbuilt, output_schema=output_schema)
        meta._fn = fn
        return meta

    def _built(self) -> None:
        if self._fn is None:
            return
        skip = [name for name in [find_context_parameter(self._fn)] if name]
        real = func_metadata(self._fn, skip_names=skip, structured_output=True)
        self.arg_model = _strict(real.arg_model)
        self.output_model, self.wrap_output = real.output_model, real.wrap_output
        self._fn = None

    def validate_arguments(self, arguments_to_validate: dict[str, Any]) -> dict[str, Any]:
        self._built()
        return super().validate_arguments(arguments_to_validate)

    def pre_parse_json(self, data: dict[str, Any]) -> dict[str, Any]:
        self._built()
        return super().pre_parse_json(data)

    def convert_result(self, result: Any) -> Any:
        self._built()
        return super().convert_result(result)


def _write(path: Path) -> None:
    """Writes the schemas the tools' signatures give to `path`."""
    from offload.mcp_server.tools import ToolSet

    found = schemas(ToolSet(None).built_tools())  # type: ignore[arg-type]
    path.write_text(json.dumps(found, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:  # never a silent rewrite of an installed copy
        sys.exit(f"usage: python -m {__spec__.name} PATH (in a checkout: {PUBLISHED_SCHEMAS})")
    _write(Path(sys.argv[1]))
