"""benchmarks/annotation.py's report when a run had no accepted answer to train on (no gain measured)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "annotation.py"


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("annotation_bench", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_run_without_rows_shows_zero_rows_and_no_gain_and_the_verdict_uses_the_rest() -> None:
    bench = _bench()
    gains = {("judge alone", 0.0): 0.02, ("random", 0.6): 0.035, ("random", 1.0): 0.03,
             ("active", 0.3): None, ("active", 0.6): 0.03, ("active", 1.0): 0.03}  # fmt: skip
    results = [{"strategy": s, "share": share, "seed": 0, "sft_rows": 0 if g is None else 70,
                "success": None if g is None else 0.3 + g} for (s, share), g in gains.items()]  # fmt: skip
    table, verdict = bench.summarise_runs(results, 0.3, 120)
    assert "| active | 36 (30% of B) | 0 | - |" in table
    assert "| random | 120 (100% of B) | 70 | +3.0 pts |" in table
    assert verdict[0].startswith("active selection reaches random's 100%-budget gain (+3.0 pts) with at most 72")
