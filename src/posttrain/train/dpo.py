"""Direct preference optimisation (TRL ``DPOTrainer``) with an optional NLL term and the collapse guard."""

from __future__ import annotations

import copy
import random
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, field_validator

from posttrain.project import Project
from posttrain.records import ModelRecord
from posttrain.train.runner import JobFn, ProgressFn, TrainConfig, TrainingRun, run_training

if TYPE_CHECKING:
    from transformers import Trainer, TrainerCallback

__all__ = ["DPOConfig", "train_dpo"]


class DPOConfig(TrainConfig):
    """Settings for ``train_dpo``: the shared ones, the loss, and the collapse guard's thresholds."""

    trl_config: ClassVar[str] = "DPOConfig"
    trl_owned: ClassVar[frozenset[str]] = frozenset({"loss_type", "loss_weights"})  # from loss and sft_weight

    learning_rate: float = Field(5e-6, description="Peak learning rate; DPO collapses quickly when it is too high.")
    beta: float = Field(0.1, description="Strength of the pull towards the reference model (tau for ipo).")
    loss: Literal["sigmoid", "ipo"] = Field("sigmoid", description="sigmoid (DPO) or ipo (no margin saturation).")
    sft_weight: float = Field(0.0, description="Weight of an NLL term on the chosen answers (RPO); 0 turns it off.")
    guard: bool = Field(True, description="Stop on collapse and keep the best weights (see posttrain.train.guards).")
    guard_logp_drop: float = Field(5.0, description="Nats logps/chosen may fall below its start while margins rise.")
    guard_length_growth: float = Field(0.5, description="Relative growth of probe answer length that trips it.")
    guard_saturation: float = Field(0.1, description="Trip if accuracies hit 1.0 within this fraction of steps.")
    guard_saturation_margin: float = Field(
        1.0, description="Reward margin that counts as saturated (with accuracy 1.0)."
    )
    guard_probes: int = Field(8, description="Prompts from the dataset used to probe generation length.")

    @field_validator("beta", "guard_logp_drop", "guard_length_growth", "guard_saturation_margin")
    @classmethod
    def _positive_float(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be > 0")
        return value

    @field_validator("sft_weight", "guard_saturation")
    @classmethod
    def _non_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must be >= 0 (0 turns it off)")
        return value

    @field_validator("guard_probes")
    @classmethod
    def _probes(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be >= 0 (0 turns the length probe off)")
        return value


def train_dpo(
    project: Project, config: DPOConfig, *, on_progress: ProgressFn | None = None, on_job: JobFn | None = None
) -> ModelRecord:
    """Align ``config.model`` on a preference dataset version with DPO; register it as ``config.output``.

    With ``guard`` on, a collapsing run is stopped and the best weights are registered; the
    registered metrics then hold ``guard: {"tripped": true, "reason": ...}``.
    """
    return run_training(
        project,
        "dpo",
        config,
        _build_trainer,
        on_progress,
        dataset_kind="preference",
        columns=("prompt", "chosen", "rejected"),
        on_job=on_job,
    )


def _build_trainer(run: TrainingRun) -> Trainer:
    import trl

    config = run.config
    assert isinstance(config, DPOConfig)
    losses: list[str] = [config.loss]
    weights = [1.0]
    if config.sft_weight > 0:
        losses, weights = [config.loss, "sft"], [1.0, config.sft_weight]
    args = trl.DPOConfig(
        **run.trainer_args(),
        max_length=config.max_length,
        beta=config.beta,
        loss_type=losses,
        loss_weights=weights,
    )
    peft = run.peft_config()
    # Without an explicit reference TRL reloads it from disk; with LoRA the adapter-free model is the reference.
    ref_model = None if peft is not None else copy.deepcopy(run.model)
    return trl.DPOTrainer(
        model=run.model,
        ref_model=ref_model,
        args=args,
        train_dataset=run.rows,
        processing_class=run.tokenizer,
        peft_config=peft,
        callbacks=[_guard(run, config)] if config.guard else None,
    )


def _guard(run: TrainingRun, config: DPOConfig) -> TrainerCallback:
    from posttrain.train.guards import CollapseGuard

    prompts = list(run.rows["prompt"])
    probes = random.Random(config.seed).sample(prompts, min(config.guard_probes, len(prompts)))
    longest = max(len(run.tokenizer(m[0]["content"])["input_ids"]) for m in run.rows["chosen"])
    guard = CollapseGuard(
        run.job,
        run.tokenizer,
        probes,
        logp_drop=config.guard_logp_drop,
        length_growth=config.guard_length_growth,
        saturation_fraction=config.guard_saturation,
        saturation_margin=config.guard_saturation_margin,
        probe_tokens=min(2 * longest + 4, config.max_length),
    )
    run.metrics["guard"] = guard.report  # filled in as training runs; dumped by run_training
    return guard
