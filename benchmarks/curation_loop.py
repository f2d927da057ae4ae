"""Curation on the loop: the demo's recipe on all of each turn's rows, and on a curated 30% of them.

    /work/main/.venv/bin/python benchmarks/curation_loop.py [--quick] [--seeds 3] [--turns 3]

Every run is ``posttrain demo`` (a fresh project, the cached base model, the server, simulated
users through the gateway, loop turns) with one of two recipes:

- ``all rows``: the demo's recipe as it is (consensus and regex PII only);
- ``curated 30%``: the same recipe with ``curate: {dedup, decontaminate, quality: {verifier: sim},
  select: {fraction: 0.3}}`` on every dataset the turn builds (SFT rows, preference pairs, RL
  prompts): near-duplicates out, anything overlapping the eval suite out, answers the product's own
  verifier (``[functions.verifiers] sim``, as the demo registers it) finds wrong out, then 30% of what
  is left chosen for diversity and judged quality, stratified by cohort and task family. The minors'
  own data gets decontamination and the verifier only (the guide's advice: their model learns to
  refuse from the repeated refusals that dedup and selection thin);
- ``curated 30% (4 epochs)``: the same, with SFT, the reward model and DPO trained for 4 epochs
  instead of 2: a third of the rows seen twice as often is still about 60% of the optimiser steps.

It prints, per recipe, the adults' success after each turn and their gain (median and range over
the seeds), the minors' unsafe requests answered after the last turn, the training time summed
over the turns (the sft, reward, dpo, grpo and specialise steps), and the overlap between the
training versions' prompts and the eval suite's (normalised text; the curated runs must have
none). Target: the curated 30% reaches at least the adults' gain of all rows in less training
time. It reports; it never fails on a missed target.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import print_header

from posttrain import datasets
from posttrain.curation.frame import message_text
from posttrain.demo import DemoConfig, run_demo
from posttrain.project import open_project

CURATE = {"dedup": {}, "decontaminate": {}, "quality": {"verifier": "sim"}, "select": {"fraction": 0.3}}
MINORS = {"minor": {"curate": {"decontaminate": {}, "quality": {"verifier": "sim"}}}}
LONGER = {stage: {"epochs": 4} for stage in ("sft", "reward", "dpo")}
RECIPES: dict[str, dict[str, Any]] = {
    "curated 30% (4 epochs)": {"curate": CURATE, "specialise": MINORS, **LONGER},
    "curated 30%": {"curate": CURATE, "specialise": MINORS},
    "all rows": {},
}
TRAINING_STEPS = ("sft", "reward", "dpo", "grpo", "specialise")
_TOKEN = re.compile(r"\w+")


def _normal(text: str) -> str:
    return " ".join(_TOKEN.findall(text.lower()))


def overlap(folder: Path) -> int:
    """Return how many distinct training prompts (sft, preference, prompts versions) are eval suite prompts."""
    project = open_project(folder)
    try:
        versions = datasets.list_versions(project)
        suite = {
            _normal(t)
            for v in versions
            if v.kind == "eval"
            for t in message_text(datasets.read_rows(v).column("prompt")).to_pylist()
        }
        seen = {
            _normal(t)
            for v in versions
            if v.kind in ("sft", "preference", "prompts")
            for t in message_text(datasets.read_rows(v).column("prompt")).to_pylist()
        }
        return len(seen & suite)
    finally:
        project.close()


def _spread(values: list[float], scale: float = 100.0, unit: str = "%") -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0] * scale:.1f}{unit}"
    return f"{statistics.median(values) * scale:.1f}{unit} ({min(values) * scale:.1f}–{max(values) * scale:.1f})"


def merge(base: dict[str, Any], stages: dict[str, Any]) -> dict[str, Any]:
    """Return the demo's stage overrides with ``stages`` merged in, nested mappings key by key."""
    out = dict(base)
    for key, value in stages.items():
        current = out.get(key)
        out[key] = merge(current, value) if isinstance(current, dict) and isinstance(value, dict) else value
    return out


def training_seconds(report: dict[str, Any]) -> float:
    """Return the seconds the training steps took, over every turn."""
    return sum(t.get("seconds", {}).get(step, 0.0) for t in report["turns"][1:] for step in TRAINING_STEPS)


def paired(reports: list[dict[str, Any]], baseline: list[dict[str, Any]]) -> str:
    """Return the per-seed difference in adults' success after the last turn (the same seed's runs paired,
    so the shared base model and traffic cancel) with a 95% t-interval over the seeds."""
    from scipy import stats

    by_seed = {r["seed"]: r for r in baseline}
    diffs = [(r["turns"][-1]["success"]["adult"] - by_seed[r["seed"]]["turns"][-1]["success"]["adult"]) * 100
             for r in reports if r["seed"] in by_seed]  # fmt: skip
    if len(diffs) < 2:
        return "paired by seed: needs two seeds"
    mean, se = statistics.mean(diffs), statistics.stdev(diffs) / len(diffs) ** 0.5
    half = float(stats.t.ppf(0.975, len(diffs) - 1)) * se
    return (f"paired by seed, success after the last turn minus all rows': {', '.join(f'{d:+.1f}' for d in diffs)} "
            f"points; mean {mean:+.1f}, 95% interval [{mean - half:+.1f}, {mean + half:+.1f}]")  # fmt: skip


def _median_gain(reports: list[dict[str, Any]]) -> float:
    return statistics.median((r["turns"][-1]["success"]["adult"] - r["turns"][0]["success"]["adult"]) * 100
                             for r in reports)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the fast demo size, one seed, two turns")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--fast", action="store_true", help="the fast demo size with --seeds and --turns")
    parser.add_argument("--out", type=Path, default=None, help="write every run's report here (JSON)")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="which recipes, comma-separated")
    args = parser.parse_args()
    seeds = 1 if args.quick else args.seeds
    turns = 2 if args.quick else args.turns
    fast = args.quick or args.fast
    chosen = {name: RECIPES[name] for name in (n.strip() for n in args.recipes.split(",")) if name in RECIPES}
    if not chosen:
        parser.error(f"--recipes: name one or more of {', '.join(RECIPES)}")
    print_header("curation on the loop: all rows vs a curated 30%", [
        ("runs", f"{len(chosen)} recipes x {seeds} seeds x {turns} turns"),
        ("size", "fast demo" if fast else "full demo"),
        ("curated", json.dumps(CURATE)),
    ])  # fmt: skip
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="posttrain-curation-loop-") as scratch:
        for seed in range(seeds):
            for name, stages in chosen.items():
                base = DemoConfig.fast(seed=seed, turns=turns) if fast else DemoConfig(seed=seed, turns=turns)
                config = base.model_copy(update={"stages": merge(base.stages, stages)})
                folder = Path(scratch) / f"{name.replace(' ', '-').replace('%', '')}-{seed}"
                started = time.perf_counter()
                report = run_demo(folder, config)
                report["overlap"] = overlap(folder)
                report["training_seconds"] = training_seconds(report)
                rows = [sum(t.get("datasets", {}).values()) for t in report["turns"][1:]]
                print(f"  {name} seed {seed}: {time.perf_counter() - started:.0f}s, adults "
                      + " → ".join(f"{t['success']['adult']:.1%}" for t in report["turns"])
                      + f"; training {report['training_seconds']:.0f}s; rows/turn {rows}; "
                      f"eval prompts trained on {report['overlap']}", flush=True)  # fmt: skip
                results.setdefault(name, []).append(report)
    print()
    header = ["recipe", *[f"adults turn {t}" for t in range(turns + 1)], "gain (points) per seed",
              "minors unsafe answered (last)", "training s", "rows / turn", "eval prompts trained on"]  # fmt: skip
    print(" | ".join(header))
    for name, reports in results.items():
        cells = [name]
        for turn in range(turns + 1):
            cells.append(_spread([r["turns"][turn]["success"]["adult"] for r in reports]))
        gains = [(r["turns"][-1]["success"]["adult"] - r["turns"][0]["success"]["adult"]) * 100 for r in reports]
        cells.append(", ".join(f"{g:+.1f}" for g in gains))
        cells.append(_spread([r["turns"][-1]["safety_violations"]["minor"] for r in reports]))
        cells.append(_spread([r["training_seconds"] for r in reports], scale=1.0, unit=""))
        per_turn = [sum(t.get("datasets", {}).values()) for r in reports for t in r["turns"][1:]]
        cells.append(f"{statistics.mean(per_turn):.0f}" if per_turn else "-")
        cells.append(", ".join(str(r["overlap"]) for r in reports))
        print(" | ".join(cells))
    baseline = results.get("all rows", [])
    for name, reports in results.items():
        if name == "all rows" or not baseline:
            continue
        leaks = [r["overlap"] for r in reports]
        gain, base_gain = _median_gain(reports), _median_gain(baseline)
        seconds = statistics.median(r["training_seconds"] for r in reports)
        base_seconds = statistics.median(r["training_seconds"] for r in baseline)
        met = gain >= base_gain and seconds < base_seconds
        print(f"\n  {name}: median gain {gain:+.1f} vs all rows {base_gain:+.1f} points, training {seconds:.0f}s "
              f"vs {base_seconds:.0f}s: target {'met' if met else 'missed'}; eval prompts trained on {leaks} "
              f"(must be all 0): {'ok' if not any(leaks) else 'LEAK'}")  # fmt: skip
        print(f"    {paired(reports, baseline)}")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
