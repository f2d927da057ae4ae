"""Analysing an experiment from the warehouse: per variant and cohort, frequentist, Bayesian, sequential."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np

from posttrain import stats
from posttrain.clock import utc_now
from posttrain.experiments.records import (
    _LOWER_IS_BETTER,
    METRICS,
    Analysis,
    Comparison,
    DifferencePoint,
    ExperimentConfig,
    Metric,
    MetricStats,
    PairStats,
    Pairwise,
    Timeline,
    TimePoint,
    VariantStats,
    default_direction,
)
from posttrain.experiments.store import _update, get_experiment
from posttrain.project import Project

# --- analysis -----------------------------------------------------------------------------

# One row per interaction with its metric values (NULL where it has no such feedback) and its
# unit: the user, who is what the gateway randomises (an interaction without a user is its own
# unit). A side-by-side interaction (``metadata.pair_id``) counts only for ``win_rate``: a choice
# given on either member of its pair decides both. Assignment-based metrics (and the SRM check)
# use the rest.
_UNITS = """
WITH served AS (
    SELECT id, variant, coalesce(cohort, '(none)') AS cohort, timestamp, latency_ms, cost,
        coalesce(user_id, 'interaction:' || id) AS unit, metadata ->> '$.pair_id' AS pair_id
    FROM interactions
    WHERE experiment = $name
),
fb AS (
    SELECT interaction_id,
        arg_max(score, timestamp) FILTER (WHERE kind = 'thumb') AS thumb,
        arg_max(score, timestamp) FILTER (WHERE kind = 'rating') AS rating,
        arg_max(value ->> '$', timestamp) FILTER (WHERE kind = 'choice') AS choice,
        bool_or(kind = 'edit') AS edited,
        bool_or(kind = 'regenerate') AS regenerated
    FROM feedback
    WHERE interaction_id IN (SELECT id FROM served)
    GROUP BY interaction_id
),
pair_choice AS (
    SELECT s.pair_id, arg_max(f.value ->> '$', f.timestamp) AS chosen
    FROM feedback f JOIN served s ON f.interaction_id = s.id
    WHERE f.kind = 'choice' AND s.pair_id IS NOT NULL
    GROUP BY s.pair_id
),
units AS (
    SELECT s.id, s.variant, s.cohort, s.unit, s.timestamp, s.pair_id, s.pair_id IS NOT NULL AS paired,
        CASE WHEN s.pair_id IS NOT NULL OR fb.thumb IS NULL THEN NULL
             WHEN fb.thumb > 0 THEN 1.0 ELSE 0.0 END AS thumbs_up_rate,
        CASE WHEN s.pair_id IS NULL THEN fb.rating END AS mean_rating,
        CASE WHEN s.pair_id IS NOT NULL THEN NULL WHEN coalesce(fb.edited, false) THEN 1.0 ELSE 0.0 END
            AS edit_rate,
        CASE WHEN s.pair_id IS NOT NULL THEN NULL WHEN coalesce(fb.regenerated, false) THEN 1.0 ELSE 0.0 END
            AS regenerate_rate,
        CASE WHEN coalesce(pc.chosen, fb.choice) IS NULL THEN NULL
             WHEN coalesce(pc.chosen, fb.choice) = s.id THEN 1.0 ELSE 0.0 END AS win_rate,
        s.latency_ms, s.cost
    FROM served s
    LEFT JOIN fb ON fb.interaction_id = s.id
    LEFT JOIN pair_choice pc ON pc.pair_id = s.pair_id
)
"""
# Per user (overall and per cohort) each metric's sum x and count y; then per variant the sums of
# x, y, x², y², xy over users, from which the delta method gives the ratio's variance.
_SQL = (
    _UNITS
    + """,
per_user AS (
    SELECT variant, cohort, GROUPING(cohort) AS overall, unit,
        count(*) FILTER (WHERE NOT paired) AS interactions, {per_user}
    FROM units
    GROUP BY GROUPING SETS ((variant, unit), (variant, cohort, unit))
)
SELECT variant, cohort, overall, count(*) FILTER (WHERE interactions > 0), sum(interactions), {aggregates}
FROM per_user
GROUP BY variant, cohort, overall
"""
)
_PER_USER = ", ".join(f"sum({m}) AS {m}_x, count({m}) AS {m}_y" for m in METRICS)
_AGGREGATES = ", ".join(
    f"count(*) FILTER (WHERE {m}_y > 0), sum({m}_x), sum({m}_y), sum({m}_x * {m}_x), sum({m}_y * {m}_y), "
    f"sum({m}_x * {m}_y)"
    for m in METRICS
)
_MOMENTS = 6  # columns per metric in _AGGREGATES


def metric_stats(n: int, sx: float, sy: float, sxx: float, syy: float, sxy: float) -> MetricStats:
    """Summarise one metric from per-user sums: the ratio mean, its delta-method variance and 95% CI."""
    if n == 0 or sy <= 0:
        return MetricStats(n=n, mean=None, variance=None, ci_low=None, ci_high=None)
    if n < 2:
        return MetricStats(n=n, mean=sx / sy, variance=None, ci_low=None, ci_high=None)
    summary = stats.MetricSummary.from_ratio_moments(n, sx, sy, sxx, syy, sxy)
    half = 1.96 * math.sqrt(summary.variance / n)
    return MetricStats(n=n, mean=summary.mean, variance=summary.variance, ci_low=summary.mean - half,
                       ci_high=summary.mean + half)  # fmt: skip


def _summaries(project: Project, name: str) -> list[VariantStats]:
    sql = _SQL.format(per_user=_PER_USER, aggregates=_AGGREGATES)
    rows = project.cursor().execute(sql, {"name": name}).fetchall()
    out = []
    for row in rows:
        variant, cohort, overall, users, interactions, *values = row
        metrics = {}
        for i, m in enumerate(METRICS):
            n, *sums = values[_MOMENTS * i : _MOMENTS * (i + 1)]
            metrics[m] = metric_stats(int(n), *(float(v or 0.0) for v in sums))
        where = None if overall else cohort
        out.append(VariantStats(variant=variant, cohort=where, interactions=int(interactions or 0), users=int(users),
                                metrics=metrics))  # fmt: skip
    return out


def _no_test(reason: str) -> Comparison:
    return Comparison(test=None, chance_to_win=None, always_valid_p=None, better=False, worse=False, reason=reason)


def _summary(metric: MetricStats) -> stats.MetricSummary:
    return stats.MetricSummary(n=metric.n, mean=metric.mean or 0.0, variance=metric.variance or 0.0)


def sequential(
    control: MetricStats, treatment: MetricStats, alpha: float, *, shift: float = 0.0
) -> stats.SequentialResult:
    """Return the mSPRT look for treatment − control + ``shift`` (shift tests a margin: H0 effect = −shift).

    The mixing sd τ is a tenth of the larger per-user standard deviation, the size of lift worth
    detecting; the p-value is valid at any look, so ``decide`` may be called as often as one likes.
    """
    c, t = _summary(control), _summary(treatment)
    tau = 0.1 * math.sqrt(max(c.variance, t.variance))
    return stats.msprt(c, t.model_copy(update={"mean": t.mean + shift}), tau, alpha=alpha)


def _compare(control: MetricStats, treatment: MetricStats, metric: Metric, alpha: float) -> Comparison:
    """Test treatment − control; ``better``/``worse`` are significant moves in the metric's good direction.

    The fixed-horizon test, the Bayesian posterior and the mSPRT share one standard error (per
    user, delta method). An arm whose users all measure alike (say 0 successes) has no variance of
    its own to trust: it borrows the other arm's per-user variance (the pooled view, as a test
    under "no difference" would), so it is never taken as certain; when both arms are alike there
    is nothing to test.
    """
    if control.mean is None or treatment.mean is None or control.n < 2 or treatment.n < 2:
        return _no_test("fewer than 2 measured users in an arm")
    if not control.variance and not treatment.variance:
        return _no_test("both arms have zero variance (every user alike); collect more data")
    shared = control.variance or treatment.variance
    control = control.model_copy(update={"variance": control.variance or shared})
    treatment = treatment.model_copy(update={"variance": treatment.variance or shared})
    c, t = _summary(control), _summary(treatment)
    test = stats.welch_test(c, t, alpha)
    win = stats.bayesian(c, t, relative=False).chance_to_win
    return _comparison(test, win, sequential(control, treatment, alpha), metric)


def _comparison(test: stats.TestResult, win: float, look: stats.SequentialResult, metric: Metric) -> Comparison:
    sign = -1 if metric in _LOWER_IS_BETTER else 1
    return Comparison(
        test=test,
        chance_to_win=win if sign > 0 else 1 - win,
        always_valid_p=look.p_value,
        always_valid_ci_low=look.ci_low,
        always_valid_ci_high=look.ci_high,
        better=test.significant and sign * test.effect > 0,
        worse=test.significant and sign * test.effect < 0,
    )


def _add_comparisons(
    rows: list[VariantStats], config: ExperimentConfig, paired: dict[tuple[str, str | None], Comparison]
) -> None:
    control_name = config.control.name
    controls = {r.cohort: r for r in rows if r.variant == control_name}
    for row in rows:
        control = controls.get(row.cohort)
        if row.variant == control_name or control is None:
            continue
        row.comparisons = {
            m: paired.get((row.variant, row.cohort), _no_test("no side-by-side pairs with the control"))
            if m == "win_rate"
            else _compare(control.metrics[m], row.metrics[m], m, config.alpha)
            for m in _judged_metrics(config)
        }


def _judged_metrics(config: ExperimentConfig) -> list[Metric]:
    return list(dict.fromkeys([config.metric, *(g.metric for g in config.guardrails)]))


def _srm(overall: list[VariantStats], config: ExperimentConfig) -> stats.SRMResult | None:
    """Check the split of distinct users (the randomised unit) against the planned shares."""
    counts = {r.variant: r.users for r in overall}
    observed = [counts.get(v.name, 0) for v in config.variants]
    if sum(observed) == 0:
        return None
    return stats.srm_test(observed, [v.share for v in config.variants])


def analyse(project: Project, name: str, *, keep: bool = True) -> Analysis:
    """Summarise every variant overall and per cohort per user, test treatments against the control.

    The unit of analysis is the user (whom the gateway randomises): per-user ratio metrics with
    delta-method variances, SRM on distinct users. With ``keep`` the analysis is stored as a
    snapshot on the experiment (the last 50 are kept).
    """
    experiment = get_experiment(project, name)
    config = experiment.config
    rows = _summaries(project, config.name)
    pairs = project.cursor().execute(_PAIRS_SQL, {"name": config.name}).fetchall()
    _add_comparisons(rows, config, _paired_comparisons(pairs, config))
    order = {v.name: i for i, v in enumerate(config.variants)}
    rows.sort(key=lambda r: (r.cohort or "", order.get(r.variant, len(order)), r.variant))
    overall = [r for r in rows if r.cohort is None]
    analysis = Analysis(
        experiment=config.name,
        at=utc_now(),
        metric=config.metric,
        direction=config.direction or default_direction(config.metric),
        variants=overall,
        cohorts=[r for r in rows if r.cohort is not None],
        srm=_srm(overall, config),
        pairwise=_pairwise(pairs, config),
    )
    if keep:
        _update(project, experiment, analyses=[*experiment.analyses, analysis])
    return analysis


# --- side by side ---------------------------------------------------------------------------

_PAIRS_SQL = (
    _UNITS
    + """
SELECT pair_id, any_value(cohort), min(unit), list(variant ORDER BY id), list(win_rate ORDER BY id)
FROM units
WHERE paired AND win_rate IS NOT NULL
GROUP BY pair_id
HAVING count(*) = 2
"""
)

_Battle = tuple[str, str, stats.Outcome, str | None, str]  # a, b, outcome, cohort, unit


def _battles(rows: list[tuple[Any, ...]], config: ExperimentConfig) -> list[_Battle]:
    """Orient each decided pair so the earlier variant (in config order) is ``a``."""
    order = {v.name: i for i, v in enumerate(config.variants)}
    battles: list[_Battle] = []
    for _pair, cohort, unit, variants, wins in rows:
        (a, b), (wa, wb) = variants, wins
        if a == b:
            continue
        if order.get(a, len(order)) > order.get(b, len(order)):
            a, b, wa, wb = b, a, wb, wa
        battles.append((a, b, "a" if wa > wb else "b" if wb > wa else "tie", cohort, unit))
    return battles


def _pairwise(rows: list[tuple[Any, ...]], config: ExperimentConfig) -> Pairwise | None:
    """Win rates between variants from side-by-side choices; Bradley–Terry when more than two met."""
    battles = _battles(rows, config)
    if not battles:
        return None
    tallies: dict[tuple[str, str, str | None], list[int]] = {}
    for a, b, outcome, cohort, _unit in battles:
        for where in (None, cohort):
            tally = tallies.setdefault((a, b, where), [0, 0, 0])
            tally[{"a": 0, "b": 1, "tie": 2}[outcome]] += 1
    pairs = [
        PairStats(a=a, b=b, cohort=cohort, win_rate=stats.win_rate(*tally))
        for (a, b, cohort), tally in sorted(tallies.items(), key=lambda kv: (kv[0][2] or "", kv[0][0], kv[0][1]))
    ]
    met = {name for a, b, *_ in battles for name in (a, b)}
    ratings = stats.bradley_terry([(a, b, o) for a, b, o, *_ in battles], bootstrap=100) if len(met) > 2 else {}
    return Pairwise(pairs=pairs, ratings=ratings)


def _paired_comparisons(
    rows: list[tuple[Any, ...]], config: ExperimentConfig
) -> dict[tuple[str, str | None], Comparison]:
    """Test each treatment's side-by-side win rate against the control as paired choices.

    Both arms share every pair, so each pair is one observation d = +½ (treatment chosen), −½
    (control chosen) or 0 (tie), and the effect is the win rate − ½. Pairs from one user are
    correlated: d is averaged per user (a ratio metric, delta method), then tested against 0.
    """
    control = config.control.name
    per_user: dict[tuple[str, str | None], dict[str, list[float]]] = {}
    for a, b, outcome, cohort, unit in _battles(rows, config):
        if a != control:
            continue
        d = {"a": -0.5, "b": 0.5, "tie": 0.0}[outcome]
        for where in (None, cohort):
            sums = per_user.setdefault((b, where), {}).setdefault(unit, [0.0, 0.0])
            sums[0], sums[1] = sums[0] + d, sums[1] + 1
    return {key: _paired_comparison(list(users.values()), config.alpha) for key, users in per_user.items()}


def _paired_comparison(users: list[list[float]], alpha: float) -> Comparison:
    if len(users) < 2:
        return _no_test("fewer than 2 users with side-by-side choices")
    x, y = np.array(users).T
    diff = stats.ratio_summary(x, y)
    if diff.variance == 0:
        return _no_test("every user chose alike (zero variance); collect more pairs")
    zero = MetricStats(n=diff.n, mean=0.0, variance=0.0, ci_low=None, ci_high=None)
    treatment = MetricStats(n=diff.n, mean=diff.mean, variance=diff.variance, ci_low=None, ci_high=None)
    test = stats.paired_test(diff, alpha)
    win = stats.bayesian(_summary(zero), diff, relative=False).chance_to_win
    return _comparison(test, win, sequential(zero, treatment, alpha), "win_rate")


# --- over time ------------------------------------------------------------------------------

_TIMELINE_SQL = (
    _UNITS
    + """,
x AS (SELECT variant, unit, epoch(timestamp) AS t, {metric} AS v FROM units WHERE {metric} IS NOT NULL),
span AS (SELECT min(t) AS lo, max(t) AS hi FROM x)
SELECT variant, unit, least(floor((t - lo) / greatest(hi - lo, 1e-9) * $buckets), $buckets - 1)::INTEGER AS b,
    sum(v), count(*), any_value(lo), any_value(hi)
FROM x, span
GROUP BY ALL
"""
)


def _cumulative(rows: list[tuple[Any, ...]], buckets: int) -> dict[str, list[MetricStats]]:
    """Return each variant's per-user metric up to the end of every bucket."""
    out: dict[str, list[MetricStats]] = {}
    for variant in sorted({r[0] for r in rows}):
        mine = [r for r in rows if r[0] == variant]
        index = {unit: i for i, unit in enumerate(sorted({r[1] for r in mine}))}
        x, y = np.zeros((len(index), buckets)), np.zeros((len(index), buckets))
        users, bs = [index[r[1]] for r in mine], [r[2] for r in mine]
        np.add.at(x, (users, bs), [float(r[3]) for r in mine])
        np.add.at(y, (users, bs), [float(r[4]) for r in mine])
        x, y = x.cumsum(axis=1), y.cumsum(axis=1)
        series = []
        for b in range(buckets):
            seen = y[:, b] > 0
            xb, yb = x[seen, b], y[seen, b]
            series.append(metric_stats(int(seen.sum()), xb.sum(), yb.sum(), xb @ xb, yb @ yb, xb @ yb))
        out[variant] = series
    return out


def timeline(project: Project, name: str, *, buckets: int = 20) -> Timeline:
    """Return the primary metric over time, per user: each variant's cumulative mean with its 95%
    interval, and each treatment's difference from the control with the always-valid confidence sequence."""
    config = get_experiment(project, name).config
    metric = config.metric
    rows = project.cursor().execute(_TIMELINE_SQL.format(metric=metric), {"name": name, "buckets": buckets}).fetchall()
    lo, hi = (float(rows[0][5]), float(rows[0][6])) if rows else (0.0, 0.0)
    width = (hi - lo) / buckets if rows else 0.0
    ends = [datetime.fromtimestamp(lo + width * (b + 1), UTC).replace(tzinfo=None) for b in range(buckets)]
    cumulative = _cumulative(rows, buckets)
    variants = {
        variant: [TimePoint(at=at, n=m.n, mean=m.mean, ci_low=m.ci_low, ci_high=m.ci_high)
                  for at, m in zip(ends, series, strict=True) if m.n > 0]
        for variant, series in cumulative.items()
    }  # fmt: skip
    control = cumulative.get(config.control.name)
    differences: dict[str, list[DifferencePoint]] = {}
    for variant, series in cumulative.items():
        if variant == config.control.name or control is None:
            continue
        differences[variant] = [
            _difference(at, c, t, config.alpha)
            for at, t, c in zip(ends, series, control, strict=True)
            if t.variance is not None and c.variance is not None
        ]
    return Timeline(experiment=config.name, metric=metric, variants=variants, differences=differences)


def _difference(at: datetime, control: MetricStats, treatment: MetricStats, alpha: float) -> DifferencePoint:
    """Treatment − control with GAVI's confidence sequence over the users so far."""
    users = control.n + treatment.n
    variance = users * ((control.variance or 0.0) / control.n + (treatment.variance or 0.0) / treatment.n)
    half = stats.confidence_sequence(variance, users, alpha=alpha)
    effect = (treatment.mean or 0.0) - (control.mean or 0.0)
    return DifferencePoint(at=at, n=users, effect=effect, cs_low=effect - half, cs_high=effect + half)
