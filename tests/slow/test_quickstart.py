"""`make quickstart` runs the guides' walk-throughs: they must run to the end on a fresh project."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run one walk-through as a new user would: the venv's commands first on PATH, no project or key set."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("POSTTRAIN_PROJECT", None)
    env.pop("POSTTRAIN_API_KEY", None)
    out = subprocess.run(["bash", str(ROOT / "examples" / script)], capture_output=True, text=True, env=env,
                         timeout=timeout)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out


# Each walk-through gets twice what it takes here: CI machines run slower (the annotation one took 300 s there).
@pytest.mark.slow
@pytest.mark.timeout(660)
def test_quickstart_script_runs_to_the_end() -> None:
    out = _run("quickstart.sh", 600)
    assert "SDK: 200 interactions and 200 thumbs sent" in out.stdout
    assert "demo-1 ['thumb', 'edit']" in out.stdout
    assert "1000 created, 0 duplicates, 0 rejected" in out.stdout
    assert "quickstart done" in out.stdout


@pytest.mark.slow
@pytest.mark.timeout(1260)
def test_train_quickstart_script_runs_to_the_end() -> None:
    out = _run("train_quickstart.sh", 1200)
    for model in ("sft1", "reward-model rm1", "dpo1", "grpo1"):
        assert f"registered {model if ' ' in model else 'causal-lm ' + model}" in out.stdout
    assert "num_rows" in out.stdout and "train quickstart done" in out.stdout


@pytest.mark.slow
@pytest.mark.timeout(660)
def test_annotate_quickstart_script_runs_to_the_end() -> None:
    out = _run("annotate_quickstart.sh", 600)
    assert "20 items, 20 done, 0 gold, 60 labels" in out.stdout
    assert "built checked-sums@1: 13 rows" in out.stdout and "annotate quickstart done" in out.stdout


@pytest.mark.slow
@pytest.mark.timeout(1260)
def test_curate_quickstart_script_runs_to_the_end() -> None:
    out = _run("curate_quickstart.sh", 1200)
    assert "curation: 180 rows in, 55 kept (dedup -25, decontaminate -39, quality -6, select -55, pii 8 replaced)" in (
        out.stdout
    )
    assert "curation: 70 rows in, 60 kept (safety -10)" in out.stdout and "curate quickstart done" in out.stdout
    page = out.stdout.split("open ")[-1].strip()
    assert "<svg" in Path(page).read_text()
