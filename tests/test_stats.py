"""A/B statistics against closed forms, published values and simulation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from posttrain.errors import InvalidInput
from posttrain.stats import (
    MetricSummary,
    Outcome,
    SequentialMonitor,
    bayesian,
    bradley_terry,
    confidence_sequence,
    fixed_horizon_n,
    gavi_rho,
    holm,
    msprt,
    non_inferior,
    paired_test,
    ratio_summary,
    srm_test,
    two_proportion_test,
    welch_test,
    win_rate,
)

CONTROL = MetricSummary.from_proportion(300, 1000)
TREATMENT = MetricSummary.from_proportion(350, 1000)


def test_metric_summary_from_values_uses_sample_variance() -> None:
    summary = MetricSummary.from_values([1.0, 2.0, 3.0, 4.0])
    assert (summary.n, summary.mean, summary.variance) == (4, 2.5, pytest.approx(5 / 3))


def test_metric_summary_from_proportion_uses_bernoulli_variance() -> None:
    summary = MetricSummary.from_proportion(30, 100)
    assert (summary.n, summary.mean, summary.variance) == (100, 0.3, pytest.approx(0.21))


def test_welch_test_matches_hand_computation() -> None:
    # Hand-computed: SE² = 4/10 + 9/20 = 0.85; df = 0.85² / (0.4²/9 + 0.45²/19) = 25.408; t = 1.08465.
    # p and the t quantile come from integrating the t density numerically (numpy trapezoid, 4M points).
    control = MetricSummary(n=10, mean=10.0, variance=4.0)
    treatment = MetricSummary(n=20, mean=11.0, variance=9.0)
    result = welch_test(control, treatment)
    se = math.sqrt(0.85)
    df = 0.85**2 / (0.4**2 / 9 + 0.45**2 / 19)
    assert result.se == pytest.approx(se)
    assert result.df == pytest.approx(df)
    assert result.statistic == pytest.approx(1 / se)
    assert result.p_value == pytest.approx(0.2882607, abs=1e-6)
    assert result.ci_high - result.effect == pytest.approx(2.0578620 * se, rel=1e-6)
    assert result.relative_lift == pytest.approx(0.1)
    # Delta method: Var = 9/(20·100) + 4·121/(10·10⁴)
    assert result.relative_se == pytest.approx(math.sqrt(9 / 2000 + 484 / 100000))


@pytest.mark.parametrize(
    ("t", "df", "two_sided_p"), [(2.228138852, 10, 0.05), (12.70620474, 1, 0.05), (2.0, 5, 0.1019395)]
)
def test_welch_test_t_tail_matches_tables(t: float, df: float, two_sided_p: float) -> None:
    from posttrain.stats import _t_ppf, _t_sf

    assert 2 * _t_sf(t, df) == pytest.approx(two_sided_p, rel=1e-5)
    assert _t_ppf(1 - two_sided_p / 2, df) == pytest.approx(t, rel=1e-6)


def test_two_proportion_test_matches_textbook_z() -> None:
    result = two_proportion_test(CONTROL, TREATMENT)
    pooled = 0.325
    z = 0.05 / math.sqrt(pooled * (1 - pooled) * (2 / 1000))
    se = math.sqrt(0.21 / 1000 + 0.2275 / 1000)
    assert result.statistic == pytest.approx(z)
    assert result.p_value == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert (result.ci_low, result.ci_high) == (pytest.approx(0.05 - 1.959964 * se), pytest.approx(0.05 + 1.959964 * se))
    assert result.significant and result.df is None


def test_two_proportion_test_refuses_degenerate_arms() -> None:
    zero = MetricSummary.from_proportion(0, 100)
    with pytest.raises(InvalidInput, match="collect more data"):
        two_proportion_test(zero, zero)


def test_win_rate_matches_newcombe_wilson_values() -> None:
    # Newcombe (1998), Table I: 81/263 → 0.2553 to 0.3662.
    result = win_rate(81, 182)
    assert (result.ci_low, result.ci_high) == (pytest.approx(0.2553, abs=1e-4), pytest.approx(0.3662, abs=1e-4))


@pytest.mark.parametrize(
    ("wins", "losses", "ties", "rate", "low", "high"), [(0, 10, 0, 0.0, 0.0, 0.2775), (3, 3, 4, 0.5, 0.2366, 0.7634)]
)
def test_win_rate_counts_ties_as_half(wins: int, losses: int, ties: int, rate: float, low: float, high: float) -> None:
    result = win_rate(wins, losses, ties)
    assert result.rate == rate
    assert (result.ci_low, result.ci_high) == (pytest.approx(low, abs=1e-4), pytest.approx(high, abs=1e-4))


@pytest.mark.parametrize(("n", "mismatch"), [(100_000, True), (1_000, False)])
def test_srm_test_flags_48_52_only_at_scale(n: int, mismatch: bool) -> None:
    result = srm_test([int(0.48 * n), int(0.52 * n)], [0.5, 0.5])
    assert result.mismatch is mismatch
    assert result.chi2 == pytest.approx(0.0016 * n)


def test_srm_test_chi_square_tail_matches_tables() -> None:
    # 11.0705 is the 0.95 quantile of chi-square with 5 df; 3:1:1:1:1:1 planned shares.
    counts = [300 + 1, 100, 100, 100, 100, 100]
    assert srm_test(counts, [3, 1, 1, 1, 1, 1]).p_value > 0.99
    from posttrain.stats import _chi2_sf

    assert _chi2_sf(11.0705, 5) == pytest.approx(0.05, abs=1e-6)


def test_bayesian_chance_to_win_is_half_for_identical_arms() -> None:
    result = bayesian(CONTROL, CONTROL)
    assert result.chance_to_win == pytest.approx(0.5)
    assert result.risk_control == pytest.approx(result.risk_treatment)


def test_bayesian_chance_to_win_tends_to_one_for_a_big_effect() -> None:
    big = bayesian(MetricSummary.from_proportion(3000, 10000), MetricSummary.from_proportion(4000, 10000))
    assert big.chance_to_win > 0.9999 and big.risk_treatment < 1e-9 < big.risk_control


def test_bayesian_risk_matches_truncated_normal_expectation() -> None:
    result = bayesian(CONTROL, TREATMENT, relative=False)
    draws = np.random.default_rng(0).normal(result.posterior_mean, result.posterior_sd, 400_000)
    assert result.risk_treatment == pytest.approx(np.maximum(0, -draws).mean(), rel=0.05)
    assert result.risk_control == pytest.approx(np.maximum(0, draws).mean(), rel=0.01)


def test_bayesian_proper_prior_shrinks_towards_zero() -> None:
    flat, proper = bayesian(CONTROL, TREATMENT), bayesian(CONTROL, TREATMENT, prior_sd=0.3)
    assert 0 < proper.posterior_mean < flat.posterior_mean
    assert proper.posterior_sd < flat.posterior_sd


def test_msprt_matches_the_mixture_likelihood_ratio() -> None:
    tau = 0.05
    result = msprt(CONTROL, TREATMENT, tau)
    v = 0.21 / 1000 + 0.2275 / 1000
    lr = math.sqrt(v / (v + tau**2)) * math.exp(tau**2 * 0.05**2 / (2 * v * (v + tau**2)))
    assert result.p_value == pytest.approx(1 / lr)
    assert result.ci_low < 0 < result.ci_high  # not yet conclusive at n = 1,000 per arm


def test_sequential_monitor_keeps_the_running_minimum() -> None:
    monitor = SequentialMonitor(tau=0.05)
    strong = monitor.update(MetricSummary.from_proportion(300, 2000), MetricSummary.from_proportion(420, 2000))
    weak = monitor.update(MetricSummary.from_proportion(600, 2100), MetricSummary.from_proportion(630, 2100))
    assert strong.reject and monitor.stopped_at == 1
    assert weak.p_value == strong.p_value and weak.reject and weak.look == 2


def test_confidence_sequence_is_wider_than_a_fixed_ci_and_narrowest_near_tuning_n() -> None:
    s2 = 0.25 * 2
    widths = {n: confidence_sequence(s2, n) * math.sqrt(n) for n in (500, 5000, 50_000)}
    assert widths[5000] < widths[500] and widths[5000] < widths[50_000]
    assert all(w > 1.96 * math.sqrt(s2) for w in widths.values())
    assert gavi_rho(0.05, 5000) == pytest.approx(
        math.sqrt((-2 * math.log(0.05) + math.log(-2 * math.log(0.05) + 1)) / 5000)
    )


def test_non_inferior_uses_the_lower_bound() -> None:
    result = two_proportion_test(CONTROL, MetricSummary.from_proportion(295, 1000))
    assert non_inferior(result, margin=0.05) and not non_inferior(result, margin=0.01)


def test_fixed_horizon_n_matches_the_standard_calculator() -> None:
    assert fixed_horizon_n(0.30, 0.05) == 1377  # Fleiss formula, 80% power, α = 0.05 two-sided
    assert fixed_horizon_n(0.10, 0.02, power=0.9) > fixed_horizon_n(0.10, 0.02)


def test_bradley_terry_recovers_the_order_of_known_strengths() -> None:
    rng = np.random.default_rng(1)
    strengths = {"big": 1200.0, "mid": 1000.0, "small": 800.0}
    names = list(strengths)
    battles: list[tuple[str, str, Outcome]] = []
    for _ in range(1500):
        a, b = rng.choice(names, size=2, replace=False)
        p_a = 1 / (1 + 10 ** ((strengths[b] - strengths[a]) / 400))
        u = rng.random()
        battles.append((str(a), str(b), "tie" if abs(u - p_a) < 0.05 else ("a" if u < p_a else "b")))
    ratings = bradley_terry(battles, bootstrap=50)
    assert list(ratings) == ["big", "mid", "small"]
    assert np.mean([r.rating for r in ratings.values()]) == pytest.approx(1000)
    for name, rating in ratings.items():
        assert rating.ci_low <= rating.rating <= rating.ci_high
        assert rating.rating == pytest.approx(strengths[name], abs=60)


def test_bradley_terry_two_players_match_the_closed_form() -> None:
    # With two players the MLE gives P(a beats b) = 30/40, so R_a − R_b = 400·log10(3).
    win: tuple[str, str, Outcome] = ("a", "b", "a")
    loss: tuple[str, str, Outcome] = ("a", "b", "b")
    ratings = bradley_terry([win] * 30 + [loss] * 10, bootstrap=0)
    assert ratings["a"].rating - ratings["b"].rating == pytest.approx(400 * math.log10(3), abs=0.1)
    assert ratings["a"].rating + ratings["b"].rating == pytest.approx(2000)


def test_bradley_terry_keeps_an_unbeaten_player_finite() -> None:
    win: tuple[str, str, Outcome] = ("a", "b", "a")
    tie: tuple[str, str, Outcome] = ("b", "c", "tie")
    ratings = bradley_terry([win] * 5 + [tie] * 3, bootstrap=10)
    assert list(ratings)[0] == "a" and all(math.isfinite(r.ci_high) for r in ratings.values())


def test_bradley_terry_names_a_bad_outcome() -> None:
    battles: list[Any] = [("a", "b", "win")]
    with pytest.raises(InvalidInput, match="'win' is not one of"):
        bradley_terry(battles)


def _peeking_false_positives(experiments: int, looks: int, seed: int) -> tuple[float, float]:
    """Share of A/A experiments (Bernoulli 0.3, 100 units/arm per look) each rule ever rejects."""
    rng = np.random.default_rng(seed)
    step = 100
    control = rng.binomial(step, 0.3, size=(experiments, looks)).cumsum(axis=1)
    treatment = rng.binomial(step, 0.3, size=(experiments, looks)).cumsum(axis=1)
    naive = sequential = 0
    for row_c, row_t in zip(control, treatment, strict=True):
        monitor, peeked = SequentialMonitor(tau=0.05), False
        for look, (sc, st) in enumerate(zip(row_c, row_t, strict=True), start=1):
            arms = (
                MetricSummary.from_proportion(int(sc), look * step),
                MetricSummary.from_proportion(int(st), look * step),
            )
            peeked = peeked or two_proportion_test(*arms).significant
            monitor.update(*arms)
        naive += peeked
        sequential += monitor.stopped
    return naive / experiments, sequential / experiments


def test_sequential_monitor_controls_false_positives_under_peeking() -> None:
    # 500 A/A experiments × 50 looks: naive peeking at p < 0.05 rejects far above 5%; mSPRT does not.
    naive, sequential = _peeking_false_positives(500, 50, seed=7)
    assert naive > 0.15
    assert sequential <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 500)


@pytest.mark.slow
def test_sequential_monitor_controls_false_positives_over_long_horizons() -> None:
    naive, sequential = _peeking_false_positives(2000, 200, seed=13)
    assert naive > 0.25
    assert sequential <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 2000)


def test_sequential_monitor_detects_a_real_lift() -> None:
    rng = np.random.default_rng(11)
    detected = 0
    for _ in range(40):
        monitor = SequentialMonitor(tau=0.05)
        sc = st = n = 0
        while not monitor.stopped and n < 6000:
            n += 200
            sc, st = sc + rng.binomial(200, 0.30), st + rng.binomial(200, 0.35)
            monitor.update(MetricSummary.from_proportion(sc, n), MetricSummary.from_proportion(st, n))
        detected += monitor.stopped
        if monitor.stopped:
            assert monitor.ci[0] > 0
    assert detected >= 36


# --- per-user ratio metrics, paired tests, multiple testing ---------------------------------


def test_ratio_summary_matches_the_cluster_robust_variance() -> None:
    # Var(Σx/Σy) by the delta method = Σ(x − R·y)²/(Σy)² · n/(n − 1), the cluster-robust (CR1-style)
    # variance of an events-weighted mean with users as clusters
    rng = np.random.default_rng(0)
    y = rng.integers(1, 30, 500).astype(float)
    x = rng.binomial(y.astype(int), rng.beta(2, 3, 500)).astype(float)
    summary = ratio_summary(x, y)
    r = x.sum() / y.sum()
    robust = np.sum((x - r * y) ** 2) / y.sum() ** 2 * 500 / 499
    assert summary.mean == pytest.approx(r) and summary.variance / summary.n == pytest.approx(robust, rel=1e-10)


def test_ratio_summary_with_one_event_per_user_is_the_sample_variance() -> None:
    values = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    summary = ratio_summary(values, [1.0] * len(values))
    assert summary.variance == pytest.approx(np.var(values, ddof=1))


def test_paired_test_is_the_one_sample_t_test() -> None:
    d = np.array([0.5, -0.5, 0.5, 0.5, 0.0, 0.5, -0.5, 0.5])
    result = paired_test(MetricSummary.from_values(d.tolist()))
    se = d.std(ddof=1) / math.sqrt(d.size)
    assert result.method == "paired" and result.df == pytest.approx(d.size - 1)
    assert result.statistic == pytest.approx(d.mean() / se) and result.se == pytest.approx(se)


@pytest.mark.parametrize(
    ("p_values", "rejected"),
    [
        ([0.01, 0.04, 0.03], [True, False, False]),  # 0.01 ≤ 0.05/3; then 0.03 > 0.05/2 stops
        ([0.01, 0.02, 0.04], [True, True, True]),  # 0.01 ≤ 0.0167, 0.02 ≤ 0.025, 0.04 ≤ 0.05
        ([0.2, 0.01], [False, True]),
        ([], []),
    ],
)
def test_holm_steps_down(p_values: list[float], rejected: list[bool]) -> None:
    assert holm(p_values, 0.05) == rejected
