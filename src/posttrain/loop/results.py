"""What each step of a turn did: one record per step kind, stored as JSON with the step.

Every result has a ``summary`` (the line shown while the loop runs) and ``skipped`` (why the step
did nothing, or None); ``rejected`` ends the turn with the candidate rejected. ``RESULTS`` maps each
step, in the order a turn runs them, to its record; rows written before the records were typed read
back through the same models (see ``EvaluateResult``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from posttrain.evals.compare import GateCheck


class StepResult(BaseModel):
    """What every step reports."""

    summary: str = ""
    skipped: str | None = Field(None, description="Why the step did nothing; None when it ran")
    rejected: bool = Field(False, description="The turn ends here with the candidate rejected")


class CollectResult(StepResult):
    """The turn's window: interactions, and feedback events by kind."""

    interactions: int = 0
    feedback: dict[str, int] = Field(default_factory=dict)


class AnnotateResult(StepResult):
    """The turn's annotation: the queue, what active selection added, and how much got labelled."""

    queue: str | None = None
    added: int = 0
    judge_resolved: int = Field(0, description="Items a trusted judge was sure about, labelled by it alone")
    resolved: int = Field(0, description="Items of the queue with a consensus when the step ended")
    open: int = Field(0, description="Items still waiting for labels when the step ended")
    labels: int = 0


class BuiltDataset(BaseModel):
    """A dataset version the turn built (``ref`` None: no row matched)."""

    ref: str | None = None
    rows: int = 0


class DatasetsResult(StepResult):
    """The dataset versions built from the window: ``sft``, ``preference``, ``prompts``, and per cohort."""

    datasets: dict[str, BuiltDataset] = Field(
        default_factory=dict, description="'sft', 'preference', 'prompts'; 'sft:COHORT' etc. for a cohort's own"
    )

    def built(self, kind: str, cohort: str | None = None) -> BuiltDataset:
        """Return the version of ``kind`` built for everyone (or for ``cohort``); an empty one when none was."""
        return self.datasets.get(kind if cohort is None else f"{kind}:{cohort}") or BuiltDataset()


class TrainResult(StepResult):
    """A training stage (sft, reward, dpo, grpo): the model it registered and its last metrics."""

    model: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)


class SpecialiseResult(StepResult):
    """Each cohort's candidate, and the cohort models trained for it."""

    candidates: dict[str, str] = Field(default_factory=dict, description="cohort → candidate model")
    trained: list[str] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)


class PairGate(BaseModel):
    """One candidate gated against one serving model: every check and the failing ones' reasons."""

    candidate: str
    baseline: str
    metric: str
    checks: list[GateCheck]
    reasons: list[str] = Field(default_factory=list)

    @property
    def overall(self) -> GateCheck:
        """The check over the whole suite."""
        return next(c for c in self.checks if c.cohort is None)

    def decisive(self, cohort: str) -> list[GateCheck]:
        """Return the checks that decide ``cohort``: the overall one and that cohort's own (when the suite has it)."""
        return [c for c in self.checks if c.cohort in (None, cohort)]


class EvaluateResult(StepResult):
    """The gate's evidence: each distinct (candidate, serving model) pair compared on the suite."""

    gates: list[PairGate] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _gates_by_label(cls, data: Any) -> Any:
        """Read rows written before the records were typed: gates keyed 'CANDIDATE vs BASELINE'."""
        if isinstance(data, dict) and isinstance(data.get("gates"), dict):
            pairs = [dict(found, candidate=key.split(" vs ")[0], baseline=key.split(" vs ")[1])
                     for key, found in data["gates"].items()]  # fmt: skip
            data = {**data, "gates": pairs}
        return data

    def pair(self, candidate: str, baseline: str) -> PairGate:
        """Return the comparison of ``candidate`` with ``baseline``; raise KeyError when it was not run."""
        found = next((g for g in self.gates if (g.candidate, g.baseline) == (candidate, baseline)), None)
        if found is None:
            raise KeyError(f"{candidate} vs {baseline} was not evaluated this turn")
        return found


class GateStepResult(StepResult):
    """Which cohorts' candidates passed, the checks that decided each, and why any failed."""

    passed: dict[str, bool] = Field(default_factory=dict)
    checks: dict[str, list[GateCheck]] = Field(default_factory=dict, description="cohort → the checks deciding it")
    reasons: list[str] = Field(default_factory=list)


class ExperimentResult(StepResult):
    """cohort → the A/B test started for it (None: experiments off, the gate alone decides)."""

    experiments: dict[str, str | None] = Field(default_factory=dict)


class TrafficResult(StepResult):
    """cohort → units measured in the smaller arm of its experiment."""

    measured: dict[str, int] = Field(default_factory=dict)


class Arm(BaseModel):
    """One arm of an experiment at the decision: its model and the metric's estimate."""

    model: str | None = None
    n: int
    mean: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None


class Decision(BaseModel):
    """What the loop did for one cohort: promote its candidate or keep serving."""

    action: Literal["promote", "keep"]
    model: str
    experiment: str | None = None
    metric: str | None = None
    arms: dict[str, Arm] = Field(default_factory=dict)
    reasons: list[str] = Field(default_factory=list)


class DecideResult(StepResult):
    """cohort → the decision on its candidate."""

    decisions: dict[str, Decision] = Field(default_factory=dict)


RESULTS: dict[str, type[StepResult]] = {
    "collect": CollectResult,
    "annotate": AnnotateResult,
    "datasets": DatasetsResult,
    "sft": TrainResult,
    "reward": TrainResult,
    "dpo": TrainResult,
    "grpo": TrainResult,
    "specialise": SpecialiseResult,
    "evaluate": EvaluateResult,
    "gate": GateStepResult,
    "experiment": ExperimentResult,
    "traffic": TrafficResult,
    "decide": DecideResult,
}
STEPS = tuple(RESULTS)

AnyStepResult = (
    CollectResult
    | AnnotateResult
    | DatasetsResult
    | TrainResult
    | SpecialiseResult
    | EvaluateResult
    | GateStepResult
    | ExperimentResult
    | TrafficResult
    | DecideResult
)
