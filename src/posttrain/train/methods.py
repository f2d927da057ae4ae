"""Every training method by name: its typed config and its function (no torch imported here)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from posttrain.train.distill import DistillConfig, train_distill
from posttrain.train.dpo import DPOConfig, train_dpo
from posttrain.train.grpo import GRPOConfig, RLOOConfig, train_grpo, train_rloo
from posttrain.train.reward import RewardConfig, train_reward
from posttrain.train.runner import TrainConfig
from posttrain.train.sft import SFTConfig, train_sft

METHODS: dict[str, tuple[type[TrainConfig], Callable[..., Any]]] = {
    "sft": (SFTConfig, train_sft),
    "reward": (RewardConfig, train_reward),
    "dpo": (DPOConfig, train_dpo),
    "grpo": (GRPOConfig, train_grpo),
    "rloo": (RLOOConfig, train_rloo),
    "distill": (DistillConfig, train_distill),
}
