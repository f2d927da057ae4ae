"""Analysing an experiment from the warehouse: per variant and cohort, frequentist, Bayesian, sequential."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from posttrain import stats
from posttrain.clock import utc_now
from posttrain.errors import InvalidInput
from posttrain.experiments.records import (
    _LOWER_IS_BETTER,
    _PROPORTIONS,
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

# One row per interaction with its metric values (NULL where it has no such feedback). A
# side-by-side interaction (``metadata.pair_id``) counts only for ``win_rate``: a choice given on
# either member of its pair decides both. Assignment-based metrics (and the SRM check) use the rest.
_UNITS = """
WITH served AS (
    SELECT id, variant, coalesce(cohort, '(none)') AS cohort, timestamp, latency_ms, cost,
        metadata ->> '$.pair_id' AS pair_id
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
    SELECT s.id, s.variant, s.cohort, s.timestamp, s.pair_id, s.pair_id IS NOT NULL AS paired,
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
_SQL = (
    _UNITS
    + """
SELECT variant, cohort, GROUPING(cohort) AS overall, count(*) FILTER (WHERE NOT paired) AS interactions, {aggregates}
FROM units
GROUP BY GROUPING SETS ((variant), (variant, cohort))
"""
)
_AGGREGATES = ", ".join(f"count({m}), avg({m}), var_samp({m})" for m in METRICS)


def _metric_stats(n: int, mean: float | None, variance: float | None, proportion: bool) -> MetricStats:
    if n == 0 or mean is None:
        return MetricStats(n=n, mean=None, variance=None, ci_low=None, ci_high=None)
    var = mean * (1 - mean) if proportion else (variance or 0.0)
    half = 1.96 * math.sqrt(var / n)
    return MetricStats(n=n, mean=mean, variance=var, ci_low=mean - half, ci_high=mean + half)


def _summaries(project: Project, name: str) -> list[VariantStats]:
    rows = project.cursor().execute(_SQL.format(aggregates=_AGGREGATES), {"name": name}).fetchall()
    out = []
    for row in rows:
        variant, cohort, overall, interactions, *values = row
        metrics = {
            m: _metric_stats(int(values[3 * i]), values[3 * i + 1], values[3 * i + 2], m in _PROPORTIONS)
            for i, m in enumerate(METRICS)
        }
        out.append(VariantStats(variant=variant, cohort=None if overall else cohort, interactions=int(interactions),
                                metrics=metrics))  # fmt: skip
    return out


def _compare(control: MetricStats, treatment: MetricStats, metric: Metric, alpha: float) -> Comparison:
    """Test treatment − control; ``better``/``worse`` are significant moves in the metric's good direction."""
    if control.mean is None or treatment.mean is None or control.n < 2 or treatment.n < 2:
        return Comparison(test=None, chance_to_win=None, always_valid_p=None, better=False, worse=False,
                          reason="fewer than 2 measured units in an arm")  # fmt: skip
    c = stats.MetricSummary(n=control.n, mean=control.mean, variance=control.variance or 0.0)
    t = stats.MetricSummary(n=treatment.n, mean=treatment.mean, variance=treatment.variance or 0.0)
    try:
        test = (stats.two_proportion_test if metric in _PROPORTIONS else stats.welch_test)(c, t, alpha)
        win = stats.bayesian(c, t, relative=False).chance_to_win
        # mixing sd: a tenth of a standard deviation, the size of lift worth detecting
        tau = 0.1 * math.sqrt(max(c.variance, t.variance))
        sequential = stats.msprt(c, t, tau, alpha=alpha).p_value
    except InvalidInput as exc:
        return Comparison(test=None, chance_to_win=None, always_valid_p=None, better=False, worse=False,
                          reason=exc.message)  # fmt: skip
    sign = -1 if metric in _LOWER_IS_BETTER else 1
    return Comparison(
        test=test,
        chance_to_win=win if sign > 0 else 1 - win,
        always_valid_p=sequential,
        better=test.significant and sign * test.effect > 0,
        worse=test.significant and sign * test.effect < 0,
    )


def _add_comparisons(rows: list[VariantStats], config: ExperimentConfig) -> None:
    control_name = config.control.name
    controls = {r.cohort: r for r in rows if r.variant == control_name}
    for row in rows:
        control = controls.get(row.cohort)
        if row.variant == control_name or control is None:
            continue
        row.comparisons = {
            m: _compare(control.metrics[m], row.metrics[m], m, config.alpha) for m in _judged_metrics(config)
        }


def _judged_metrics(config: ExperimentConfig) -> list[Metric]:
    return list(dict.fromkeys([config.metric, *(g.metric for g in config.guardrails)]))


def _srm(overall: list[VariantStats], config: ExperimentConfig) -> stats.SRMResult | None:
    counts = {r.variant: r.interactions for r in overall}
    observed = [counts.get(v.name, 0) for v in config.variants]
    if sum(observed) == 0:
        return None
    return stats.srm_test(observed, [v.share for v in config.variants])


def analyse(project: Project, name: str, *, keep: bool = True) -> Analysis:
    """Summarise every variant overall and per cohort, test treatments against the control.

    With ``keep`` the analysis is stored as a snapshot on the experiment (the last 50 are kept).
    """
    experiment = get_experiment(project, name)
    config = experiment.config
    rows = _summaries(project, config.name)
    _add_comparisons(rows, config)
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
        pairwise=_pairwise(project, config),
    )
    if keep:
        _update(project, experiment, analyses=[*experiment.analyses, analysis])
    return analysis


# --- side by side ---------------------------------------------------------------------------

_PAIRS_SQL = (
    _UNITS
    + """
SELECT pair_id, any_value(cohort), list(variant ORDER BY id), list(win_rate ORDER BY id)
FROM units
WHERE paired AND win_rate IS NOT NULL
GROUP BY pair_id
HAVING count(*) = 2
"""
)


def _pairwise(project: Project, config: ExperimentConfig) -> Pairwise | None:
    """Win rates between variants from side-by-side choices; Bradley–Terry when more than two met."""
    rows = project.cursor().execute(_PAIRS_SQL, {"name": config.name}).fetchall()
    if not rows:
        return None
    order = {v.name: i for i, v in enumerate(config.variants)}
    battles: list[tuple[str, str, stats.Outcome]] = []
    tallies: dict[tuple[str, str, str | None], list[int]] = {}
    for _pair, cohort, variants, wins in rows:
        (a, b), (wa, wb) = variants, wins
        if a == b:
            continue
        if order.get(a, len(order)) > order.get(b, len(order)):  # the earlier variant is "a"
            a, b, wa, wb = b, a, wb, wa
        outcome: stats.Outcome = "a" if wa > wb else "b" if wb > wa else "tie"
        battles.append((a, b, outcome))
        for where in (None, cohort):
            tally = tallies.setdefault((a, b, where), [0, 0, 0])
            tally[{"a": 0, "b": 1, "tie": 2}[outcome]] += 1
    if not battles:
        return None
    pairs = [
        PairStats(a=a, b=b, cohort=cohort, win_rate=stats.win_rate(*tally))
        for (a, b, cohort), tally in sorted(tallies.items(), key=lambda kv: (kv[0][2] or "", kv[0][0], kv[0][1]))
    ]
    met = {name for a, b, _ in battles for name in (a, b)}
    ratings = stats.bradley_terry(battles, bootstrap=100) if len(met) > 2 else {}
    return Pairwise(pairs=pairs, ratings=ratings)


# --- over time ------------------------------------------------------------------------------

_TIMELINE_SQL = (
    _UNITS
    + """,
x AS (SELECT variant, epoch(timestamp) AS t, {metric} AS v FROM units WHERE {metric} IS NOT NULL),
span AS (SELECT min(t) AS lo, max(t) AS hi FROM x)
SELECT variant, least(floor((t - lo) / greatest(hi - lo, 1e-9) * $buckets), $buckets - 1)::INTEGER AS b,
    count(*), sum(v), sum(v * v), any_value(lo), any_value(hi)
FROM x, span
GROUP BY ALL
ORDER BY variant, b
"""
)


def timeline(project: Project, name: str, *, buckets: int = 20) -> Timeline:
    """Return the primary metric over time: each variant's cumulative mean with its 95% interval,
    and each treatment's difference from the control with the always-valid confidence sequence."""
    config = get_experiment(project, name).config
    metric = config.metric
    rows = project.cursor().execute(_TIMELINE_SQL.format(metric=metric), {"name": name, "buckets": buckets}).fetchall()
    sums: dict[str, dict[int, tuple[int, float, float]]] = {}
    for variant, b, n, total, squares, _lo, _hi in rows:
        sums.setdefault(variant, {})[b] = (int(n), float(total), float(squares))
    lo, hi = (float(rows[0][5]), float(rows[0][6])) if rows else (0.0, 0.0)
    width = (hi - lo) / buckets if rows else 0.0
    ends = [datetime.fromtimestamp(lo + width * (b + 1), UTC).replace(tzinfo=None) for b in range(buckets)]
    cumulative: dict[str, list[tuple[int, float, float]]] = {}
    for variant, by_bucket in sums.items():
        n = total = squares = 0.0
        points = []
        for b in range(buckets):
            bn, bt, bs = by_bucket.get(b, (0, 0.0, 0.0))
            n, total, squares = n + bn, total + bt, squares + bs
            points.append((int(n), total, squares))
        cumulative[variant] = points
    proportion = metric in _PROPORTIONS

    def moments(n: int, total: float, squares: float) -> tuple[float, float]:
        mean = total / n
        var = mean * (1 - mean) if proportion else max(0.0, (squares - n * mean * mean) / max(1, n - 1))
        return mean, var

    variants: dict[str, list[TimePoint]] = {}
    for variant, points in cumulative.items():
        series = []
        for at, (n, total, squares) in zip(ends, points, strict=True):
            if n == 0:
                continue
            mean, var = moments(n, total, squares)
            half = 1.96 * math.sqrt(var / n)
            series.append(TimePoint(at=at, n=n, mean=mean, ci_low=mean - half, ci_high=mean + half))
        variants[variant] = series
    differences: dict[str, list[DifferencePoint]] = {}
    control = cumulative.get(config.control.name)
    for variant, points in cumulative.items():
        if variant == config.control.name or control is None:
            continue
        series_d = []
        for at, (nt, tt, st), (nc, tc, sc) in zip(ends, points, control, strict=True):
            if nt < 2 or nc < 2:
                continue
            (mt, vt), (mc, vc) = moments(nt, tt, st), moments(nc, tc, sc)
            units = nt + nc
            half = stats.confidence_sequence(units * (vt / nt + vc / nc), units, alpha=config.alpha)
            effect = mt - mc
            series_d.append(DifferencePoint(at=at, n=units, effect=effect, cs_low=effect - half, cs_high=effect + half))
        differences[variant] = series_d
    return Timeline(experiment=config.name, metric=metric, variants=variants, differences=differences)
