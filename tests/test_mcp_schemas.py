"""The tool schemas `offload mcp` publishes without deriving them at start.

`ToolSet.tools()` reads each tool's schemas from `tool_schemas.json` and builds its
pydantic models at its first call; these tests hold that file and those models to what
the tools' signatures give (`ToolSet.built_tools()`, the SDK's own derivation).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from offload.mcp_server import published
from offload.mcp_server.published import PUBLISHED_SCHEMAS, schemas
from offload.mcp_server.tools import ToolSet


def test_published_schemas_are_what_the_signatures_give() -> None:
    published = json.loads(PUBLISHED_SCHEMAS.read_text(encoding="utf-8"))
    derived = schemas(ToolSet(None).built_tools())  # type: ignore[arg-type]
    assert published == derived, (
        "src/offload/mcp_server/tool_schemas.json is stale: a tool's signature changed. "
        "Write it anew with `.venv/bin/python -m offload.mcp_server.published "
        "src/offload/mcp_server/tool_schemas.json`"
    )


def test_tools_carry_the_published_schemas_and_build_models_at_first_call() -> None:
    fast = ToolSet(None).tools()  # type: ignore[arg-type]
    slow = {t.name: t for t in ToolSet(None).built_tools()}  # type: ignore[arg-type]
    assert [t.name for t in fast] == list(slow)
    for tool in fast:
        built = slow[tool.name]
        assert tool.fn_metadata.arg_model.__name__ == "_Unbuilt"  # nothing derived at start
        with pytest.raises(ValidationError):  # and read early, it refuses every call
            tool.fn_metadata.arg_model.model_validate({})
        assert (tool.resolved_params, tool.resolver_plans) == (
            built.resolved_params,
            built.resolver_plans,
        )
        assert tool.parameters == built.parameters
        assert tool.output_schema == built.output_schema
        assert (tool.is_async, tool.context_kwarg) == (built.is_async, built.context_kwarg)
        assert tool.annotations == built.annotations
        assert tool.description == built.description
        tool.fn_metadata.pre_parse_json({})  # the first use builds the models
        meta, want = tool.fn_metadata, built.fn_metadata
        assert meta.arg_model.model_json_schema() == want.arg_model.model_json_schema()
        assert meta.arg_model.model_config.get("extra") == "forbid"
        assert (meta.output_model, meta.wrap_output) == (want.output_model, want.wrap_output)


@pytest.mark.slow  # about a second: not in the fast subset
def test_the_writer_needs_a_path() -> None:
    done = subprocess.run(
        [sys.executable, "-m", published.__name__], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "usage:" in done.stderr


@pytest.mark.slow  # about a second: not in the fast subset
def test_the_writer_reproduces_the_published_file(tmp_path: Path) -> None:
    written = tmp_path / "tool_schemas.json"
    done = subprocess.run(
        [sys.executable, "-m", published.__name__, str(written)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert written.read_bytes() == PUBLISHED_SCHEMAS.read_bytes()
