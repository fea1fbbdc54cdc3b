"""scripts/conformance_report.py names each scenario from its result folder, whatever the
time of day stamped on the folder (a stamp holding "-20" once broke the n/a table)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location(
    "conformance_report", HERE / "scripts/conformance_report.py"
)
assert spec and spec.loader
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def write(results: Path, folder: str, statuses: list[str]) -> Path:
    results = results / "results"
    (results / folder).mkdir(parents=True)
    checks = [{"status": s, "errorMessage": "boom"} for s in statuses]
    (results / folder / "checks.json").write_text(json.dumps(checks))
    return results


@pytest.mark.parametrize(
    "stamp", ["2026-11-28T08-27-20", "2026-11-28T20-20-20-200Z", "2020-01-01T00-00-00.000Z"]
)
def test_a_stamp_holding_20_still_names_the_scenario(tmp_path, capsys, stamp):
    write(tmp_path, f"server-tools-call-audio-{stamp}", ["FAILURE"])
    results = write(tmp_path, f"server-ping-{stamp}", ["SUCCESS"])
    assert report.main(results) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["pass", "ping"]
    assert lines[1].split()[:2] == ["n/a", "tools-call-audio"]


def test_a_failure_that_applies_fails_the_run(tmp_path, capsys):
    results = write(tmp_path, "server-tools-list-2026-11-28T08-27-20", ["FAILURE"])
    assert report.main(results) == 1
    assert capsys.readouterr().out.startswith("FAIL  tools-list")


def test_an_na_scenario_that_starts_passing_is_flagged(tmp_path, capsys):
    results = write(tmp_path, "server-tools-call-audio-2026-11-28T08-27-20", ["SUCCESS"])
    assert report.main(results) == 1
    assert "passes now" in capsys.readouterr().out
