"""Decisions: promote a guarded winner, roll back a guardrail breach, or continue; each recorded."""

from __future__ import annotations

from typing import Any

from posttrain import stats
from posttrain.clock import utc_now
from posttrain.errors import InvalidInput
from posttrain.experiments.analysis import analyse, sequential
from posttrain.experiments.records import (
    _LOWER_IS_BETTER,
    Action,
    Analysis,
    Decision,
    Experiment,
    ExperimentConfig,
    VariantStats,
)
from posttrain.experiments.store import _require, _update, get_experiment
from posttrain.models.registry import find_model, get_model
from posttrain.project import Project

# --- decisions ----------------------------------------------------------------------------
#
# The error control, in one place (docs/guides/serving-and-ab.md, "Deciding"):
# - the unit is the user, as randomised; a sample-ratio mismatch on users blocks every decision;
# - promotion is on the pre-declared primary metric, overall (cohorts are descriptive), by the
#   always-valid mSPRT p-value, Holm-corrected across treatments, so ``decide`` may be called at
#   any time; every guardrail must then be non-inferior overall by the always-valid interval;
# - rollback needs a guardrail's always-valid test to show a loss beyond its margin, Holm-corrected
#   across treatments × (overall + cohorts) × guardrails.


def _srm_block(analysis: Analysis) -> str | None:
    """Return why a sample-ratio mismatch forbids deciding, or None when the split of users fits."""
    srm = analysis.srm
    if srm is None or not srm.mismatch:
        return None
    users = ", ".join(f"{r.variant}={r.users}" for r in analysis.variants)
    return (f"sample-ratio mismatch: users per variant ({users}) do not fit the planned shares "
            f"(p = {srm.p_value:.2g} < {srm.threshold}); no promotion or rollback until its cause "
            "(assignment, logging, bots) is found")  # fmt: skip


def _where(row: VariantStats) -> str:
    return f"{row.variant} in cohort {row.cohort}" if row.cohort else f"{row.variant} overall"


def _breach_tests(analysis: Analysis, config: ExperimentConfig) -> list[tuple[float, str]]:
    """Return (always-valid p, message) for "this guardrail lost more than its margin", every row.

    The test is the mSPRT of treatment − control shifted by the margin (H0: the loss is exactly
    the margin), so it rejects exactly when the always-valid interval lies beyond the margin.
    """
    controls = {r.cohort: r for r in analysis.variants + analysis.cohorts if r.variant == config.control.name}
    tests = []
    for row in analysis.variants + analysis.cohorts:
        control = controls.get(row.cohort)
        if row.variant == config.control.name or control is None:
            continue
        for guard in config.guardrails:
            comparison = row.comparisons.get(guard.metric)
            if comparison is None or comparison.test is None:
                continue
            c, t = control.metrics[guard.metric], row.metrics[guard.metric]
            margin = guard.margin_for(c.mean)
            sign = -1 if guard.metric in _LOWER_IS_BETTER else 1
            look = sequential(c, t, config.alpha, shift=sign * margin)
            p = look.p_value if sign * look.effect < 0 else 1.0
            tests.append((p, f"{guard.metric} worse beyond margin {margin:.4g} for {_where(row)}"))
    return tests


def _breaches(analysis: Analysis, config: ExperimentConfig) -> list[str]:
    tests = _breach_tests(analysis, config)
    rejected = stats.holm([p for p, _ in tests], config.alpha)
    return [f"{message} (always-valid p = {p:.2g}, Holm over {len(tests)} tests)"
            for (p, message), hit in zip(tests, rejected, strict=True) if hit]  # fmt: skip


def _unproven_guardrails(row: VariantStats, control: VariantStats, config: ExperimentConfig) -> list[str]:
    """Return why a treatment's guardrails are not yet shown non-inferior overall (always-valid interval)."""
    reasons = []
    for guard in config.guardrails:
        comparison = row.comparisons.get(guard.metric)
        margin = guard.margin_for(control.metrics[guard.metric].mean)
        low, high = (comparison.always_valid_ci_low, comparison.always_valid_ci_high) if comparison else (None, None)
        if low is None or high is None:
            reason = comparison.reason if comparison else None
            reasons.append(f"{guard.metric} untested for {_where(row)}" + (f": {reason}" if reason else ""))
            continue
        sign = -1 if guard.metric in _LOWER_IS_BETTER else 1
        if min(sign * low, sign * high) <= -margin:
            reasons.append(f"{guard.metric} not shown within margin {margin:.4g} for {_where(row)}")
    return reasons


def _judge(analysis: Analysis, config: ExperimentConfig) -> tuple[Action, str | None, list[str]]:
    blocked = _srm_block(analysis)
    if blocked:
        return "continue", None, [blocked]
    breaches = _breaches(analysis, config)
    if breaches:
        return "rollback", None, breaches
    control = next((r for r in analysis.variants if r.variant == config.control.name), None)
    treatments = [r for r in analysis.variants if r.variant != config.control.name]
    if control is None or not treatments:
        return "continue", None, ["no data for the control and a treatment yet"]
    return _pick_winner(control, treatments, config)


def _win_p(row: VariantStats, config: ExperimentConfig) -> float:
    """The always-valid p-value for "this treatment wins the primary metric" (1 when it loses)."""
    comparison = row.comparisons.get(config.metric)
    if comparison is None or comparison.test is None or comparison.always_valid_p is None:
        return 1.0
    sign = -1 if config.metric in _LOWER_IS_BETTER else 1
    return comparison.always_valid_p if sign * comparison.test.effect > 0 else 1.0


def _pick_winner(
    control: VariantStats, treatments: list[VariantStats], config: ExperimentConfig
) -> tuple[Action, str | None, list[str]]:
    wins = stats.holm([_win_p(r, config) for r in treatments], config.alpha)
    reasons, winners = [], []
    for row, won in zip(treatments, wins, strict=True):
        n = min(row.metrics[config.metric].n, control.metrics[config.metric].n)
        unproven = _unproven_guardrails(row, control, config)
        if n < config.min_samples:
            reasons.append(f"{row.variant} vs control: {n} users measured on {config.metric}, "
                           f"below min_samples {config.min_samples}")  # fmt: skip
        elif not won:
            p = _win_p(row, config)
            reasons.append(f"{row.variant} does not significantly win {config.metric} "
                           f"(always-valid p = {p:.2g}, Holm over {len(treatments)} treatments)")  # fmt: skip
        elif unproven:
            reasons.extend(unproven)
        else:
            winners.append(row)
    if not winners:
        return "continue", None, reasons or ["no treatment wins yet"]
    best = max(winners, key=lambda r: abs(r.comparisons[config.metric].test.effect))  # type: ignore[union-attr]
    return "promote", best.variant, [f"{best.variant} wins {config.metric} and holds every guardrail"]


def _record(project: Project, experiment: Experiment, decision: Decision, **fields: Any) -> Experiment:
    _update(project, experiment, decision=decision.model_dump(mode="json"), **fields)
    return get_experiment(project, experiment.name)


def decide(project: Project, name: str, *, apply: bool = False) -> Decision:
    """Analyse and decide: promote a clear, guarded winner, roll back a guardrail breach, else continue.

    Safe to call at any time: it decides on always-valid p-values and intervals per user, with
    Holm's correction, and refuses to act on a sample-ratio mismatch. The decision is recorded
    with its analysis; with ``apply=True`` a promote or rollback is carried out.
    """
    experiment = get_experiment(project, name)
    _require(experiment, ("running", "stopped"), "decide")
    analysis = analyse(project, name)
    action, variant, reasons = _judge(analysis, experiment.config)
    decision = Decision(action=action, variant=variant, reasons=reasons, at=utc_now(), analysis=analysis)
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
    return _record(project, experiment, decision, state="promoted", stopped_at=experiment.stopped_at or utc_now())


def promote(project: Project, name: str, variant: str | None = None) -> Experiment:
    """Ship a variant: mark its model ``serving`` and the experiment promoted (default: the decided winner)."""
    experiment = get_experiment(project, name)
    _require(experiment, ("running", "stopped"), "promote")
    chosen = variant or _default_variant(experiment)
    decision = Decision(action="promote", variant=chosen, reasons=[f"promoted {chosen} by hand"], at=utc_now(),
                        analysis=analyse(project, name))  # fmt: skip
    return _promote(project, get_experiment(project, name), chosen, decision)


def _rollback(project: Project, experiment: Experiment, decision: Decision) -> Experiment:
    control = find_model(project, experiment.config.control.model)
    if control is not None:
        project.cursor().execute("UPDATE models SET status = 'serving' WHERE id = ?", [control.id])
    decision = decision.model_copy(update={"action": "rollback", "variant": None, "applied": True})
    return _record(project, experiment, decision, state="rolled_back", stopped_at=experiment.stopped_at or utc_now())


def rollback(project: Project, name: str) -> Experiment:
    """End the experiment without shipping: mark it rolled_back and keep the control's model serving."""
    experiment = get_experiment(project, name)
    _require(experiment, ("running", "stopped"), "roll back")
    decision = Decision(action="rollback", variant=None, reasons=["rolled back by hand"], at=utc_now(),
                        analysis=analyse(project, name))  # fmt: skip
    return _rollback(project, get_experiment(project, name), decision)


def check_guardrails(project: Project, name: str) -> Decision | None:
    """Roll back a running experiment whose guardrail is breached (always-valid test); else return None.

    Safe to call as often as one likes: a breach needs the always-valid test (Holm-corrected over
    treatments, cohorts and guardrails) to show a loss beyond the margin, nothing is done while the
    split of users fails the SRM check, and nothing is stored unless it acts. Every server runs the
    check; the project's decision lock lets one at a time read and act, so a breach is rolled back
    and recorded once (the next sees the experiment no longer running).
    """
    with project.decision_lock:
        experiment = get_experiment(project, name)
        if experiment.state != "running" or not experiment.config.guardrails:
            return None
        analysis = analyse(project, name, keep=False)
        if _srm_block(analysis):
            return None  # a mismatched split proves nothing; ``decide`` says so
        breaches = _breaches(analysis, experiment.config)
        if not breaches:
            return None
        decision = Decision(action="rollback", variant=None, reasons=[f"automatic: {m}" for m in breaches],
                            at=utc_now(), analysis=analysis)  # fmt: skip
        _update(project, experiment, analyses=[*experiment.analyses, analysis])
        return _rollback(project, get_experiment(project, name), decision).decision


def check_running(project: Project) -> list[Decision]:
    """Check every running experiment's guardrails; return the rollbacks made."""
    from posttrain.experiments.store import list_experiments

    made = []
    for experiment in list_experiments(project, state="running", with_analyses=False):
        decision = check_guardrails(project, experiment.name)
        if decision is not None:
            made.append(decision)
    return made
