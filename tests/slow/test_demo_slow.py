"""`posttrain demo --fast` from the CLI, as CI runs it: a fresh project, the loop, report.json/html."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.timeout(900)  # builds the base model from an empty cache first
def test_fast_demo_runs_and_reports_every_turn(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    env = {**os.environ, "POSTTRAIN_SIM_CACHE": os.environ.get("POSTTRAIN_SIM_CACHE", str(tmp_path / "cache"))}
    done = subprocess.run(
        [sys.executable, "-m", "posttrain", "demo", "--fast", "--turns", "2", "--project", str(folder)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((folder / "report.json").read_text())
    assert [t["turn"] for t in report["turns"]] == [0, 1, 2]
    for turn in report["turns"]:
        assert set(turn["success"]) == {"adult", "minor"} and 0 <= turn["success"]["adult"] <= 1
        assert turn["feedback"] and turn["seconds"]
    assert report["turns"][1]["datasets"]["sft"] > 0 and report["turns"][1]["decisions"]
    assert "acceptance" in report and (folder / "report.html").read_text().count("<svg") >= 3
    assert "adults' success" in done.stdout and "report.html" in done.stdout
    again = subprocess.run([sys.executable, "-m", "posttrain", "demo", "--fast", "--project", str(folder)],
                           capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert again.returncode == 2 and "is not empty" in again.stderr
