"""Experiments: A/B tests of models on live traffic, from assignment to a recorded decision.

An experiment splits users between variants (each a model) by a sticky hash, and reads its
outcome from the warehouse: interactions tagged ``experiment``/``variant``/``cohort`` joined with
their feedback. ``analyse`` summarises every variant overall and per cohort and tests each
treatment against the control (the first variant); ``decide`` turns that into promote, roll back
or continue, and records the decision with the analysis that justified it.

States: draft → running → stopped; running or stopped → promoted or rolled_back.
"""

from __future__ import annotations

import hashlib
import html
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from posttrain import stats
from posttrain.errors import Conflict, InvalidInput, NotFound
from posttrain.ids import new_id
from posttrain.models.registry import find_model, get_model
from posttrain.project import Project
from posttrain.records import UtcTime

__all__ = [
    "Analysis",
    "Comparison",
    "Decision",
    "Experiment",
    "ExperimentConfig",
    "Guardrail",
    "MetricStats",
    "Variant",
    "VariantStats",
    "METRICS",
    "analyse",
    "assign",
    "bucket",
    "create_experiment",
    "decide",
    "default_direction",
    "get_experiment",
    "list_experiments",
    "promote",
    "rollback",
    "start",
    "stop",
    "write_status_page",
]

Metric = Literal["thumbs_up_rate", "mean_rating", "edit_rate", "regenerate_rate", "win_rate", "latency_ms", "cost"]
Direction = Literal["higher", "lower"]
State = Literal["draft", "running", "stopped", "promoted", "rolled_back"]
Action = Literal["promote", "rollback", "continue"]

METRICS: tuple[Metric, ...] = (
    "thumbs_up_rate",
    "mean_rating",
    "edit_rate",
    "regenerate_rate",
    "win_rate",
    "latency_ms",
    "cost",
)
_PROPORTIONS = {"thumbs_up_rate", "edit_rate", "regenerate_rate", "win_rate"}
_LOWER_IS_BETTER = {"edit_rate", "regenerate_rate", "latency_ms", "cost"}
_NO_COHORT = "(none)"


def default_direction(metric: Metric) -> Direction:
    """Return which way a metric improves: lower for edits, regenerations, latency and cost."""
    return "lower" if metric in _LOWER_IS_BETTER else "higher"


# --- records ------------------------------------------------------------------------------


class Variant(BaseModel):
    """One arm: a name, the model it serves, and its share of users."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    model: str = Field(min_length=1)
    share: float = Field(gt=0, le=1)


class Guardrail(BaseModel):
    """A metric that must not get worse by more than ``margin`` (absolute, on the metric's scale)."""

    model_config = ConfigDict(extra="forbid")

    metric: Metric
    margin: float = Field(0.0, ge=0)


class ExperimentConfig(BaseModel):
    """What an experiment compares, on whom, and how it is judged. The first variant is the control."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
    variants: list[Variant] = Field(min_length=2)
    cohorts: list[str] = Field(default_factory=list, description="Targeted cohorts; empty means everyone.")
    metric: Metric = "thumbs_up_rate"
    direction: Direction | None = None
    guardrails: list[Guardrail] = Field(default_factory=list)
    min_samples: int = Field(100, ge=2)
    alpha: float = Field(0.05, gt=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        if abs(sum(v.share for v in self.variants) - 1) > 1e-6:
            shares = ", ".join(f"{v.name}={v.share}" for v in self.variants)
            raise ValueError(f"variants: shares must sum to 1, got {shares}; adjust the shares")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variants: names must be unique, got {names}")
        if self.direction is None:
            self.direction = default_direction(self.metric)
        return self

    @property
    def control(self) -> Variant:
        """The first variant, which every treatment is compared against."""
        return self.variants[0]


class MetricStats(BaseModel):
    """One metric in one variant (and cohort): units measured, mean and a 95% normal CI."""

    n: int
    mean: float | None
    variance: float | None
    ci_low: float | None
    ci_high: float | None


class Comparison(BaseModel):
    """A treatment against the control on one metric; ``better`` is in the metric's good direction."""

    test: stats.TestResult | None
    chance_to_win: float | None
    always_valid_p: float | None
    better: bool
    worse: bool
    reason: str | None = None  # why no test, when there is none


class VariantStats(BaseModel):
    """One variant overall (``cohort`` None) or in one cohort."""

    variant: str
    cohort: str | None
    interactions: int
    metrics: dict[str, MetricStats]
    comparisons: dict[str, Comparison] = Field(default_factory=dict)


class Analysis(BaseModel):
    """A snapshot of an experiment's outcome so far."""

    experiment: str
    at: UtcTime
    metric: Metric
    direction: Direction
    variants: list[VariantStats]
    cohorts: list[VariantStats]
    srm: stats.SRMResult | None


class Decision(BaseModel):
    """What to do with an experiment, why, and the analysis that justified it."""

    action: Action
    variant: str | None
    reasons: list[str]
    at: UtcTime
    applied: bool = False
    analysis: Analysis


class Experiment(BaseModel):
    """An experiment as stored: its config, state, analysis snapshots and latest decision."""

    id: str
    config: ExperimentConfig
    state: State
    analyses: list[Analysis] = Field(default_factory=list)
    decision: Decision | None = None
    created_at: UtcTime
    started_at: UtcTime | None = None
    stopped_at: UtcTime | None = None

    @property
    def name(self) -> str:
        return self.config.name


# --- storage ------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _dumps(value: Any) -> str:
    def encode(v: Any) -> Any:
        return v.model_dump(mode="json") if isinstance(v, BaseModel) else str(v)

    return orjson.dumps(value, default=encode).decode()


def _row_to_experiment(columns: list[str], row: tuple[Any, ...]) -> Experiment:
    data = dict(zip(columns, row, strict=True))
    metrics = orjson.loads(data["metrics"])
    config = ExperimentConfig(
        name=data["name"],
        variants=orjson.loads(data["variants"]),
        cohorts=orjson.loads(data["targeting"])["cohorts"],
        **metrics,
    )
    decision = orjson.loads(data["decision"]) if data["decision"] else None
    return Experiment(
        id=data["id"],
        config=config,
        state=data["state"],
        analyses=orjson.loads(data["analyses"]),
        decision=decision,
        created_at=data["created_at"],
        started_at=data["started_at"],
        stopped_at=data["stopped_at"],
    )


def _find(project: Project, name: str) -> Experiment | None:
    result = project.cursor().execute("SELECT * FROM experiments WHERE name = ? OR id = ?", [name, name])
    row = result.fetchone()
    return None if row is None else _row_to_experiment([d[0] for d in result.description], row)


def _update(project: Project, experiment: Experiment, **fields: Any) -> None:
    sets = ", ".join(f"{name} = ?" for name in fields)
    values = [_dumps(v) if name in ("analyses", "decision") and v is not None else v for name, v in fields.items()]
    project.cursor().execute(f"UPDATE experiments SET {sets} WHERE id = ?", [*values, experiment.id])


def create_experiment(project: Project, config: ExperimentConfig) -> Experiment:
    """Store a new experiment in the draft state; raise Conflict if the name is taken."""
    if _find(project, config.name) is not None:
        raise Conflict(
            f"an experiment named {config.name!r} exists; choose another name or see "
            f"'posttrain experiments status {config.name}'"
        )
    experiment = Experiment(id=new_id(), config=config, state="draft", created_at=_now())
    metrics = config.model_dump(include={"metric", "direction", "guardrails", "min_samples", "alpha"})
    project.cursor().execute(
        "INSERT INTO experiments (id, name, variants, targeting, metrics, state, analyses, created_at) "
        "VALUES (?, ?, ?, ?, ?, 'draft', '[]', ?)",
        [
            experiment.id,
            config.name,
            _dumps([v.model_dump() for v in config.variants]),
            _dumps({"cohorts": config.cohorts}),
            _dumps(metrics),
            experiment.created_at,
        ],
    )
    return experiment


def get_experiment(project: Project, name: str) -> Experiment:
    """Return one experiment by name (or id); raise NotFound naming the fix."""
    found = _find(project, name)
    if found is None:
        raise NotFound(
            f"no experiment {name!r}; run 'posttrain experiments list' or 'posttrain experiments create'",
            field="experiment",
        )
    return found


def list_experiments(project: Project, *, state: State | None = None) -> list[Experiment]:
    """Return experiments newest first, optionally in one state."""
    where, params = ("WHERE state = ?", [state]) if state else ("", [])
    result = project.cursor().execute(f"SELECT * FROM experiments {where} ORDER BY created_at DESC, id DESC", params)
    columns = [d[0] for d in result.description]
    return [_row_to_experiment(columns, r) for r in result.fetchall()]


_FIX = {
    "draft": "run 'posttrain experiments start {name}'",
    "running": "run 'posttrain experiments stop {name}', or promote or roll it back",
    "stopped": "promote or roll it back: 'posttrain experiments promote {name}'",
    "promoted": "it is finished; create a new experiment",
    "rolled_back": "it is finished; create a new experiment",
}


def _require(experiment: Experiment, allowed: tuple[State, ...], action: str) -> None:
    if experiment.state not in allowed:
        fix = _FIX[experiment.state].format(name=experiment.name)
        raise Conflict(
            f"cannot {action} experiment {experiment.name!r}: it is {experiment.state} "
            f"(needs {' or '.join(allowed)}); {fix}"
        )


def start(project: Project, name: str) -> Experiment:
    """Move a draft experiment to running: from now on the gateway may assign users to it."""
    experiment = get_experiment(project, name)
    _require(experiment, ("draft",), "start")
    _update(project, experiment, state="running", started_at=_now())
    return get_experiment(project, name)


def stop(project: Project, name: str) -> Experiment:
    """Stop assigning users to a running experiment; its data stays for analysis."""
    experiment = get_experiment(project, name)
    _require(experiment, ("running",), "stop")
    _update(project, experiment, state="stopped", stopped_at=_now())
    return get_experiment(project, name)


# --- assignment ---------------------------------------------------------------------------


def bucket(experiment: str, user_id: str) -> float:
    """Return the user's sticky uniform number in [0, 1) for this experiment (SHA-256 based)."""
    digest = hashlib.sha256(f"{experiment}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(experiment: Experiment | ExperimentConfig, user_id: str) -> tuple[str, float]:
    """Return the user's variant and its assignment probability; the same user always gets the same one."""
    config = experiment.config if isinstance(experiment, Experiment) else experiment
    u = bucket(config.name, user_id)
    cumulative = 0.0
    for variant in config.variants:
        cumulative += variant.share
        if u < cumulative:
            return variant.name, variant.share
    last = config.variants[-1]  # shares sum to 1 only up to rounding
    return last.name, last.share


# --- analysis -----------------------------------------------------------------------------

# One row per interaction with its metric values (NULL where it has no such feedback), then
# count/mean/variance per variant, overall and per cohort.
_SQL = """
WITH fb AS (
    SELECT interaction_id,
        arg_max(score, timestamp) FILTER (WHERE kind = 'thumb') AS thumb,
        arg_max(score, timestamp) FILTER (WHERE kind = 'rating') AS rating,
        arg_max(value ->> '$', timestamp) FILTER (WHERE kind = 'choice') AS choice,
        bool_or(kind = 'edit') AS edited,
        bool_or(kind = 'regenerate') AS regenerated
    FROM feedback
    WHERE interaction_id IN (SELECT id FROM interactions WHERE experiment = $name)
    GROUP BY interaction_id
),
units AS (
    SELECT i.variant, coalesce(i.cohort, '(none)') AS cohort,
        CASE WHEN fb.thumb IS NULL THEN NULL WHEN fb.thumb > 0 THEN 1.0 ELSE 0.0 END AS thumbs_up_rate,
        fb.rating AS mean_rating,
        CASE WHEN coalesce(fb.edited, false) THEN 1.0 ELSE 0.0 END AS edit_rate,
        CASE WHEN coalesce(fb.regenerated, false) THEN 1.0 ELSE 0.0 END AS regenerate_rate,
        CASE WHEN fb.choice IS NULL THEN NULL WHEN fb.choice = i.id THEN 1.0 ELSE 0.0 END AS win_rate,
        i.latency_ms, i.cost
    FROM interactions i LEFT JOIN fb ON fb.interaction_id = i.id
    WHERE i.experiment = $name
)
SELECT variant, cohort, GROUPING(cohort) AS overall, count(*) AS interactions, {aggregates}
FROM units
GROUP BY GROUPING SETS ((variant), (variant, cohort))
"""
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


def analyse(project: Project, name: str) -> Analysis:
    """Summarise every variant overall and per cohort, test treatments against the control, store a snapshot."""
    experiment = get_experiment(project, name)
    config = experiment.config
    rows = _summaries(project, config.name)
    _add_comparisons(rows, config)
    order = {v.name: i for i, v in enumerate(config.variants)}
    rows.sort(key=lambda r: (r.cohort or "", order.get(r.variant, len(order)), r.variant))
    overall = [r for r in rows if r.cohort is None]
    analysis = Analysis(
        experiment=config.name,
        at=_now(),
        metric=config.metric,
        direction=config.direction or default_direction(config.metric),
        variants=overall,
        cohorts=[r for r in rows if r.cohort is not None],
        srm=_srm(overall, config),
    )
    _update(project, experiment, analyses=[*experiment.analyses, analysis])
    return analysis


# --- decisions ----------------------------------------------------------------------------


def _guardrail_verdicts(rows: list[VariantStats], config: ExperimentConfig) -> list[tuple[str, bool, str]]:
    """Return (variant, breached, message) for every guardrail not yet shown non-inferior, in every row."""
    verdicts = []
    for row in rows:
        where = f"{row.variant} in cohort {row.cohort}" if row.cohort else f"{row.variant} overall"
        for guard in config.guardrails:
            comparison = row.comparisons.get(guard.metric)
            test = comparison.test if comparison else None
            if test is None:
                verdicts.append((row.variant, False, f"{guard.metric} untested for {where}"))
                continue
            sign = -1 if guard.metric in _LOWER_IS_BETTER else 1
            low, high = sorted((sign * test.ci_low, sign * test.ci_high))
            if test.significant and high < -guard.margin:
                verdicts.append((row.variant, True, f"{guard.metric} worse beyond margin {guard.margin} for {where}"))
            elif low <= -guard.margin:
                verdicts.append(
                    (row.variant, False, f"{guard.metric} not shown within margin {guard.margin} for {where}")
                )
    return verdicts


def _judge(analysis: Analysis, config: ExperimentConfig) -> tuple[Action, str | None, list[str]]:
    control = config.control.name
    verdicts = _guardrail_verdicts([r for r in analysis.variants + analysis.cohorts if r.variant != control], config)
    breaches = [message for _, breached, message in verdicts if breached]
    if breaches:
        return "rollback", None, breaches
    reasons = [message for _, _, message in verdicts]
    unguarded = {variant for variant, _, _ in verdicts}
    winners = []
    control_n = next((r.metrics[config.metric].n for r in analysis.variants if r.variant == control), 0)
    for row in analysis.variants:
        n = min(row.metrics[config.metric].n, control_n)
        if row.variant == control:
            continue
        if n < config.min_samples:
            reasons.append(
                f"{row.variant} vs control: {n} units of {config.metric}, below min_samples {config.min_samples}"
            )
        elif not row.comparisons[config.metric].better:
            reasons.append(f"{row.variant} does not significantly win {config.metric}")
        elif row.variant not in unguarded:
            winners.append(row)
    if not winners:
        return "continue", None, reasons or ["no treatment wins yet"]
    best = max(winners, key=lambda r: abs(r.comparisons[config.metric].test.effect))  # type: ignore[union-attr]
    return "promote", best.variant, [f"{best.variant} wins {config.metric} and holds every guardrail in every cohort"]


def _record(project: Project, experiment: Experiment, decision: Decision, **fields: Any) -> Experiment:
    _update(project, experiment, decision=decision.model_dump(mode="json"), **fields)
    return get_experiment(project, experiment.name)


def decide(project: Project, name: str, *, apply: bool = False) -> Decision:
    """Analyse and decide: promote a clear, guarded winner, roll back a guardrail breach, else continue.

    The decision is recorded with its analysis; with ``apply=True`` a promote or rollback is carried out.
    """
    experiment = get_experiment(project, name)
    _require(experiment, ("running", "stopped"), "decide")
    analysis = analyse(project, name)
    action, variant, reasons = _judge(analysis, experiment.config)
    decision = Decision(action=action, variant=variant, reasons=reasons, at=_now(), analysis=analysis)
    if apply and action == "promote" and variant is not None:
        return _promote(project, get_experiment(project, name), variant, decision).decision  # type: ignore[return-value]
    if apply and action == "rollback":
        return _rollback(project, get_experiment(project, name), decision).decision  # type: ignore[return-value]
    _record(project, get_experiment(project, name), decision)
    return decision


def _default_variant(experiment: Experiment) -> str:
    if experiment.decision is not None and experiment.decision.action == "promote" and experiment.decision.variant:
        return experiment.decision.variant
    if len(experiment.config.variants) == 2:
        return experiment.config.variants[1].name
    raise InvalidInput(f"experiment {experiment.name!r} has several treatments; pass --variant", field="variant")


def _promote(project: Project, experiment: Experiment, variant: str, decision: Decision) -> Experiment:
    chosen = {v.name: v for v in experiment.config.variants}.get(variant)
    if chosen is None:
        names = ", ".join(v.name for v in experiment.config.variants)
        raise InvalidInput(f"experiment {experiment.name!r} has no variant {variant!r}; choose one of {names}")
    model = get_model(project, chosen.model)
    project.cursor().execute("UPDATE models SET status = 'serving' WHERE id = ?", [model.id])
    decision = decision.model_copy(update={"action": "promote", "variant": variant, "applied": True})
    return _record(project, experiment, decision, state="promoted", stopped_at=experiment.stopped_at or _now())


def promote(project: Project, name: str, variant: str | None = None) -> Experiment:
    """Ship a variant: mark its model ``serving`` and the experiment promoted (default: the decided winner)."""
    experiment = get_experiment(project, name)
    _require(experiment, ("running", "stopped"), "promote")
    chosen = variant or _default_variant(experiment)
    decision = Decision(action="promote", variant=chosen, reasons=[f"promoted {chosen} by hand"], at=_now(),
                        analysis=analyse(project, name))  # fmt: skip
    return _promote(project, get_experiment(project, name), chosen, decision)


def _rollback(project: Project, experiment: Experiment, decision: Decision) -> Experiment:
    control = find_model(project, experiment.config.control.model)
    if control is not None:
        project.cursor().execute("UPDATE models SET status = 'serving' WHERE id = ?", [control.id])
    decision = decision.model_copy(update={"action": "rollback", "variant": None, "applied": True})
    return _record(project, experiment, decision, state="rolled_back", stopped_at=experiment.stopped_at or _now())


def rollback(project: Project, name: str) -> Experiment:
    """End the experiment without shipping: mark it rolled_back and keep the control's model serving."""
    experiment = get_experiment(project, name)
    _require(experiment, ("running", "stopped"), "roll back")
    decision = Decision(action="rollback", variant=None, reasons=["rolled back by hand"], at=_now(),
                        analysis=analyse(project, name))  # fmt: skip
    return _rollback(project, get_experiment(project, name), decision)


# --- status page --------------------------------------------------------------------------


def write_status_page(project: Project, analysis: Analysis) -> Path:
    """Write ``artifacts/experiments/NAME/status.html``: the primary metric per variant with its CI."""
    path = project.artifacts / "experiments" / analysis.experiment / "status.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(analysis), encoding="utf-8")
    return path


def _page(analysis: Analysis) -> str:
    points = [(r.variant, r.metrics[analysis.metric]) for r in analysis.variants]
    bounds = [v for _, s in points for v in (s.ci_low, s.ci_high) if v is not None] or [0.0, 1.0]
    lo, hi = min(bounds), max(bounds)
    span = (hi - lo) or 1.0

    def x(value: float) -> float:
        return 150 + 400 * (value - lo) / span

    rows = []
    for i, (name, s) in enumerate(points):
        y = 30 + 30 * i
        rows.append(f'<text x="10" y="{y + 4}">{html.escape(name)} (n={s.n})</text>')
        if s.mean is not None and s.ci_low is not None and s.ci_high is not None:
            rows.append(f'<line x1="{x(s.ci_low):.1f}" x2="{x(s.ci_high):.1f}" y1="{y}" y2="{y}" stroke="#36c"/>')
            rows.append(f'<circle cx="{x(s.mean):.1f}" cy="{y}" r="4" fill="#36c"/>')
            rows.append(f'<text x="{x(s.ci_high) + 8:.1f}" y="{y + 4}">{s.mean:.4g}</text>')
    height = 40 + 30 * len(points)
    title = html.escape(f"{analysis.experiment}: {analysis.metric} ({analysis.direction} is better)")
    srm = "" if analysis.srm is None else f"<p>SRM p = {analysis.srm.p_value:.3g}</p>"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body style='font-family:sans-serif'><h1>{title}</h1><p>as of {analysis.at:%Y-%m-%d %H:%M:%S} UTC; "
        f"dots are means, lines 95% CIs</p><svg width='640' height='{height}' font-size='12'>{''.join(rows)}</svg>"
        f"{srm}</body></html>"
    )
