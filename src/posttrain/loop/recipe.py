"""Loop recipes: which stages a turn runs, their settings, the gate and the experiment (YAML).

A recipe names the cohorts the product serves (free text, as the gateway receives them) and the
model name the product asks for (``requested_model``; the loop keeps one route per cohort from
that name to the cohort's serving model). Every stage has a default that works on the tiny models
of the demo; a YAML file overrides any of them, e.g.::

    name: sft-dpo
    grpo: {enabled: false}
    dpo: {learning_rate: 1.0e-5, train: {lora: true, loss: ipo, trainer_args: {warmup_steps: 2}}}
    eval: {dataset: suite, margin: 0.03}

A training stage's ``train`` mapping sets any other setting of its method's config (``posttrain
train METHOD --help``), ``trainer_args`` included; it is checked when the recipe loads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from posttrain.curation.config import CurationConfig
from posttrain.errors import InvalidInput
from posttrain.evals.scorers import check_scorer_name
from posttrain.evals.verifiers import check_verifier_name
from posttrain.experiments.records import Guardrail, Metric
from posttrain.loop.names import Cohort
from posttrain.names import Name
from posttrain.train.rewards import parse_reward_spec
from posttrain.validation import invalid_input


class _Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True


class _TrainingStage(_Stage):
    method: ClassVar[str]
    train: dict[str, Any] = Field(
        default_factory=dict,
        description="More settings of the stage's training config (lora, max_length, loss, guard_*, trainer_args ...).",
    )

    @model_validator(mode="after")
    def _train_settings(self) -> Self:
        from posttrain.train.methods import METHODS
        from posttrain.train.runner import parse_config

        taken = sorted(self.train.keys() & {"model", "dataset", "output", "seed", "resume", *type(self).model_fields})
        if taken:
            raise ValueError(f"train.{taken[0]} is set by the loop or by the stage's own setting; remove it from train")
        try:
            parse_config(METHODS[self.method][0], {"model": "m", "dataset": "d", "output": "o", **self.train})
        except InvalidInput as exc:
            raise ValueError(f"train.{exc.message}") from None
        return self


class SFTStage(_TrainingStage):
    """Fine-tune on accepted and edited answers of the turn's window."""

    method = "sft"

    learning_rate: float = Field(1e-4, gt=0)
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(32, ge=1)
    min_rows: int = Field(20, ge=1, description="Skip the stage with fewer rows than this.")


class RewardStage(_TrainingStage):
    """Retrain the reward model when enough new preference pairs came in."""

    method = "reward"

    learning_rate: float = Field(1e-3, gt=0)
    epochs: float = Field(2.0, gt=0)
    batch_size: int = Field(32, ge=1)
    min_pairs: int = Field(50, ge=2, description="New pairs needed to retrain it.")


class DPOStage(_TrainingStage):
    """Preference-tune on the turn's pairs (collapse guard on)."""

    method = "dpo"

    learning_rate: float = Field(2e-5, gt=0)
    epochs: float = Field(2.0, gt=0)
    beta: float = Field(0.1, gt=0)
    batch_size: int = Field(32, ge=1)
    min_pairs: int = Field(20, ge=1)


def _no_code(check: Callable[[str], object], value: str) -> None:
    """Run a name check from the stage that owns it, as a validation error (module paths never pass)."""
    try:
        check(value)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


class GRPOStage(_TrainingStage):
    """Reinforce with verifiers (or the reward model) on the turn's prompts."""

    method = "grpo"

    reward: list[str] = Field(
        default_factory=lambda: ["verifier:row"],
        max_length=16,
        description="Reward specs as for 'posttrain train grpo'; 'reward-model' means the latest one.",
    )
    verifier: str | None = Field(None, description="Verifier stored on each prompt row (for verifier:row).")

    @field_validator("reward")
    @classmethod
    def _reward_specs(cls, value: list[str]) -> list[str]:
        for spec in value:
            if spec != "reward-model":
                _no_code(parse_reward_spec, spec)
        return value

    @field_validator("verifier")
    @classmethod
    def _verifier_name(cls, value: str | None) -> str | None:
        if value is not None:
            _no_code(check_verifier_name, value)
        return value

    learning_rate: float = Field(5e-5, gt=0)
    max_steps: int = Field(10, ge=1)
    batch_size: int = Field(8, ge=1, description="Prompts per step.")
    num_generations: int = Field(8, ge=2)
    max_completion_length: int = Field(32, ge=1)
    min_prompts: int = Field(16, ge=1)


class SpecialiseStage(_Stage):
    """A cohort's own model: the candidate fine-tuned further on that cohort's accepted answers."""

    history: Literal["window", "all"] = Field(
        "all", description="The cohort's answers of this turn's window only, or of every turn so far."
    )
    dedupe: bool = Field(
        False, description="One row per identical (prompt, answer); off, it weighs as often as users accepted it."
    )
    learning_rate: float = Field(1e-4, gt=0)
    epochs: float = Field(2.0, gt=0)
    batch_size: int = Field(32, ge=1)
    min_rows: int = Field(10, ge=1)
    dpo_learning_rate: float | None = Field(
        None, gt=0, description="Then DPO on the cohort's preference pairs at this rate (none: no DPO)."
    )
    min_pairs: int = Field(10, ge=1, description="Pairs the cohort's DPO needs.")
    grpo_steps: int = Field(0, ge=0, description="Then GRPO on the cohort's prompts for this many steps (0: none).")
    grpo_learning_rate: float = Field(5e-5, gt=0)
    curate: CurationConfig | None = Field(
        None, description="The cohort's own curation recipe (default: the recipe's curate; strict for minors)."
    )


class EvalStage(_Stage):
    """The suite the gate runs: an eval dataset and scorers; the gate's margin and rule."""

    dataset: str | None = Field(None, description="An eval dataset version (NAME or NAME@V); none skips the gate.")
    scorers: list[str] = Field(default_factory=lambda: ["exact_match"], min_length=1, max_length=16)
    samples: int = Field(2, ge=1)

    @field_validator("scorers")
    @classmethod
    def _scorer_names(cls, value: list[str]) -> list[str]:
        for name in value:
            _no_code(check_scorer_name, name)
        return value

    temperature: float = Field(1.0, ge=0)
    max_new_tokens: int = Field(32, ge=1)
    margin: float = Field(0.03, ge=0, description="How much worse than serving, overall or in a cohort, still passes.")
    rule: Literal["ci", "mean"] = Field("mean", description="Judge the mean difference or its lower CI bound.")


class ExperimentStage(_Stage):
    """The live A/B test of the candidate against each cohort's serving model."""

    metric: Metric = "thumbs_up_rate"
    guardrails: list[Guardrail] = Field(default_factory=list)
    treatment_share: float = Field(0.5, gt=0, lt=1)
    min_samples: int = Field(100, ge=2)
    alpha: float = Field(0.05, gt=0, lt=1)
    max_wait_seconds: float = Field(900, gt=0, description="How long to wait for traffic before deciding anyway.")
    promote_if_not_worse: bool = Field(
        False, description="Promote a gated candidate the test cannot tell apart from serving (no significant loss)."
    )


class AnnotateStage(_Stage):
    """Ask people (and trusted judges) for labels on the window's most valuable interactions.

    The step fills a queue by active selection with ``budget`` items, lets the turn's annotators
    label them (simulated ones in the demo and benchmark; people through ``/ui/annotate`` or the
    API, for up to ``max_wait_seconds``), and the consensus lands as annotator (or judge) feedback
    that the ``datasets`` step reads like any other.
    """

    enabled: bool = Field(False, description="Off by default: a turn then uses the feedback users gave.")
    queue: Name | None = Field(None, description="The queue to fill (default: LOOP-annotate, created if missing).")
    task: Literal["accept", "rating"] = Field("accept", description="What annotators are asked of each answer.")
    budget: int = Field(100, ge=1, le=100_000, description="Items a turn asks people about.")
    overlap: int = Field(1, ge=1, le=10, description="Distinct annotators per item.")
    judges: list[Name] = Field(
        default_factory=list, max_length=10, description="Judges of posttrain.toml [annotate.judges] that pre-label."
    )
    max_wait_seconds: float = Field(0, ge=0, le=7 * 86_400, description="How long to wait for people to label.")


class Recipe(BaseModel):
    """A whole turn: cohorts, stages, the gate and the experiment."""

    model_config = ConfigDict(extra="forbid")

    name: Name = "default"
    requested_model: str = Field(
        "assistant", max_length=512, description="The model name the product asks the gateway for."
    )
    cohorts: list[Cohort] = Field(
        default_factory=lambda: ["adult", "minor"],
        min_length=1,
        max_length=64,
        description="The cohorts the product serves, as the gateway receives them (free text, 1-128 characters).",
    )
    min_feedback: int = Field(20, ge=0, description="Feedback events a turn needs in its window.")
    seed: int = 0
    curate: CurationConfig | None = Field(
        None,
        description="Curation of every dataset the turn builds (dedup, decontaminate, quality, safety, select; "
        "see 'posttrain datasets build --curate'); none: PII regexes and consensus only.",
    )
    annotate: AnnotateStage = Field(default_factory=AnnotateStage)
    sft: SFTStage = Field(default_factory=SFTStage)
    reward: RewardStage = Field(default_factory=RewardStage)
    dpo: DPOStage = Field(default_factory=DPOStage)
    grpo: GRPOStage = Field(default_factory=GRPOStage)
    specialise: dict[Cohort, SpecialiseStage] = Field(
        default_factory=dict, description="Per-cohort extra SFT, e.g. {minor: {epochs: 2}}."
    )
    eval: EvalStage = Field(default_factory=EvalStage)
    experiment: ExperimentStage = Field(default_factory=ExperimentStage)


def load_recipe(path: Path | None = None, **overrides: Any) -> Recipe:
    """Read a recipe from YAML (or the default) and apply overrides; raise InvalidInput naming the field."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise InvalidInput(f"recipe {path} does not exist", field="recipe") from None
        except yaml.YAMLError as exc:
            raise InvalidInput(f"recipe {path} is not valid YAML: {exc}", field="recipe") from None
        if not isinstance(loaded, dict):
            raise InvalidInput(f"recipe {path} must be a mapping of stage names to settings", field="recipe")
        data = loaded
    data |= {k: v for k, v in overrides.items() if v is not None}
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise invalid_input(exc, prefix="recipe ") from None
