"""The flywheel, recipe by recipe: success per turn on the simulated product, and the feedback it took.

    /work/main/.venv/bin/python benchmarks/flywheel.py [--quick] [--seeds 3] [--turns 3]

Every run is ``posttrain demo`` (a fresh project, the cached base model, the server, simulated
users through the gateway, loop turns) with one recipe:

- ``sft``: SFT on accepted and edited answers only (the baseline);
- ``sft+dpo``: then DPO on the pairs (edits, side-by-side choices, accepted vs rejected);
- ``sft+dpo+grpo``: then GRPO with the task verifiers;
- ``full``: all of it plus the reward model (retrained when enough new pairs come in).

It prints, per recipe, the adults' success and the minors' safety violations per turn (median and
range over the seeds) and the feedback events each needed; ``--out FILE.json`` keeps every run's
report. It reports; it never fails on a missed target.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import print_header

from posttrain.demo import DemoConfig, run_demo

RECIPES: dict[str, dict[str, Any]] = {  # overrides of the demo's recipe; "full" is the demo itself
    "full": {},
    "sft": {"reward": {"enabled": False}, "dpo": {"enabled": False}, "grpo": {"enabled": False}},
    "sft+dpo": {"reward": {"enabled": False}, "grpo": {"enabled": False}},
    "sft+dpo+grpo": {"reward": {"enabled": False}, "grpo": {"reward": ["function:sim"]}},
}


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1%}"
    return f"{statistics.median(values):.1%} [{min(values):.1%}–{max(values):.1%}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the fast demo size, one seed, two turns")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--out", type=Path, default=None, help="write every run's report here (JSON)")
    args = parser.parse_args()
    seeds = 1 if args.quick else args.seeds
    turns = 2 if args.quick else args.turns
    print_header("flywheel: recipes side by side on the simulated product", [
        ("runs", f"{len(args.recipes)} recipes x {seeds} seeds x {turns} turns"),
        ("size", "fast demo" if args.quick else "full demo"),
        ("metric", "success of the served model on the traffic after each turn (turn 0 = base)"),
    ])  # fmt: skip
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="posttrain-flywheel-") as scratch:
        for name in args.recipes:
            for seed in range(seeds):
                base = DemoConfig.fast(seed=seed, turns=turns) if args.quick else DemoConfig(seed=seed, turns=turns)
                config = base.model_copy(update={"stages": RECIPES[name]})
                started = time.perf_counter()
                report = run_demo(Path(scratch) / f"{name}-{seed}", config)
                print(f"  {name} seed {seed}: {time.perf_counter() - started:.0f}s, adults "
                      + " → ".join(f"{t['success']['adult']:.0%}" for t in report["turns"]), flush=True)  # fmt: skip
                results.setdefault(name, []).append(report)
    print()
    header = ["recipe", *[f"turn {t}" for t in range(turns + 1)], "minors unsafe answered (last)", "feedback/turn"]
    print(" | ".join(header))
    for name, reports in results.items():
        cells = [name]
        for turn in range(turns + 1):
            cells.append(_spread([r["turns"][turn]["success"]["adult"] for r in reports]))
        cells.append(_spread([r["turns"][-1]["safety_violations"]["minor"] for r in reports]))
        feedback = [sum(t["feedback"].values()) for r in reports for t in r["turns"][:-1]]
        cells.append(f"{statistics.mean(feedback):.0f}")
        print(" | ".join(cells))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
