"""Reads the conformance suite's result folders and prints one line per server scenario:
pass, FAIL, or n/a with the reason it does not apply to offload. Exit 1 when a scenario
that applies failed (or a "n/a" one starts to pass: then this table is stale)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

# The suite names each result folder "server-<scenario>-<ISO time>", e.g.
# server-ping-2026-11-28T08-27-20-123Z; the time may itself hold "-20".
STAMP = re.compile(r"-\d{4}-\d{2}-\d{2}T.*$")
FIXTURE = "calls the suite's own fixture {} (offload serves its 11 task tools, not the fixture)"
NOT_APPLICABLE = {
    "logging-set-level": "offload does not declare logging (deprecated in 2026-07-28)",
    "completion-complete": "offload does not declare the completions capability",
    "tools-call-image": FIXTURE.format("tool test_image_content"),
    "tools-call-audio": FIXTURE.format("tool test_audio_content"),
    "tools-call-embedded-resource": FIXTURE.format("tool test_embedded_resource"),
    "tools-call-mixed-content": FIXTURE.format("tool test_multiple_content_types"),
    "tools-call-with-logging": "needs the logging capability, which offload does not declare",
    "tools-call-with-progress": FIXTURE.format("tool test_tool_with_progress")
    + "; offload's wait_for_tasks reports progress",
    "tools-call-sampling": "offload never asks the client for sampling",
    "tools-call-elicitation": "offload never asks the client for input (elicitation)",
    "elicitation-sep1034-defaults": "offload never asks the client for input (elicitation)",
    "elicitation-sep1330-enums": "offload never asks the client for input (elicitation)",
    "resources-read-text": FIXTURE.format("resource test://static-text")
    + "; offload's offload://tasks/{id}/output is read in tests/test_mcp_http.py",
    "resources-read-binary": FIXTURE.format("resource test://static-binary"),
    "resources-templates-read": FIXTURE.format("template test://template/{id}/data"),
    "resources-subscribe": "offload declares resources.subscribe: false",
    "resources-unsubscribe": "offload declares resources.subscribe: false",
    "prompts-get-simple": FIXTURE.format("prompt test_simple_prompt") + "; offload has no prompts",
    "prompts-get-with-args": FIXTURE.format("prompt test_prompt_with_arguments"),
    "prompts-get-embedded-resource": FIXTURE.format("prompt test_prompt_with_embedded_resource"),
    "prompts-get-with-image": FIXTURE.format("prompt test_prompt_with_image"),
}


def main(results: Path) -> int:
    bad = 0
    counts = {"pass": 0, "FAIL": 0, "n/a": 0}
    for folder in sorted(results.iterdir()):
        name = STAMP.sub("", folder.name.removeprefix("server-"))
        checks = json.loads((folder / "checks.json").read_text())
        failed = [c for c in checks if c["status"] in ("FAILURE", "ERROR")]
        passed = sum(1 for c in checks if c["status"] == "SUCCESS")
        if name in NOT_APPLICABLE:
            verdict, note = "n/a", NOT_APPLICABLE[name]
            if not failed:
                verdict, note = "FAIL", "passes now: remove it from the n/a table"
        elif failed:
            verdict, note = "FAIL", "; ".join(str(c.get("errorMessage", ""))[:120] for c in failed)
        else:
            verdict, note = "pass", f"{passed} check(s)"
        bad += verdict == "FAIL"
        counts[verdict] += 1
        print(f"{verdict:5} {name:32} {note}")
    print(f"\n{counts['pass']} passed, {counts['FAIL']} failed, {counts['n/a']} do not apply")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
