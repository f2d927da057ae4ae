"""Online RL from rewards: GRPO and RLOO on TRL, over a ``prompts`` dataset.

Each step takes ``batch_size`` prompts, samples ``num_generations`` completions for each and scores
them with the ``reward`` specs (see ``posttrain.train.rewards``: verifiers against the row's ``answer``,
reward models, Python functions). GRPO normalises rewards within each prompt's group; RLOO uses
the mean of the other completions as the baseline, with a KL penalty to the start model (``beta``).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator

from posttrain.errors import InvalidInput
from posttrain.project import Project
from posttrain.records import ModelRecord
from posttrain.train.rewards import Rewards, build_rewards, parse_reward_spec
from posttrain.train.runner import JobFn, ProgressFn, TrainConfig, TrainingRun, run_training

if TYPE_CHECKING:
    from transformers import Trainer

__all__ = ["GRPOConfig", "RLOOConfig", "train_grpo", "train_rloo"]


class _SampledRewardConfig(TrainConfig):
    """What GRPO and RLOO share: rewards and how completions are sampled."""

    trl_owned: ClassVar[frozenset[str]] = frozenset({"reward_weights"})  # from the rewards given

    reward: list[str] = Field(
        default_factory=lambda: ["verifier:row"],
        description="A reward spec, repeatable: verifier:NAME, model:NAME or function:NAME (in [functions.rewards]), "
        "each optionally @WEIGHT; the default, verifier:row, scores each row with its own 'verifier' column.",
    )
    batch_size: int = Field(8, description="Prompts per device per step (each gives num_generations completions).")
    learning_rate: float = Field(5e-5, description="Peak learning rate.")
    num_generations: int = Field(8, description="Completions sampled per prompt (the group).")
    max_completion_length: int = Field(32, description="Most new tokens per completion.")
    temperature: float = Field(1.0, description="Sampling temperature for the completions.")
    beta: float = Field(0.0, description="KL coefficient to the start model; 0 loads no reference model.")

    @field_validator("reward")
    @classmethod
    def _specs(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one reward, such as verifier:exact_match")
        for spec in value:
            try:
                parse_reward_spec(spec)
            except InvalidInput as exc:
                raise ValueError(exc.message) from None
        return value

    @field_validator("num_generations")
    @classmethod
    def _group(cls, value: int) -> int:
        if value < 2:
            raise ValueError("must be at least 2: the baseline compares completions of the same prompt")
        return value

    @field_validator("max_completion_length")
    @classmethod
    def _length(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be > 0; sampling needs variety, e.g. --temperature 1.0")
        return value


class GRPOConfig(_SampledRewardConfig):
    """Settings for ``train_grpo``."""

    trl_config: ClassVar[str] = "GRPOConfig"


class RLOOConfig(_SampledRewardConfig):
    """Settings for ``train_rloo``."""

    trl_config: ClassVar[str] = "RLOOConfig"

    beta: float = Field(0.05, description="KL coefficient to the start model (RLOO folds it into the reward).")


def _sampling_args(run: TrainingRun, rewards: Rewards) -> dict[str, Any]:
    cfg = run.config
    assert isinstance(cfg, _SampledRewardConfig)
    completions = cfg.batch_size * cfg.num_generations  # TRL's batch sizes count completions
    return {
        **run.trainer_args(),
        "per_device_train_batch_size": completions,
        "per_device_eval_batch_size": completions,
        "num_generations": cfg.num_generations,
        "max_completion_length": cfg.max_completion_length,
        "temperature": cfg.temperature,
        "beta": cfg.beta,
        "reward_weights": rewards.weights,
    }


def _build_grpo(run: TrainingRun, rewards: Rewards) -> Trainer:
    import trl

    return trl.GRPOTrainer(
        model=run.model,
        reward_funcs=rewards.funcs,
        args=trl.GRPOConfig(**_sampling_args(run, rewards)),
        train_dataset=run.rows,
        processing_class=run.tokenizer,
        reward_processing_classes=rewards.processing_classes,
        peft_config=run.peft_config(),
    )


def _build_rloo(run: TrainingRun, rewards: Rewards) -> Trainer:
    import trl

    return trl.RLOOTrainer(
        model=run.model,
        reward_funcs=rewards.funcs,
        args=trl.RLOOConfig(**_sampling_args(run, rewards)),
        train_dataset=run.rows,
        processing_class=run.tokenizer,
        reward_processing_classes=rewards.processing_classes,
        peft_config=run.peft_config(),
    )


def train_grpo(
    project: Project, config: GRPOConfig, *, on_progress: ProgressFn | None = None, on_job: JobFn | None = None
) -> ModelRecord:
    """Train ``config.model`` with GRPO on a prompts dataset; register and return the result."""
    rewards = build_rewards(project, config.reward)  # a bad reward fails here, before a job exists
    build = partial(_build_grpo, rewards=rewards)
    return run_training(project, "grpo", config, build, on_progress, dataset_kind="prompts", on_job=on_job)


def train_rloo(
    project: Project, config: RLOOConfig, *, on_progress: ProgressFn | None = None, on_job: JobFn | None = None
) -> ModelRecord:
    """Train ``config.model`` with RLOO on a prompts dataset; register and return the result."""
    rewards = build_rewards(project, config.reward)
    build = partial(_build_rloo, rewards=rewards)
    return run_training(project, "rloo", config, build, on_progress, dataset_kind="prompts", on_job=on_job)
