#!/usr/bin/env python3
"""Benchmark of offload's MCP server against backburner-mcp 1.0.0, in one run.

Both servers are started the way an MCP client starts them (a child process on stdio)
and driven through the SDK's client:

- throughput: 200 x `true`, offload through `submit_batch` + `wait_for_tasks`,
  backburner through 200 `start_task` calls + `task_status` polling (one round over the
  unfinished ids, then a 50 ms pause, as a polling agent would), from the first call
  until every task is known to be finished;
- `tools/list` size: the compact JSON of the listed tools;
- cold start: from spawning the server to the answer of its first `tools/list`.

backburner-mcp is installed into a throwaway virtualenv under /tmp when missing. Every
server gets a fresh data directory in a temporary folder; nothing touches ~/.offload or
~/.backburner. Run: `.venv/bin/python scripts/bench_mcp.py` (not part of the test suite).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

PEER = "backburner-mcp==1.0.0"
PEER_VENV = Path("/tmp/offload-bench-peer")
TASKS = 200
COLD_STARTS = 7
PEER_POLL_PAUSE_SECONDS = 0.05
FINISHED = {"completed", "failed", "cancelled", "timed_out", "interrupted"}


@dataclass
class Side:
    """One server under test: how to start it and how to run the 200 tasks through it."""

    name: str
    params: StdioServerParameters
    run: Callable[[Client, int], Awaitable[int]]


def peer_command() -> Path:
    """The backburner console script, installing it into a throwaway venv if missing."""
    script = PEER_VENV / "bin" / "backburner"
    if not script.exists():
        print(f"installing {PEER} into {PEER_VENV} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        pip = [str(PEER_VENV / "bin" / "python"), "-m", "pip", "install", "-q", PEER]
        subprocess.run(pip, check=True)
    return script


def structured(result: Any) -> Any:
    """A tool result's structured content; fails loudly on an error result."""
    if result.is_error:
        raise RuntimeError(f"tool error: {result.content}")
    content = result.structured_content
    if content is None:  # an unstructured answer: its JSON text
        return json.loads(result.content[0].text)
    if isinstance(content, dict) and set(content) == {"result"}:
        return content["result"]
    return content


async def run_offload(client: Client, n: int) -> int:
    """Submits n x `true` in one batch and waits for all; returns the tool calls made."""
    batch = structured(await client.call_tool("submit_batch", {"tasks": [{"command": "true"}] * n}))
    ids, calls = batch["task_ids"], 1
    while True:
        waited = structured(
            await client.call_tool("wait_for_tasks", {"task_ids": ids, "timeout_seconds": 55})
        )
        calls += 1
        if waited["met"]:
            bad = [t for t in waited["tasks"] if t["state"] != "completed"]
            if bad:
                raise RuntimeError(f"offload: {len(bad)} tasks did not complete: {bad[:3]}")
            return calls


async def run_peer(client: Client, n: int) -> int:
    """Starts n x `true` one call each, then polls task_status until all are finished."""
    pending = []
    for _ in range(n):
        pending.append(
            structured(await client.call_tool("start_task", {"command": "true"}))["task_id"]
        )
    calls = n
    while pending:
        still = []
        for task_id in pending:
            status = structured(await client.call_tool("task_status", {"task_id": task_id}))
            calls += 1
            if status["status"] not in FINISHED:
                still.append(task_id)
        pending = still
        if pending:
            await anyio.sleep(PEER_POLL_PAUSE_SECONDS)
    return calls


async def tools_list_bytes(params: StdioServerParameters) -> tuple[int, int, float]:
    """(bytes of tools/list, number of tools, seconds from spawn to the listing)."""
    started = time.perf_counter()
    async with Client(params) as client:
        listed = await client.list_tools()
        elapsed = time.perf_counter() - started
    tools = listed.model_dump(by_alias=True, mode="json", exclude_none=True)["tools"]
    size = len(json.dumps({"tools": tools}, ensure_ascii=False, separators=(",", ":")).encode())
    return size, len(tools), elapsed


async def throughput(side: Side, n: int) -> tuple[float, int]:
    """Seconds for n x `true` through `side` after one warm-up task, and the calls made."""
    async with Client(side.params) as client:
        await side.run(client, 1)  # warm-up: the supervisor/engine is up and ready
        started = time.perf_counter()
        calls = await side.run(client, n)
        return time.perf_counter() - started, calls


def sides(root: Path) -> list[Side]:
    workspace = root / "ws"
    workspace.mkdir()
    base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    offload = StdioServerParameters(
        command=sys.executable,
        args=["-m", "offload", "mcp", "--workspace", str(workspace)],
        env={**base_env, "OFFLOAD_HOME": str(root / "offload-home")},
        cwd=workspace,
    )
    peer = StdioServerParameters(
        command=str(peer_command()),
        env={**base_env, "BACKBURNER_HOME": str(root / "backburner-home")},
        cwd=workspace,
    )
    return [Side("offload", offload, run_offload), Side("backburner", peer, run_peer)]


def stop_offload_supervisor(root: Path) -> None:
    env = {**os.environ, "OFFLOAD_HOME": str(root / "offload-home")}
    subprocess.run(
        [sys.executable, "-m", "offload", "supervisor", "stop"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )


async def bench(root: Path, n: int, cold_starts: int) -> dict[str, dict[str, float]]:
    """Sizes first (this also starts offload's supervisor), then cold starts taken in
    turns so that load from elsewhere on the machine hits both sides alike, then the runs."""
    both = sides(root)
    figures: dict[str, dict[str, float]] = {}
    for side in both:
        size, count, _ = await tools_list_bytes(side.params)
        figures[side.name] = {"tools": count, "tools_list_bytes": size}
    starts: dict[str, list[float]] = {side.name: [] for side in both}
    for _ in range(cold_starts):
        for side in both:
            starts[side.name].append((await tools_list_bytes(side.params))[2])
    for side in both:
        seconds, calls = await throughput(side, n)
        figures[side.name].update(
            cold_start_s=statistics.median(starts[side.name]), run_s=seconds, calls=calls
        )
    return figures


def report(figures: dict[str, dict[str, float]], n: int) -> None:
    ours, peer = figures["offload"], figures["backburner"]
    print(f"{'':24}{'offload':>12}{'backburner':>12}{'ratio':>10}")
    rows = [
        (f"{n} x true, s", "run_s", "{:.3f}", "peer/offload: {:.1f}x", ""),
        ("tool calls", "calls", "{:.0f}", "peer/offload: {:.0f}x", ""),
        ("tools/list, bytes", "tools_list_bytes", "{:.0f}", "offload/peer: {:.2f}", "<= 4,400"),
        ("tools", "tools", "{:.0f}", "", ""),
        ("cold start, s (median)", "cold_start_s", "{:.3f}", "offload/peer: {:.2f}", "<= 1.0"),
    ]
    for label, key, form, ratio_form, target in rows:
        a, b = ours[key], peer[key]
        if ratio_form.startswith("peer"):
            ratio = ratio_form.format(b / a) if a else ""
        else:
            ratio = ratio_form.format(a / b) if b and ratio_form else ""
        if target:
            ratio += f" (target {target})"
        print(f"{label:24}{form.format(a):>12}{form.format(b):>12}   {ratio}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=TASKS)
    parser.add_argument("--cold-starts", type=int, default=COLD_STARTS)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    root = Path(
        tempfile.mkdtemp(prefix="offload-bench-mcp-", dir=os.environ.get("OFFLOAD_BENCH_SCRATCH"))
    )
    try:
        figures = anyio.run(bench, root, args.tasks, args.cold_starts)
    finally:
        stop_offload_supervisor(root)
        shutil.rmtree(root, ignore_errors=True)
    report(figures, args.tasks)
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
