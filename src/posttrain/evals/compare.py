"""Compare a candidate with the serving model on a suite, and gate it.

``compare`` runs the suite on both models (same seed, same prompts), then for each scorer takes
the paired difference candidate − baseline per prompt (mean with a normal 95% CI), and asks the
suite's judge about every (prompt, sample) pair in both orders (see ``posttrain.evals.judges``),
reporting the candidate's win rate with a Wilson interval. All of it overall, per cohort and per
task family; the comparison is stored in ``eval_comparisons`` beside its two ``eval_runs``.

``gate`` passes only when the candidate is no worse than the baseline beyond ``margin`` on one
scorer, overall *and* in every cohort. The rule (``rule="ci"``, the default): the lower bound of
the 95% CI of the paired difference must be at least −margin, so a slice too small to bound
the difference fails; ``rule="mean"`` checks the mean difference instead.
"""

from __future__ import annotations

import ast
from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field, model_validator

from posttrain import jobs
from posttrain.clock import utc_now
from posttrain.errors import InvalidInput, NotFound
from posttrain.evals.intervals import Estimate, Slices, slice_values
from posttrain.evals.judges import build_judge, default_judge, judge_both_orders
from posttrain.evals.suite import (
    EvalResult,
    Progress,
    SuiteConfig,
    causal_model,
    check_functions,
    per_prompt,
    prompt_keys,
    read_scores,
    read_suite_rows,
    run_eval,
)
from posttrain.ids import new_id
from posttrain.project import Project
from posttrain.records import ModelRecord, UtcTime

GateRule = Literal["ci", "mean"]


class ComparisonResult(BaseModel):
    """A candidate beside a baseline on one suite: paired differences and the judge's win rate."""

    id: str
    candidate: EvalResult
    baseline: EvalResult
    judge: str
    win_rate: Slices = Field(description="The candidate's win rate against the baseline, both orders averaged")
    differences: dict[str, Slices] = Field(description="Scorer → candidate − baseline, paired per prompt")
    created_at: UtcTime


class GateCheck(BaseModel):
    """One slice of a gate: the two means, their paired difference, and whether it holds."""

    slice: str = Field(description="'overall' or 'cohort NAME', for people to read")
    cohort: str | None = Field(None, description="The cohort this check is about; None for the overall check")
    n: int
    candidate: float
    baseline: float
    difference: Estimate
    passed: bool

    @model_validator(mode="before")
    @classmethod
    def _cohort_from_label(cls, data: Any) -> Any:
        """Read checks stored before ``cohort`` was a field: their label is ``cohort `` + the name's repr."""
        if isinstance(data, dict) and "cohort" not in data and str(data.get("slice", "")).startswith("cohort "):
            data = {**data, "cohort": ast.literal_eval(data["slice"].removeprefix("cohort "))}
        return data


class GateResult(BaseModel):
    """The gate's verdict; ``reasons`` name every failing slice with its numbers."""

    passed: bool
    reasons: list[str]
    metric: str
    margin: float
    rule: GateRule
    checks: list[GateCheck]
    comparison: ComparisonResult


def serving_model(project: Project) -> str:
    """Return the name of the causal LM whose status is ``serving``; raise when none or several are."""
    rows = (
        project.cursor()
        .execute("SELECT name FROM models WHERE status = 'serving' AND kind = 'causal-lm' ORDER BY name")
        .fetchall()
    )
    if not rows:
        raise NotFound(
            "no model is serving; pass --baseline MODEL, or promote one with an experiment", field="baseline"
        )
    if len(rows) > 1:
        names = ", ".join(r[0] for r in rows)
        raise InvalidInput(f"several models are serving ({names}); pass --baseline MODEL", field="baseline")
    return str(rows[0][0])


def _halves(progress: Progress | None, part: int) -> Progress | None:
    """Report one of two runs' progress as part of the whole."""
    if progress is None:
        return None
    return lambda done, total: progress(part * total + done, 2 * total)


def compare(
    project: Project,
    candidate: str,
    baseline: str | None,
    suite: SuiteConfig,
    *,
    progress: Progress | None = None,
    on_job: jobs.JobFn | None = None,
) -> ComparisonResult:
    """Run ``suite`` on the candidate and the baseline (default: the serving model); compare and store.

    Raises NotFound (unknown model or dataset, nothing serving) or InvalidInput (the same model
    twice) before its job exists; ``on_job(id)`` is told the job's id as soon as it does.
    """
    cand, base = _pair(project, candidate, baseline, suite)
    config = {"candidate": cand.name, "baseline": base.name, **suite.model_dump(mode="json")}
    return jobs.run_as_job(
        project, "evals.compare", config, lambda _: _compare(project, cand, base, suite, progress), on_job=on_job
    )


def _pair(
    project: Project, candidate: str, baseline: str | None, suite: SuiteConfig
) -> tuple[ModelRecord, ModelRecord]:
    check_functions(project, suite)
    baseline = baseline or serving_model(project)
    cand, base = causal_model(project, candidate), causal_model(project, baseline)
    if cand.id == base.id:
        raise InvalidInput(f"candidate and baseline are both {cand.name!r}; compare two models", field="baseline")
    return cand, base


def _compare(
    project: Project, cand: ModelRecord, base: ModelRecord, suite: SuiteConfig, progress: Progress | None
) -> ComparisonResult:
    judge_spec = suite.judge or default_judge(suite.scorers)
    first = run_eval(project, cand.name, suite, progress=_halves(progress, 0))
    second = run_eval(project, base.name, suite, progress=_halves(progress, 1))
    result = ComparisonResult(
        id=new_id(), candidate=first, baseline=second, judge=judge_spec,
        win_rate=_win_rate(project, judge_spec, first, second), differences=_differences(first, second),
        created_at=utc_now(),
    )  # fmt: skip
    _store(project, result)
    return result


def _differences(candidate: EvalResult, baseline: EvalResult) -> dict[str, Slices]:
    cand, base = read_scores(candidate), read_scores(baseline)
    cohorts, families = prompt_keys(cand, "cohort"), prompt_keys(cand, "family")
    out = {}
    for name in candidate.config.scorers:
        diffs = [a - b for a, b in zip(per_prompt(cand, name), per_prompt(base, name), strict=True)]
        out[name] = slice_values(diffs, cohorts, families, kind="diff")
    return out


def _win_rate(project: Project, spec: str, candidate: EvalResult, baseline: EvalResult) -> Slices:
    cand, base = read_scores(candidate), read_scores(baseline)
    _, rows = read_suite_rows(project, candidate.dataset)
    pair_rows = [rows[i] for i in cand.column("prompt_index").to_pylist()]
    outcomes = judge_both_orders(
        build_judge(project, spec), pair_rows, cand.column("completion").to_pylist(),
        base.column("completion").to_pylist(),
    )  # fmt: skip
    table = cand.select(["prompt_index"]).append_column("outcome", [outcomes])
    values = per_prompt(table, "outcome")
    return slice_values(values, prompt_keys(cand, "cohort"), prompt_keys(cand, "family"), kind="win")


def _store(project: Project, result: ComparisonResult) -> None:
    results = result.model_dump(mode="json", include={"win_rate", "differences"})
    project.cursor().execute(
        "INSERT INTO eval_comparisons (id, candidate_run_id, baseline_run_id, judge, results, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [result.id, result.candidate.id, result.baseline.id, result.judge, orjson.dumps(results).decode(),
         result.created_at],
    )  # fmt: skip


def _check(
    cohort: str | None, cand: Estimate, base: Estimate, diff: Estimate, margin: float, rule: GateRule
) -> GateCheck:
    bound = diff.mean if rule == "mean" else diff.ci_low
    passed = bound is not None and bound >= -margin
    label = "overall" if cohort is None else f"cohort {cohort!r}"
    return GateCheck(slice=label, cohort=cohort, n=diff.n, candidate=cand.mean, baseline=base.mean, difference=diff,
                     passed=passed)  # fmt: skip


def _reason(check: GateCheck, metric: str, margin: float, rule: GateRule) -> str:
    d = check.difference
    head = f"{check.slice}: {metric} {check.candidate:.3f} vs baseline {check.baseline:.3f}"
    if rule == "ci" and d.ci_low is None:
        return f"{head}; {d.n} prompt(s) cannot bound the difference (add prompts, or use the 'mean' rule)"
    ci = "" if d.ci_low is None else f" (95% CI {d.ci_low:+.3f} to {d.ci_high:+.3f})"
    which = "difference" if rule == "mean" else "lower CI bound of the difference"
    return f"{head}, difference {d.mean:+.3f}{ci}: {which} is below -{margin:g}"


def decide_gate(
    comparison: ComparisonResult, *, metric: str | None = None, margin: float = 0.02, rule: GateRule = "ci"
) -> GateResult:
    """Return whether the candidate is no worse than the baseline beyond ``margin``, overall and per cohort."""
    metric = _check_gate_options(comparison.candidate.config, metric, margin, rule)
    cand, base = comparison.candidate.scores[metric], comparison.baseline.scores[metric]
    diff = comparison.differences[metric]
    checks = [_check(None, cand.overall, base.overall, diff.overall, margin, rule)]
    for cohort in sorted(diff.cohorts):
        checks.append(_check(cohort, cand.cohorts[cohort], base.cohorts[cohort], diff.cohorts[cohort], margin, rule))
    reasons = [_reason(c, metric, margin, rule) for c in checks if not c.passed]
    return GateResult(
        passed=not reasons, reasons=reasons, metric=metric, margin=margin, rule=rule, checks=checks,
        comparison=comparison,
    )  # fmt: skip


def _check_gate_options(suite: SuiteConfig, metric: str | None, margin: float, rule: str) -> str:
    if margin < 0:
        raise InvalidInput(f"margin is a tolerated loss and must be >= 0 (got {margin})", field="margin")
    if rule not in ("ci", "mean"):
        raise InvalidInput(f"rule {rule!r} must be 'ci' or 'mean'", field="rule")
    metric = metric or suite.scorers[0]
    if metric not in suite.scorers:
        raise InvalidInput(
            f"metric {metric!r} is not a scorer of the suite ({', '.join(suite.scorers)})", field="metric"
        )
    return metric


def gate(
    project: Project,
    candidate: str,
    baseline: str | None,
    suite: SuiteConfig,
    *,
    margin: float = 0.02,
    metric: str | None = None,
    rule: GateRule = "ci",
    progress: Progress | None = None,
    on_job: jobs.JobFn | None = None,
) -> GateResult:
    """Compare the candidate with the baseline (default: serving) and pass only if no slice regresses.

    ``metric`` is one of the suite's scorers (default: its first). The verdict is stored with the comparison.
    """
    _check_gate_options(suite, metric, margin, rule)
    cand, base = _pair(project, candidate, baseline, suite)

    def work(_: jobs.JobHandle) -> GateResult:
        compared = _compare(project, cand, base, suite, progress)
        verdict = decide_gate(compared, metric=metric, margin=margin, rule=rule)
        summary = verdict.model_dump(mode="json", exclude={"comparison"})
        project.cursor().execute(
            "UPDATE eval_comparisons SET gate = ? WHERE id = ?", [orjson.dumps(summary).decode(), compared.id]
        )
        return verdict

    config = {"candidate": cand.name, "baseline": base.name, "margin": margin, "metric": metric, "rule": rule}
    return jobs.run_as_job(project, "evals.gate", {**config, **suite.model_dump(mode="json")}, work, on_job=on_job)
