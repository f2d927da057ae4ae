"""Always-valid A/B testing: how many units a sequential test needs, and what peeking costs.

    /work/main/.venv/bin/python benchmarks/ab_sequential.py [--quick] [--experiments N] [--seed S]

Simulates Bernoulli A/B experiments through ``posttrain.stats`` (the library calls a service
would make at each look, not a vectorised shortcut):

- A/B, 0.30 → 0.35 (a 5-point lift): the fixed-horizon n per arm for 80% power (Fleiss formula,
  checked by simulating the one-look z-test at that n), beside the n per arm at which the mSPRT
  monitor (τ = 0.05) and a GAVI confidence sequence (GrowthBook's default N* = 5,000) stop,
  looking every 50 units per arm up to 5× the fixed n; then the same with a 10-point lift (the
  sequential test stops early when the effect is larger than planned, the fixed design does not);
- A/A at 0.30, 50 looks of 100 units per arm: the share of experiments that a naive "stop at the
  first p < 0.05" rule, the mSPRT monitor and the GAVI sequence ever call significant.

- per user, as the gateway randomises: 2,000 users with heavy-tailed request counts (lognormal,
  median 3) and their own base rates (Beta(2, 3)); A/A false positives and SRM alarms of the
  per-interaction analysis (the old one) beside the per-user one (delta-method ratio, SRM on
  users) that ``posttrain.experiments`` uses, and the per-user power of a 0.40 → 0.45 lift.

In the first three scenarios a unit is a user with one observation. It reports figures beside
their baseline and target; it never fails on a missed target.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from harness import Figure, print_header, print_table, verdict

from posttrain.stats import (
    MetricSummary,
    SequentialMonitor,
    confidence_sequence,
    fixed_horizon_n,
    gavi_rho,
    msprt,
    ratio_summary,
    srm_test,
    two_proportion_test,
    welch_test,
)

P0, LIFT, TAU, ALPHA, POWER = 0.30, 0.05, 0.05, 0.05, 0.80
AB_STEP = 50  # units per arm between looks in the A/B runs
AA_STEP, AA_LOOKS = 100, 50
GAVI_TUNING_N = 5000


def gavi_rejects(control: MetricSummary, treatment: MetricSummary, rho: float) -> bool:
    """Return whether GAVI's confidence sequence for treatment − control excludes 0."""
    n = control.n + treatment.n
    s2 = n * (control.variance / control.n + treatment.variance / treatment.n)
    if s2 == 0:
        return False
    return abs(treatment.mean - control.mean) > confidence_sequence(s2, n, ALPHA, rho)


def run_experiment(
    rng: np.random.Generator, p_treatment: float, step: int, looks: int
) -> tuple[int | None, int | None, bool]:
    """Run one experiment look by look; return (mSPRT stop n, GAVI stop n, naive ever significant)."""
    monitor, rho = SequentialMonitor(tau=TAU, alpha=ALPHA), gavi_rho(ALPHA, GAVI_TUNING_N)
    gavi_stop: int | None = None
    naive = False
    sc = st = 0
    for look in range(1, looks + 1):
        n = look * step
        sc, st = sc + int(rng.binomial(step, P0)), st + int(rng.binomial(step, p_treatment))
        control, treatment = MetricSummary.from_proportion(sc, n), MetricSummary.from_proportion(st, n)
        if not monitor.stopped:
            monitor.update(control, treatment)
        if gavi_stop is None and gavi_rejects(control, treatment, rho):
            gavi_stop = n
        if 0 < sc + st < 2 * n:
            naive = naive or two_proportion_test(control, treatment, ALPHA).significant
        if monitor.stopped and gavi_stop is not None:
            break
    mspr_stop = None if monitor.stopped_at is None else monitor.stopped_at * step
    return mspr_stop, gavi_stop, naive


def stopping_summary(stops: list[int | None], cap: int) -> dict[str, float | None]:
    """Summarise stopping n per arm: power by the cap, median/mean (undecided count at the cap), n at 80% power."""
    decided = sorted(s for s in stops if s is not None)
    censored = np.array([cap if s is None else s for s in stops], dtype=float)
    rank = math.ceil(POWER * len(stops))
    return {
        "power": len(decided) / len(stops),
        "median": float(np.median(censored)),
        "mean": float(censored.mean()),
        "n80": float(decided[rank - 1]) if rank <= len(decided) else None,
    }


def fixed_power(rng: np.random.Generator, n: int, experiments: int) -> float:
    """Simulate the one-look two-proportion z-test at n per arm; return the share significant."""
    hits = 0
    for sc, st in zip(rng.binomial(n, P0, experiments), rng.binomial(n, P0 + LIFT, experiments), strict=True):
        arms = MetricSummary.from_proportion(int(sc), n), MetricSummary.from_proportion(int(st), n)
        hits += two_proportion_test(*arms, ALPHA).significant
    return hits / experiments


def per_user_world(rng: np.random.Generator, users: int, lift: float) -> tuple[np.ndarray, ...]:
    """Return (arm, requests, successes, measured) per user: heavy-tailed requests, own base rates."""
    arm = rng.integers(0, 2, users)
    requests = np.minimum(np.ceil(rng.lognormal(1.0, 1.0, users)), 200).astype(int)
    measured = rng.binomial(requests, 0.6)
    rate = np.clip(rng.beta(2, 3, users) + lift * arm, 0, 1)
    return arm, requests, rng.binomial(measured, rate), measured


def per_user_experiment(rng: np.random.Generator, users: int, lift: float) -> dict[str, bool]:
    """Analyse one experiment per interaction (the old way) and per user; return what each flags."""
    arm, requests, x, y = per_user_world(rng, users, lift)
    arms = [arm == 0, arm == 1]
    pooled = [MetricSummary.from_proportion(int(x[a].sum()), int(y[a].sum())) for a in arms]
    per_user = [ratio_summary(x[a & (y > 0)], y[a & (y > 0)]) for a in arms]
    tau = 0.1 * math.sqrt(max(u.variance for u in per_user))
    return {
        "per-interaction test": two_proportion_test(*pooled, ALPHA).significant,
        "per-interaction SRM": srm_test([int(requests[a].sum()) for a in arms], [0.5, 0.5]).mismatch,
        "per-user test": welch_test(*per_user, ALPHA).significant,
        "per-user mSPRT": msprt(*per_user, tau, alpha=ALPHA).p_value <= ALPHA,
        "per-user SRM": srm_test([int(a.sum()) for a in arms], [0.5, 0.5]).mismatch,
    }


def per_user_figures(rng: np.random.Generator, experiments: int) -> list[Figure]:
    """A/A rates per interaction and per user, and per-user power at 2,000 and 4,000 users."""
    aa = [per_user_experiment(rng, 2000, 0.0) for _ in range(experiments)]
    rate = {k: 100 * float(np.mean([r[k] for r in aa])) for k in aa[0]}
    limit = 100 * (ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / experiments))
    figures = []
    for k, value in rate.items():
        target = (1.0 if "SRM" in k else limit) if k.startswith("per-user") else None
        figures.append(Figure(f"A/A {k} rate", value, "%", "nominal 0.1 %" if "SRM" in k else "nominal 5 %",
                              "" if target is None else f"<= {target:.1f} %",
                              "" if target is None else verdict(value, target, higher_is_better=False)))  # fmt: skip
    for users in (2000, 4000):
        ab = [per_user_experiment(rng, users, 0.05) for _ in range(max(100, experiments // 4))]
        for k in ("per-user test", "per-user mSPRT"):
            power = 100 * float(np.mean([r[k] for r in ab]))
            figures.append(Figure(f"0.40->0.45 power, {users:,} users, {k}", power, "%", "", "", ""))
    return figures


def ratio(value: float | None, baseline: int) -> str:
    """Describe ``value`` as a multiple of the fixed-horizon n."""
    return "" if value is None else f"{value / baseline:.2f}x fixed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run (< 30 s) for the smoke test")
    parser.add_argument("--experiments", type=int, help="simulated experiments per scenario (default 2,000; quick 300)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    experiments = args.experiments or (300 if args.quick else 2000)
    rng = np.random.default_rng(args.seed)
    n_fixed = fixed_horizon_n(P0, LIFT, ALPHA, POWER)
    ab_looks = math.ceil(5 * n_fixed / AB_STEP)
    print_header(
        "A/B sequential testing (posttrain.stats)",
        [
            ("experiments", f"{experiments:,} per scenario, seed {args.seed}"),
            ("A/B", f"{P0:.2f} -> {P0 + LIFT:.2f}, look every {AB_STEP}/arm, cap {ab_looks * AB_STEP:,}/arm"),
            ("A/A", f"{P0:.2f} both arms, {AA_LOOKS} looks x {AA_STEP}/arm"),
            ("methods", f"mSPRT tau={TAU}; GAVI N*={GAVI_TUNING_N:,}; alpha={ALPHA} two-sided"),
            ("per user", "2,000 users, lognormal requests per user, Beta(2, 3) user rates"),
        ],
    )
    started = time.perf_counter()
    power_fixed = fixed_power(rng, n_fixed, experiments)
    ab = [run_experiment(rng, P0 + LIFT, AB_STEP, ab_looks) for _ in range(experiments)]
    big_runs = [run_experiment(rng, P0 + 2 * LIFT, AB_STEP, ab_looks) for _ in range(experiments)]
    aa = [run_experiment(rng, P0, AA_STEP, AA_LOOKS) for _ in range(experiments)]
    users = per_user_figures(rng, experiments)
    elapsed = time.perf_counter() - started
    cap = ab_looks * AB_STEP
    mspr, gavi = stopping_summary([r[0] for r in ab], cap), stopping_summary([r[1] for r in ab], cap)
    big = [stopping_summary([r[i] for r in big_runs], cap) for i in (0, 1)]
    se = math.sqrt(ALPHA * (1 - ALPHA) / experiments)
    fpr = [sum(bool(r[i]) for r in aa) / experiments for i in range(3)]
    base = f"fixed {n_fixed:,}/arm"
    figures = [
        Figure("fixed horizon n/arm (80% power)", n_fixed, "units", "Fleiss formula"),
        Figure("fixed-horizon simulated power", 100 * power_fixed, "%", "", "80 %", ""),
    ]
    for name, s in (("mSPRT", mspr), ("GAVI", gavi)):
        figures += [
            Figure(f"{name} power by the cap", 100 * float(s["power"] or 0), "%", "", ">= 80 %"),
            Figure(f"{name} median n/arm at stop", s["median"], "units", base, "", ratio(s["median"], n_fixed)),
            Figure(f"{name} mean n/arm at stop", s["mean"], "units", base, "", ratio(s["mean"], n_fixed)),
            Figure(f"{name} n/arm for 80% power", s["n80"], "units", base, "", ratio(s["n80"], n_fixed)),
        ]
    for name, s in (("mSPRT", big[0]), ("GAVI", big[1])):
        figures.append(
            Figure(f"10-pt lift: {name} median n/arm", s["median"], "units", base, "", ratio(s["median"], n_fixed))
        )
    limit = 100 * (ALPHA + 2 * se)
    figures += [
        Figure(
            "A/A naive peeking FPR", 100 * fpr[2], "%", "nominal 5 %", "", "inflated" if fpr[2] > ALPHA + 2 * se else ""
        ),
        Figure(
            "A/A mSPRT FPR",
            100 * fpr[0],
            "%",
            "nominal 5 %",
            f"<= {limit:.1f} %",
            verdict(100 * fpr[0], limit, higher_is_better=False),
        ),
        Figure(
            "A/A GAVI FPR",
            100 * fpr[1],
            "%",
            "nominal 5 %",
            f"<= {limit:.1f} %",
            verdict(100 * fpr[1], limit, higher_is_better=False),
        ),
        *users,
        Figure("simulation wall time", elapsed, "s"),
    ]
    print_table(figures)


if __name__ == "__main__":
    main()
