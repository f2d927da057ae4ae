"""Longer GRPO/RLOO runs on tiny models: RLOO learns the toy task; GRPO with LoRA saves a merged model."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from posttrain.datasets import write_version
from posttrain.jobs import get_job
from posttrain.models.tiny import init_tiny
from posttrain.project import Project
from posttrain.records import ModelRecord
from posttrain.train.grpo import GRPOConfig, RLOOConfig, train_grpo, train_rloo

pytest.importorskip("trl")
pytestmark = pytest.mark.slow


def _toy(project: Project) -> None:
    """Sixteen prompts whose reward is 'the completion contains a 7': learnable from a random start."""
    table = pa.table(
        {
            "prompt": [[{"role": "user", "content": f"q{i}"}] for i in range(16)],
            "answer": ["7"] * 16,
            "verifier": ["contains"] * 16,
        }
    )
    write_version(project, "toy", "prompts", table, recipe={}, sources={})


def _mean_rewards(project: Project, record: ModelRecord) -> tuple[float, float]:
    rewards = [m["reward"] for m in get_job(project, record.run_id or "").metrics if "reward" in m]
    return sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5


def test_train_rloo_raises_row_verifier_reward(project: Project) -> None:
    init_tiny(project, "tiny", hidden=32, layers=2, heads=2)
    _toy(project)
    config = RLOOConfig(
        model="tiny",
        dataset="toy",
        output="tiny-rloo",
        batch_size=4,
        max_completion_length=8,
        max_steps=40,
        learning_rate=1e-2,
        logging_steps=1,
    )
    first, last = _mean_rewards(project, train_rloo(project, config))
    assert last > first + 0.3


def test_train_grpo_lora_saves_merged_model(project: Project) -> None:
    from safetensors.torch import load_file

    base = init_tiny(project, "tiny64", hidden=64, layers=2, heads=4)
    _toy(project)
    config = GRPOConfig(
        model="tiny64",
        dataset="toy",
        output="tiny64-grpo",
        reward=["verifier:contains"],
        batch_size=4,
        max_completion_length=8,
        max_steps=10,
        learning_rate=2e-2,
        logging_steps=1,
        lora=True,
        lora_r=8,
    )
    record = train_grpo(project, config)
    assert not (Path(record.path) / "adapter_config.json").exists()
    before = load_file(Path(base.path) / "model.safetensors")
    after = load_file(Path(record.path) / "model.safetensors")
    assert before.keys() == after.keys()
    name = "model.layers.1.mlp.down_proj.weight"
    assert (before[name] - after[name]).abs().max() > 1e-3
