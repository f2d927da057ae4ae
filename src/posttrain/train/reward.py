"""Reward models from preference pairs (TRL ``RewardTrainer``), with held-out pairwise accuracy recorded."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field, field_validator

from posttrain.project import Project
from posttrain.records import ModelRecord
from posttrain.train.runner import JobFn, ProgressFn, TrainConfig, TrainingRun, run_training

if TYPE_CHECKING:
    from transformers import PreTrainedModel, Trainer

__all__ = ["RewardConfig", "train_reward"]


class RewardConfig(TrainConfig):
    """Settings for ``train_reward``: the shared ones plus the held-out fraction."""

    trl_config: ClassVar[str] = "RewardConfig"
    trl_owned: ClassVar[frozenset[str]] = frozenset({"center_rewards_coefficient", "eval_strategy"})

    learning_rate: float = Field(1e-3, description="Peak learning rate (the score head starts random).")
    eval_fraction: float = Field(0.2, description="Fraction of pairs held out to measure pairwise accuracy.")
    center_rewards: float | None = Field(None, description="Weight of the term pulling rewards' mean to 0.")

    @field_validator("eval_fraction")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0 <= value < 1:
            raise ValueError("must be in [0, 1); e.g. --eval-fraction 0.2, or 0 to train on every pair")
        return value


def train_reward(
    project: Project, config: RewardConfig, *, on_progress: ProgressFn | None = None, on_job: JobFn | None = None
) -> ModelRecord:
    """Train a reward model on a preference dataset version; register it as kind ``reward-model``.

    The registered metrics hold ``eval_accuracy``: how often the held-out chosen answer scores higher.
    """
    return run_training(
        project,
        "reward",
        config,
        _build_trainer,
        on_progress,
        dataset_kind="preference",
        columns=("prompt", "chosen", "rejected"),
        model_kind="reward-model",
        load_model=_load_scorer,
        on_job=on_job,
    )


def _load_scorer(path: str) -> PreTrainedModel:
    import torch
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)


def _build_trainer(run: TrainingRun) -> Trainer:
    import trl

    config = run.config
    assert isinstance(config, RewardConfig)
    train, held_out = run.rows, None
    if config.eval_fraction > 0 and len(run.rows) >= 5:
        split = run.rows.train_test_split(test_size=config.eval_fraction, seed=config.seed)
        train, held_out = split["train"], split["test"]
        run.metrics["eval_pairs"] = len(held_out)
    args = trl.RewardConfig(
        **run.trainer_args(),
        max_length=config.max_length,
        center_rewards_coefficient=config.center_rewards,
        eval_strategy="no",  # evaluated once, at the end, by run_training
    )
    return trl.RewardTrainer(
        model=run.model,
        args=args,
        train_dataset=train,
        eval_dataset=held_out,
        processing_class=run.tokenizer,
        peft_config=run.peft_config("SEQ_CLS"),
    )
