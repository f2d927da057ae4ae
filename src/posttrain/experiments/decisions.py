"""Decisions: promote a guarded winner, roll back a guardrail breach, or continue; each recorded."""

from __future__ import annotations

from typing import Any

from posttrain.clock import utc_now
from posttrain.errors import InvalidInput
from posttrain.experiments.analysis import analyse
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


def _guardrail_verdicts(
    rows: list[VariantStats], config: ExperimentConfig, *, sequential: bool = False
) -> list[tuple[str, bool, str]]:
    """Return (variant, breached, message) for every guardrail not yet shown non-inferior, in every row.

    With ``sequential`` a breach also needs the always-valid p-value below alpha, so a monitor that
    looks again and again keeps its false-rollback rate at alpha.
    """
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
            valid = comparison is not None and comparison.always_valid_p is not None
            proven = not sequential or (valid and comparison.always_valid_p < config.alpha)  # type: ignore[union-attr,operator]
            if test.significant and proven and high < -guard.margin:
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

    Safe to call as often as one likes: the breach needs the sequential test as well as the
    fixed-horizon one, and nothing is stored unless it acts.
    """
    experiment = get_experiment(project, name)
    if experiment.state != "running" or not experiment.config.guardrails:
        return None
    analysis = analyse(project, name, keep=False)
    control = experiment.config.control.name
    rows = [r for r in analysis.variants + analysis.cohorts if r.variant != control]
    breaches = [m for _, breached, m in _guardrail_verdicts(rows, experiment.config, sequential=True) if breached]
    if not breaches:
        return None
    decision = Decision(action="rollback", variant=None, reasons=[f"automatic: {m}" for m in breaches], at=utc_now(),
                        analysis=analysis)  # fmt: skip
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
