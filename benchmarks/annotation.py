"""Human labels chosen by active selection vs at random: the gain in adults' success per label, on the sim.

    /work/main/.venv/bin/python -u benchmarks/annotation.py [--fast] [--seeds 3] [--out FILE.md]

Per seed: a fresh project with the simulated product's base model (built once, cached), served by
``posttrain serve``'s app in this process; simulated adults and minors send requests through the
gateway and leave their sparse, noisy feedback. That project state is the starting point of every
run below (the folder is copied per run). A run:

1. picks which adult interactions people label: ``random`` (uniform) or ``active`` (the items the
   judge is least sure of), with a budget counted in HUMAN labels (items x overlap 3);
2. an ``accept`` queue (overlap 3, Dawid-Skene consensus) gets those items; the judge pre-labels
   them; the simulated annotators (3 careful ~0.9-0.95, 1 careless 0.65 that skips 10 %, 1
   adversarial that inverts the truth 85 % of the time) label them through the annotation core;
3. the judge is calibrated against their consensus (``judges.calibrate``); the rest of the adult
   pool goes into the queue and a trusted judge resolves what it is sure of (``resolve_by_judges``,
   confidence >= 0.9); what neither resolves stays unlabelled;
4. an SFT dataset is built from the consensus feedback only (``source = [annotator, judge]``, adults),
   the base model is fine-tuned on it (the demo's SFT settings) and adults' sampled success is
   measured offline (``sim.evaluate_model``, the same prompts for every run).

The judge is the simulated AI judge ``posttrain.sim.annotators:judge_score`` (a verifier that is
unsure of arithmetic, mostly sure of reversing and sorting, slightly overconfident), registered as
``[annotate.judges.sim]``. It is trusted when the 95% interval of its agreement with the people,
on the items where it is sure (confidence >= 0.9), starts at 0.5 or above (``trust_threshold`` 0.5:
the active runs calibrate it on a 30-item random slice, where the default 0.8 is out of reach of
a Wilson interval on ~15 sure items). The gain is success after SFT minus the base model's.
Active selection's ``labels needed`` is read off the linear interpolation of its median gain
between budgets. It reports; it never fails on a missed target.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import print_header  # noqa: E402

from posttrain import annotate, keys, sim  # noqa: E402
from posttrain.annotate import judges  # noqa: E402
from posttrain.annotate.agreement import krippendorff_alpha  # noqa: E402
from posttrain.annotate.resolve import write_consensus  # noqa: E402
from posttrain.datasets import BuildConfig, build  # noqa: E402
from posttrain.errors import InvalidInput  # noqa: E402
from posttrain.models.registry import register_model  # noqa: E402
from posttrain.project import CONFIG_FILE, Project, init_project, open_project  # noqa: E402
from posttrain.sim.annotators import make_annotators, run_annotators  # noqa: E402
from posttrain.warehouse.rows import fetch_all  # noqa: E402

OVERLAP = 3
QUEUE = "review"
JUDGE = "sim"
TARGET_SHARE = 0.6
ADULTS = "i.cohort = 'adult'"
SETTINGS = f"""
[functions.verifiers]
sim = "posttrain.sim.verify:verifier"
simjudge = "posttrain.sim.annotators:judge_score"

[annotate]
trust_threshold = 0.5
sure = 0.9

[annotate.judges.{JUDGE}]
kind = "verifier"
verifier = "simjudge"
"""
# (strategy, share of the budget B); B is counted in human labels
RUNS: list[tuple[str, float]] = [("judge alone", 0.0), ("random", 0.6), ("random", 1.0), ("active", 0.3),
                                 ("active", 0.6), ("active", 1.0)]  # fmt: skip


class Size:
    """How big a benchmark run is."""

    def __init__(self, fast: bool) -> None:
        self.fast = fast
        self.requests = 400 if fast else 2000
        self.budget_items = 40 if fast else 300  # B = budget_items * OVERLAP human labels
        self.eval_prompts = 100 if fast else 400
        self.eval_samples = 4
        self.calibration_items = 10 if fast else 30  # active: random items labelled first, to calibrate the judge
        self.recipe = sim.BaseRecipe()  # the fast recipe answers nothing right: no room to measure a gain
        self.sft = {"learning_rate": 3e-4, "epochs": 2.0, "batch_size": 32, "max_length": 96}


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the starting state: a project whose warehouse holds the base model's traffic -------------------


def make_base_project(folder: Path, base_path: Path, size: Size, seed: int) -> dict[str, Any]:
    """Create the project, register the base model, serve it and send the simulated traffic."""
    from posttrain.demo.run import _Server

    init_project(folder).close()
    with (folder / CONFIG_FILE).open("a", encoding="utf-8") as f:
        f.write(SETTINGS)
    project = open_project(folder)
    try:
        register_model(project, "base", base_path, description="the simulated product's base model")
        key = keys.create_key(project, "ingest", name="sim users").key
        with _Server(project) as server:
            report = sim.run_traffic(server.url, key, requests=size.requests, seed=seed, model="base", users=200)
        adult = report.cohorts["adult"]
        return {"requests": report.requests, "seconds": report.seconds, "adult_requests": adult.requests,
                "adult_success": round(adult.success_rate, 4), "feedback": report.feedback_sent}  # fmt: skip
    finally:
        project.close()


def adult_pool(project: Project) -> list[str]:
    """Return the adult interactions with an answer, oldest first."""
    rows = project.cursor().execute(
        "SELECT id FROM interactions WHERE cohort = 'adult' AND response IS NOT NULL ORDER BY \"timestamp\", id"
    )
    return [r[0] for r in rows.fetchall()]


# --- one run: choose, label, resolve, build, train, evaluate ----------------------------------------


def judge_alone(project: Project) -> int:
    """With no human labels to calibrate against, let the judge resolve what it is sure of, untested."""
    queue = annotate.get_queue(project, QUEUE)
    judges.prelabel(project, QUEUE, limit=100_000)
    rows = fetch_all(project.cursor(), "SELECT l.id, l.item_id, l.value, l.confidence FROM labels l "
                     "WHERE l.queue_id = ? AND l.source = 'judge'", [queue.id], json=("value",))  # fmt: skip
    cur = project.cursor()
    cur.begin()
    done = 0
    for row in rows:
        if (row["confidence"] or 0.0) >= project.settings.annotate.sure:
            write_consensus(cur, queue, row["item_id"], row["value"]["accept"],
                                support=row["confidence"], source="judge", resolved_by="judge",
                                label_ids=[row["id"]])  # fmt: skip
            done += 1
    cur.commit()
    return done


def label_and_calibrate(project: Project, crowd: list[Any]) -> tuple[int, bool]:
    """Have the judge pre-label the open items and the crowd label them; return (labels, judge trusted)."""
    judges.prelabel(project, QUEUE)
    run = run_annotators(project, QUEUE, crowd)
    annotate.resolve_queue(project, annotate.get_queue(project, QUEUE))  # Dawid-Skene over the whole queue
    return run.labels, judges.calibrate(project, QUEUE)[JUDGE].trusted


def resolve_rest(project: Project, pool: list[str]) -> int:
    """Put the rest of the adult pool in the queue; a trusted judge resolves what it is sure of."""
    annotate.fill(project, QUEUE, interaction_ids=pool, origin="judge", limit=100_000)
    judges.prelabel(project, QUEUE, limit=100_000)
    return judges.resolve_by_judges(project, QUEUE)


def run_one(start: Path, work: Path, strategy: str, share: float, seed: int, size: Size) -> dict[str, Any]:
    """Run one strategy and budget from a copy of the starting project; return its figures."""
    from posttrain.annotate import active
    from posttrain.train.sft import SFTConfig, train_sft

    shutil.copytree(start, work)
    project = open_project(work)
    try:
        config = annotate.QueueConfig(name=QUEUE, task="accept", overlap=OVERLAP, gold_share=0,
                                      consensus="dawid-skene", judges=[JUDGE], priority="active")  # fmt: skip
        annotate.create_queue(project, config)
        pool = adult_pool(project)
        items = round(size.budget_items * share)
        crowd = make_annotators(seed=seed)
        result: dict[str, Any] = {"strategy": strategy, "share": share, "seed": seed, "labels": 0, "judge_resolved": 0}
        trusted = False
        if strategy == "judge alone":
            annotate.fill(project, QUEUE, interaction_ids=pool, origin="judge", limit=100_000)
            result["judge_resolved"] = judge_alone(project)
        else:
            # active: a random slice first, so the judge is calibrated on items like the rest, then by value
            slice_ = items if strategy == "random" else min(size.calibration_items, items // 2)
            active.select(project, QUEUE, slice_, strategy="random", where=ADULTS, seed=seed)
            result["labels"], trusted = label_and_calibrate(project, crowd)
            result["trusted"] = trusted  # what the active selection after the slice went by
            result["calibration"] = judges.calibrate(project, QUEUE)[JUDGE].model_dump(mode="json", exclude={"bins"})
            if strategy == "active":
                chosen = active.select(project, QUEUE, items - slice_, strategy="active", where=ADULTS, seed=seed)
                result["judge_resolved"] += chosen.judge_resolved
                labels, _ = label_and_calibrate(project, crowd)
                result["labels"] += labels
            result["human_labels"] = human_labels(project)
            result["judge_resolved"] += resolve_rest(project, pool)
        result["items"] = result["labels"] // OVERLAP
        result.setdefault("trusted", trusted)
        result["consensus_accuracy"] = consensus_accuracy(project)
        try:
            dataset = build(project, "sft", "annotated", BuildConfig(source=["annotator", "judge"], cohort=["adult"]))
        except InvalidInput:
            # no accepted adult answer: at the smallest budget the judge is often not yet trusted and
            # the few human-labelled items may all be rejected; an outcome, reported as no gain measured
            result.update(sft_rows=0, success=None)
            return result
        result["sft_rows"] = dataset.row_count
        record = train_sft(project, SFTConfig(model="base", dataset="annotated", output="tuned", seed=seed,
                                              save_steps=10_000, **size.sft))  # fmt: skip
        score = sim.evaluate_model(record.path, prompts=size.eval_prompts, samples=size.eval_samples, seed=12345,
                                   cohort="adult")  # fmt: skip
        result["success"] = score.sampled
        result["families"] = {k: v.sampled for k, v in score.families.items()}
        return result
    finally:
        project.close()
        shutil.rmtree(work, ignore_errors=True)


def human_labels(project: Project) -> list[tuple[str, str, Any]]:
    """Return the human labels of the queue as (item, annotator, accept)."""
    rows = fetch_all(project.cursor(), "SELECT item_id, annotator, value FROM labels WHERE source = 'annotator' "
                     "ORDER BY created_at, id", json=("value",))  # fmt: skip
    return [(r["item_id"], r["annotator"], r["value"]["accept"]) for r in rows]


def consensus_accuracy(project: Project) -> dict[str, Any]:
    """Return how often the resolved items' consensus matches the sim's truth, by who resolved them."""
    from posttrain.sim.annotators import task_of, truly_good

    rows = fetch_all(project.cursor(), """
        SELECT a.consensus, a.resolved_by, i.messages, i.response FROM annotation_items a
        JOIN interactions i ON i.id = a.interaction_id WHERE a.status = 'done'""",
                     json=("consensus", "messages"))  # fmt: skip
    out: dict[str, Any] = {}
    for who in sorted({r["resolved_by"] for r in rows}):
        mine = [r for r in rows if r["resolved_by"] == who]
        right = sum(
            r["consensus"]["value"] == truly_good(task_of(annotate.ItemView(
                item_id="-", interaction_id="-", prompt=r["messages"], response=r["response"])), r["response"])
            for r in mine
        )  # fmt: skip
        out[who] = {"items": len(mine), "accuracy": round(right / len(mine), 4)}
    return out


# --- the report ---------------------------------------------------------------------------------------


def spread(values: list[float], fmt: Callable[[float], str]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} [{fmt(min(values))}, {fmt(max(values))}]"


def points(value: float) -> str:
    return f"{value * 100:+.1f} pts"


def labels_to_reach(curve: list[tuple[int, float]], goal: float) -> tuple[float, bool] | None:
    """Return the labels at which a (labels, gain) curve first reaches ``goal``, and whether that is an upper bound.

    Linear between measured points; when the first point already reaches it, that point's labels
    are an upper bound (nothing was measured below it). None when no point reaches it.
    """
    previous: tuple[int, float] | None = None
    for labels, gain in curve:
        if gain >= goal:
            if previous is None:
                return float(labels), True
            x0, y0 = previous
            return x0 + (goal - y0) * (labels - x0) / (gain - y0), False
        previous = (labels, gain)
    return None


def summarise_runs(results: list[dict[str, Any]], base_success: float, budget: int) -> tuple[list[str], list[str]]:
    """Return the table (markdown lines) and the verdict lines."""
    lines = ["| strategy | human labels | SFT rows | gain in adults' success, median [min, max] |",
             "|---|---|---|---|"]  # fmt: skip
    medians: dict[tuple[str, float], float] = {}
    for strategy, share in RUNS:
        mine = [r for r in results if r["strategy"] == strategy and r["share"] == share]
        gains = [r["success"] - base_success for r in mine if r["success"] is not None]  # none: no rows to train on
        labels = round(budget * share)
        if gains:
            medians[(strategy, share)] = statistics.median(gains)
        rows = spread([float(r["sft_rows"]) for r in mine], lambda v: f"{v:.0f}")
        lines.append(f"| {strategy} | {labels} ({share:.0%} of B) | {rows} | {spread(gains, points)} |")
    verdict = []
    goal = medians.get(("random", 1.0))
    curve = [(round(budget * share), medians[("active", share)])
             for share in sorted(s for k, s in RUNS if k == "active") if ("active", share) in medians]  # fmt: skip
    if goal is None:
        verdict.append("random at 100% of B did not finish; no verdict")
    else:
        found = labels_to_reach(curve, goal)
        if found is None:
            verdict.append(f"active selection did not reach random's 100%-budget gain ({points(goal)}) within B = "
                           f"{budget} labels: the target (<= {TARGET_SHARE:.0%} of the labels) is NOT met")  # fmt: skip
        else:
            needed, bound = found
            ratio = needed / budget
            met = "met" if ratio <= TARGET_SHARE else "NOT met"
            about = "at most " if bound else "~"
            verdict.append(f"active selection reaches random's 100%-budget gain ({points(goal)}) with {about}"
                           f"{needed:.0f} of {budget} labels = {ratio:.0%} "
                           f"(target <= {TARGET_SHARE:.0%}: {met})")  # fmt: skip
    verdict += _overlap(results, base_success)
    return lines, verdict


def _overlap(results: list[dict[str, Any]], base_success: float) -> list[str]:
    """Say whether active at 60% of B and random at 100% of B differ by more than the seeds' spread."""

    def gains(strategy: str, share: float) -> list[float]:
        return [r["success"] - base_success for r in results
                if r["strategy"] == strategy and r["share"] == share and r["success"] is not None]  # fmt: skip

    active, random_, alone = gains("active", 0.6), gains("random", 1.0), gains("judge alone", 0.0)
    if len(active) < 2 or len(random_) < 2:
        return []
    lines = []
    if min(active) <= max(random_) and min(random_) <= max(active):
        lines.append(f"the seeds' ranges of active at 60% of B ({points(min(active))} to {points(max(active))}) and "
                     f"random at 100% ({points(min(random_))} to {points(max(random_))}) overlap: the difference is "
                     "inside the run-to-run noise, not a clear win")  # fmt: skip
    if alone:
        lines.append(f"the judge alone (no human label) already gains {points(statistics.median(alone))}: "
                     f"the human labels add {points(statistics.median(random_) - statistics.median(alone))} (random, "
                     f"100% of B) and {points(statistics.median(active) - statistics.median(alone))} (active, 60%) "
                     "on top (medians)")  # fmt: skip
    return lines


def agreement_lines(results: list[dict[str, Any]]) -> list[str]:
    """Return alpha of the simulated annotators and the judge's calibration, from the random full-budget runs."""
    mine = [r for r in results if r["strategy"] == "random" and r["share"] == 1.0 and r.get("human_labels")]
    out = []
    careful_alpha, all_alpha, agree, ece = [], [], [], []
    for r in mine:
        labels = [tuple(x) for x in r["human_labels"]]
        careful = [x for x in labels if str(x[1]).startswith("careful")]
        for target, chosen in ((careful_alpha, careful), (all_alpha, labels)):
            value = krippendorff_alpha(chosen, "nominal", bootstrap=0).value
            if value is not None:
                target.append(value)
        calibration = r.get("calibration") or {}
        if calibration.get("agreement", {}).get("value") is not None:
            agreement = calibration["agreement"]
            agree.append((r["seed"], agreement["value"], agreement["low"], agreement["high"], calibration["n"]))
        if calibration.get("ece") is not None:
            ece.append(calibration["ece"])
    two = lambda v: f"{v:.2f}"  # noqa: E731
    out.append(
        f"- Krippendorff's alpha (nominal) of the simulated annotators on random items: careful only "
        f"{spread(careful_alpha, two)}; all five (careless and adversarial included) {spread(all_alpha, two)}"
    )
    for seed, value, low, high, n in agree:
        out.append(f"- judge vs human consensus (random items, seed {seed}): agreement {value:.2f} "
                   f"(95% CI {low:.2f}-{high:.2f}, n={n})")  # fmt: skip
    out.append(f"- judge's expected calibration error (random items): {spread(ece, lambda v: f'{v:.3f}')}")
    accuracy: dict[str, list[float]] = {}
    for r in results:
        for who, figures in (r.get("consensus_accuracy") or {}).items():
            accuracy.setdefault(who, []).append(figures["accuracy"])
    for who, values in sorted(accuracy.items()):
        out.append(f"- accuracy of items resolved by {who} vs the sim's truth (all runs): {spread(values, two)}")
    return out


def print_report(data: dict[str, Any], out: Path | None) -> None:
    """Print the table, the verdict and the agreement lines; write them to ``out`` as markdown too."""
    base, budget, results = data["base"], data["budget"], data["results"]
    table, verdict = summarise_runs(results, base, budget)
    lines = [
        "## Active vs random human labels (simulated product)",
        "",
        f"Base model: adults' sampled success {base:.1%}. B = {budget} human labels "
        f"({data['budget_items']} items x overlap {OVERLAP}); {data['seeds']} seeds; {data['requests']} requests "
        "per seed.",
        "",
        *table,
        "",
        *[f"**{line}**" for line in verdict],
        "",
        *agreement_lines(results),
        "",
        f"Runtime: {data['seconds']:.0f} s on this machine.",
    ]
    print("\n".join(lines))
    if out is not None:
        out.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="a quick check: one seed, small traffic and budgets")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 3; --fast 1)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as markdown here")
    parser.add_argument("--json", type=Path, default=None, help="also write every run's figures here")
    parser.add_argument("--cache", type=Path, default=None, help="base model cache (default: the sim's)")
    parser.add_argument("--from-json", type=Path, default=None, help="print the report of a saved --json run")
    args = parser.parse_args()
    if args.from_json is not None:
        print_report(json.loads(args.from_json.read_text()), args.out)
        return 0
    size = Size(args.fast)
    seeds = args.seeds or (1 if args.fast else 3)
    budget = size.budget_items * OVERLAP
    print_header("annotation: active vs random human labels on the simulated product", [
        ("runs", f"{seeds} seeds x {len(RUNS)} strategy/budget runs; B = {budget} human labels "
                 f"({size.budget_items} items x overlap {OVERLAP})"),
        ("traffic", f"{size.requests} requests per seed (adults and minors) through the gateway"),
        ("annotators", "3 careful (0.95/0.92/0.90), 1 careless (0.65, skips 10%), 1 adversarial (0.15); "
                       "Dawid-Skene consensus"),
        ("evaluation", f"adults' sampled success, {size.eval_prompts} prompts x {size.eval_samples} samples"),
    ])  # fmt: skip
    started = time.perf_counter()
    say("base model: cached, or built now")
    base_path = sim.cached_base_model(args.cache, recipe=size.recipe)
    base = sim.evaluate_model(base_path, prompts=size.eval_prompts, samples=size.eval_samples, seed=12345,
                              cohort="adult")  # fmt: skip
    say(f"base model: adults' sampled success {base.sampled:.1%} (greedy {base.greedy:.1%})")
    results: list[dict[str, Any]] = []
    traffic = []
    with tempfile.TemporaryDirectory(prefix="posttrain-annotation-") as scratch:
        for seed in range(seeds):
            start = Path(scratch) / f"start-{seed}"
            facts = make_base_project(start, base_path, size, seed)
            traffic.append(facts)
            say(f"seed {seed}: traffic {facts['requests']} requests in {facts['seconds']:.0f}s, adults "
                f"{facts['adult_requests']} at {facts['adult_success']:.1%} success")  # fmt: skip
            for n, (strategy, share) in enumerate(RUNS):
                clock = time.perf_counter()
                result = run_one(start, Path(scratch) / f"run-{seed}-{n}", strategy, share, seed, size)
                result["seconds"] = round(time.perf_counter() - clock, 1)
                results.append(result)
                gain = "n/a" if result["success"] is None else points(result["success"] - base.sampled)
                say(f"seed {seed}: {strategy} {share:.0%} of B: {result['items']} items, {result['labels']} labels, "
                    f"judge resolved {result['judge_resolved']} (trusted {result['trusted']}), "
                    f"{result['sft_rows']} SFT rows, gain {gain} "
                    f"({result['seconds']:.0f}s)")  # fmt: skip
    seconds = time.perf_counter() - started
    data = {"base": base.sampled, "budget": budget, "budget_items": size.budget_items, "seeds": seeds,
            "requests": size.requests, "traffic": traffic, "results": results,
            "seconds": round(seconds, 1)}  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(data, indent=1, default=str))
    print_report(data, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
