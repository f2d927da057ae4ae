"""A/A and A/B simulations through the real analysis and decision code, per user.

Users are randomised (as the gateway's sticky hash does) and send a heavy-tailed number of
requests with their own base rates, so their interactions are correlated. The per-variant sums
the warehouse query produces are computed here with numpy (``test_experiments`` checks that the
query gives the same sums), then go through ``metric_stats``, the comparisons and ``_judge``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from posttrain import experiments as ex
from posttrain.experiments.analysis import _compare, _srm, metric_stats
from posttrain.experiments.decisions import _judge
from posttrain.experiments.records import METRICS, Analysis, VariantStats

ALPHA = 0.05
USERS = 2000


def _world(rng: np.random.Generator, reps: int, arms: int, lift: float, users: int) -> tuple[np.ndarray, ...]:
    """Return (arm, successes, measured) per user, shape (reps, users): heavy-tailed request counts."""
    arm = rng.integers(0, arms, size=(reps, users))
    requests = np.minimum(np.ceil(rng.lognormal(1.0, 1.0, size=(reps, users))), 200)  # median 3, top 1% > 28
    measured = rng.binomial(requests.astype(int), 0.6)  # thumbs on 60% of requests
    base = rng.beta(2, 3, size=(reps, users))  # each user's own rate, mean 0.4
    rate = np.clip(base + lift * (arm > 0), 0, 1)
    return arm, rng.binomial(measured, rate), measured


def _row(variant: str, x: np.ndarray, y: np.ndarray) -> VariantStats:
    seen = y > 0
    xs, ys = x[seen].astype(float), y[seen].astype(float)
    stats = metric_stats(int(seen.sum()), xs.sum(), ys.sum(), xs @ xs, ys @ ys, xs @ ys)
    empty = metric_stats(0, 0, 0, 0, 0, 0)
    metrics = {m: stats if m == "thumbs_up_rate" else empty for m in METRICS}
    return VariantStats(variant=variant, cohort=None, interactions=int(y.sum()), users=int(x.size), metrics=metrics)


def _analyse(config: ex.ExperimentConfig, arm: np.ndarray, x: np.ndarray, y: np.ndarray) -> Analysis:
    """Mirror ``analyse`` on one simulated experiment: per-user rows, comparisons, SRM on users."""
    rows = [_row(v.name, x[arm == i], y[arm == i]) for i, v in enumerate(config.variants)]
    metric = "thumbs_up_rate"
    for row in rows[1:]:
        row.comparisons = {metric: _compare(rows[0].metrics[metric], row.metrics[metric], metric, ALPHA)}
    return Analysis(experiment=config.name, at=datetime.now(UTC).replace(tzinfo=None), metric=config.metric,
                    direction="higher", variants=rows, cohorts=[], srm=_srm(rows, config))  # fmt: skip


def _config(arms: int, guardrails: list[ex.Guardrail] | None = None) -> ex.ExperimentConfig:
    variants = [ex.Variant(name=f"v{i}", model=f"m{i}", share=1 / arms) for i in range(arms)]
    return ex.ExperimentConfig(name="sim", variants=variants, min_samples=100, guardrails=guardrails or [])


def _rates(
    reps: int,
    arms: int = 2,
    lift: float = 0.0,
    seed: int = 0,
    users: int = USERS,
    guardrails: list[ex.Guardrail] | None = None,
) -> dict[str, float]:
    """Run ``reps`` experiments; return the share flagged by each rule."""
    config = _config(arms, guardrails)
    arm, x, y = _world(np.random.default_rng(seed), reps, arms, lift, users)
    keys = ("fixed", "sequential", "bayesian", "promote", "rollback", "srm", "agree")
    flags: dict[str, list[bool]] = {k: [] for k in keys}
    for r in range(reps):
        analysis = _analyse(config, arm[r], x[r], y[r])
        c = analysis.variants[1].comparisons["thumbs_up_rate"]
        assert c.test is not None and c.always_valid_p is not None and c.chance_to_win is not None
        flags["fixed"].append(c.test.significant)
        flags["sequential"].append(c.always_valid_p <= ALPHA)
        flags["bayesian"].append(not ALPHA / 2 < c.chance_to_win < 1 - ALPHA / 2)
        action = _judge(analysis, config)[0]
        flags["promote"].append(action == "promote")
        flags["rollback"].append(action == "rollback")
        flags["srm"].append(analysis.srm is not None and analysis.srm.mismatch)
        flags["agree"].append(c.test.significant == (c.test.ci_low > 0 or c.test.ci_high < 0))
    return {k: float(np.mean(v)) for k, v in flags.items()}


def test_aa_false_positives_and_srm_per_user_stay_at_alpha() -> None:
    # 2,000 repetitions (the issue asks for >= 400) so that 6% sits two standard errors above 5%
    rates = _rates(reps=2000, seed=1)
    assert rates["fixed"] <= 0.06 and rates["bayesian"] <= 0.06 and rates["sequential"] <= 0.06
    assert rates["promote"] <= 0.06 and rates["srm"] <= 0.01
    assert rates["agree"] == 1.0  # the p-value and the interval use one standard error


def test_aa_with_three_treatments_holds_the_family_wise_rate() -> None:
    rates = _rates(reps=400, arms=4, seed=2)
    assert rates["promote"] <= 0.06 and rates["srm"] <= 0.01


def test_guardrail_at_a_loss_equal_to_its_margin_is_rarely_rolled_back() -> None:
    # the true loss is exactly the tolerated margin: a rollback there is a false one
    guard = [ex.Guardrail(metric="thumbs_up_rate", margin=0.02)]
    assert _rates(reps=400, lift=-0.02, seed=6, guardrails=guard)["rollback"] <= 0.05
    # a loss of six margins (0.40 → 0.28) is caught; at four (→ 0.32) about half the time at 2,000 users
    assert _rates(reps=50, lift=-0.12, seed=7, guardrails=guard)["rollback"] >= 0.9


def _ever_promoted(reps: int, looks: int, seed: int) -> float:
    """Call the decision rule after every 2,000/looks users; return the share ever promoted."""
    config = _config(2)
    arm, x, y = _world(np.random.default_rng(seed), reps, 2, 0.0, USERS)
    ends = np.linspace(USERS / looks, USERS, looks).astype(int)
    ever = [any(_judge(_analyse(config, arm[r, :e], x[r, :e], y[r, :e]), config)[0] == "promote" for e in ends)
            for r in range(reps)]  # fmt: skip
    return float(np.mean(ever))


def test_aa_decide_at_every_look_stays_at_alpha() -> None:
    # the fixed-horizon rule called at 20 looks promotes far more often than alpha
    assert _ever_promoted(reps=400, looks=20, seed=5) <= 0.06


def test_ab_with_a_real_lift_is_promoted_with_the_stated_power() -> None:
    # the guide: 0.40 → 0.45 per user at 4,000 users (2,000 per arm) is promoted about 80% of the time
    rates = _rates(reps=100, lift=0.05, seed=3, users=4000)
    assert rates["fixed"] >= 0.9 and rates["promote"] >= 0.7
