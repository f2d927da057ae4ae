"""What an experiment is: its config (variants, targeting, metrics, guardrails), analyses and decisions."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from posttrain import stats
from posttrain.names import Name
from posttrain.records import UtcTime

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

# Bounds on a config, so one request cannot make the server analyse thousands of arms or cohorts.
MAX_VARIANTS = 16
MAX_COHORTS = 64
CohortName = Annotated[str, StringConstraints(min_length=1, max_length=512)]


def default_direction(metric: Metric) -> Direction:
    """Return which way a metric improves: lower for edits, regenerations, latency and cost."""
    return "lower" if metric in _LOWER_IS_BETTER else "higher"


# --- records ------------------------------------------------------------------------------


class Variant(BaseModel):
    """One arm: a name, the model it serves, and its share of users."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    model: str = Field(min_length=1, max_length=512)
    share: float = Field(gt=0, le=1)


# The default non-inferiority margin of a guardrail: a loss of 10% of the control's mean.
DEFAULT_MARGIN = 0.10


class Guardrail(BaseModel):
    """A metric that must not get worse by more than ``margin`` (absolute, on the metric's scale).

    ``margin`` is a non-inferiority margin: promotion needs the always-valid interval to exclude a
    loss of ``margin``, rollback needs it to show a loss beyond ``margin``. Left out, it is 10% of
    the control's mean (``DEFAULT_MARGIN``); 0 would demand that the guardrail significantly improve.
    """

    model_config = ConfigDict(extra="forbid")

    metric: Metric
    margin: float | None = Field(None, ge=0)

    def margin_for(self, control_mean: float | None) -> float:
        """Return the margin in the metric's units: the given one, or 10% of the control's mean."""
        if self.margin is not None:
            return self.margin
        return DEFAULT_MARGIN * abs(control_mean or 0.0)


class ExperimentConfig(BaseModel):
    """What an experiment compares, on whom, and how it is judged. The first variant is the control."""

    model_config = ConfigDict(extra="forbid")

    name: Name = Field(description="Also the folder of its report: artifacts/experiments/NAME.")
    variants: list[Variant] = Field(min_length=2, max_length=MAX_VARIANTS)
    cohorts: list[CohortName] = Field(
        default_factory=list, max_length=MAX_COHORTS, description="Targeted cohorts; empty means everyone."
    )
    metric: Metric = "thumbs_up_rate"
    direction: Direction | None = None
    guardrails: list[Guardrail] = Field(default_factory=list, max_length=len(METRICS))
    min_samples: int = Field(100, ge=2, description="Users per arm measured on the metric before a decision.")
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
    """One metric in one variant (and cohort): users measured, the ratio mean and a 95% CI.

    ``n`` counts users (the unit of randomisation) with at least one measurement; ``mean`` is the
    events' mean (Σ over users of the metric / Σ of their measured events); ``variance`` is the
    per-user delta-method variance, so ``variance / n`` is the variance of ``mean``.
    """

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
    always_valid_ci_low: float | None = None  # the mSPRT interval at alpha, valid at any look
    always_valid_ci_high: float | None = None
    better: bool
    worse: bool
    reason: str | None = None  # why no test, when there is none


class VariantStats(BaseModel):
    """One variant overall (``cohort`` None) or in one cohort."""

    variant: str
    cohort: str | None
    interactions: int
    users: int = 0  # distinct users served (the unit of randomisation and of the SRM check)
    metrics: dict[str, MetricStats]
    comparisons: dict[str, Comparison] = Field(default_factory=dict)


class PairStats(BaseModel):
    """Side-by-side choices between two variants: how often ``a`` was chosen over ``b``."""

    a: str
    b: str
    cohort: str | None
    win_rate: stats.WinRate


class Pairwise(BaseModel):
    """Side-by-side results: win rates per pair of variants (overall and per cohort) and ratings."""

    pairs: list[PairStats]
    ratings: dict[str, stats.Rating] = Field(
        default_factory=dict, description="Bradley–Terry ratings, when more than two variants met."
    )


class Analysis(BaseModel):
    """A snapshot of an experiment's outcome so far."""

    experiment: str
    at: UtcTime
    metric: Metric
    direction: Direction
    variants: list[VariantStats]
    cohorts: list[VariantStats]
    srm: stats.SRMResult | None
    pairwise: Pairwise | None = None


class TimePoint(BaseModel):
    """A variant's primary metric from the start up to ``at``, with its 95% interval."""

    at: UtcTime
    n: int
    mean: float | None
    ci_low: float | None
    ci_high: float | None


class DifferencePoint(BaseModel):
    """A treatment minus the control up to ``at``, with the always-valid 95% confidence sequence."""

    at: UtcTime
    n: int
    effect: float
    cs_low: float
    cs_high: float


class Timeline(BaseModel):
    """The primary metric over time: cumulative per variant, and each treatment's difference."""

    experiment: str
    metric: Metric
    variants: dict[str, list[TimePoint]]
    differences: dict[str, list[DifferencePoint]]


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
