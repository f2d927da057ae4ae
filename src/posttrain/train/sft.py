"""Supervised fine-tuning on prompt–completion rows (TRL ``SFTTrainer``; loss on the completion only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from posttrain.project import Project
from posttrain.records import ModelRecord
from posttrain.train.runner import JobFn, ProgressFn, TrainConfig, TrainingRun, run_training

if TYPE_CHECKING:
    from transformers import Trainer

__all__ = ["SFTConfig", "build_sft_trainer", "train_sft"]


class SFTConfig(TrainConfig):
    """Settings for ``train_sft``: the shared ones plus packing."""

    packing: bool = Field(False, description="Pack several rows into one sequence of max_length tokens.")


def train_sft(
    project: Project, config: SFTConfig, *, on_progress: ProgressFn | None = None, on_job: JobFn | None = None
) -> ModelRecord:
    """Fine-tune ``config.model`` on an sft dataset version and register the result as ``config.output``."""
    return run_training(
        project,
        "sft",
        config,
        build_sft_trainer,
        on_progress,
        dataset_kind="sft",
        columns=("prompt", "completion"),
        on_job=on_job,
    )


def build_sft_trainer(run: TrainingRun) -> Trainer:
    """Return the TRL SFTTrainer for a prepared run (distillation reuses it)."""
    import trl

    assert isinstance(run.config, SFTConfig)
    args = trl.SFTConfig(**run.trainer_args(), max_length=run.config.max_length, packing=run.config.packing)
    return trl.SFTTrainer(
        model=run.model,
        args=args,
        train_dataset=run.rows,
        processing_class=run.tokenizer,
        peft_config=run.peft_config(),
    )
