"""Longer SFT/reward/DPO runs on tiny models: LoRA merges, IPO with an NLL term, an unguarded collapse, the CLI."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from posttrain.datasets import write_version
from posttrain.jobs import get_job
from posttrain.models.registry import register_model
from posttrain.project import Project
from posttrain.records import ModelRecord
from posttrain.train.dpo import DPOConfig, train_dpo
from posttrain.train.reward import RewardConfig, train_reward
from posttrain.train.sft import SFTConfig, train_sft

pytest.importorskip("trl")
pytestmark = pytest.mark.slow

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def spell_pairs(n: int, *, seed: int = 0, capitals: bool = False) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        d = rng.randrange(10)
        bad = WORDS[d].upper() if capitals else WORDS[(d + rng.randrange(1, 10)) % 10]
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"spell {d}"}],
                "chosen": [{"role": "assistant", "content": WORDS[d]}],
                "rejected": [{"role": "assistant", "content": bad}],
            }
        )
    return rows


@pytest.fixture
def speller(project: Project, tiny_model: Path) -> ModelRecord:
    """The tiny model after SFT on the spell task, registered as 'speller'."""
    import torch

    torch.set_num_threads(1)
    register_model(project, "base", tiny_model)
    rows = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in spell_pairs(200)]
    write_version(project, "spell", "sft", pa.Table.from_pylist(rows), recipe={}, sources={})
    write_version(project, "pairs", "preference", pa.Table.from_pylist(spell_pairs(200, seed=1)), recipe={}, sources={})
    config = SFTConfig(model="base", dataset="spell", output="speller", epochs=3, learning_rate=3e-3, batch_size=16)
    return train_sft(project, config)


def job_series(project: Project, record: ModelRecord, key: str) -> list[float]:
    return [m[key] for m in get_job(project, record.run_id or "").metrics if key in m]


def test_train_sft_with_lora_saves_a_merged_model(project: Project, speller: ModelRecord) -> None:
    from safetensors import safe_open

    config = SFTConfig(
        model="speller", dataset="spell", output="lora", epochs=2, learning_rate=3e-3, batch_size=16, lora=True
    )

    record = train_sft(project, config)

    with safe_open(str(Path(record.path) / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "lora" in k]  # noqa: SIM118 (not a dict)
    losses = job_series(project, record, "loss")
    assert losses[-1] < losses[0]


def test_train_dpo_without_guard_collapses_for_real(project: Project, speller: ModelRecord) -> None:
    config = DPOConfig(
        model="speller",
        dataset="pairs",
        output="hot",
        epochs=3,
        learning_rate=2e-3,
        batch_size=16,
        logging_steps=2,
        guard=False,
    )

    record = train_dpo(project, config)

    chosen, margins = job_series(project, record, "logps/chosen"), job_series(project, record, "rewards/margins")
    assert chosen[-1] < chosen[0] - 10 and margins[-1] > margins[0]  # displacement: margin bought by unlikelihood
    assert "guard" not in record.metrics


def test_train_dpo_ipo_with_sft_term_raises_margin(project: Project, speller: ModelRecord) -> None:
    config = DPOConfig(
        model="speller",
        dataset="pairs",
        output="ipo",
        epochs=3,
        learning_rate=1e-4,
        batch_size=16,
        logging_steps=2,
        loss="ipo",
        sft_weight=1.0,
    )

    record = train_dpo(project, config)

    margins = job_series(project, record, "rewards/margins")
    assert margins[-1] > margins[0] and record.metrics["guard"]["tripped"] is False
    assert record.recipe["config"]["loss"] == "ipo"


def test_train_reward_with_lora_ranks_pairs(project: Project, tiny_model: Path) -> None:
    register_model(project, "base", tiny_model)
    table = pa.Table.from_pylist(spell_pairs(250, capitals=True))
    write_version(project, "caps", "preference", table, recipe={}, sources={})
    config = RewardConfig(
        model="base", dataset="caps", output="rm", epochs=3, learning_rate=3e-3, batch_size=16, lora=True
    )

    record = train_reward(project, config)

    assert record.kind == "reward-model" and record.metrics["eval_accuracy"] > 0.6


def test_cli_bad_config_prints_one_line_and_exits_2(project: Project, tmp_path: Path) -> None:
    config = tmp_path / "dpo.yaml"
    config.write_text("model: m\ndataset: d\noutput: o\n")
    root = project.root
    project.close()
    cmd = [
        sys.executable,
        "-m",
        "posttrain",
        "train",
        "dpo",
        "-c",
        str(config),
        "--learning-rate",
        "5",
        "-p",
        str(root),
    ]

    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: learning_rate: must be in (0, 1]; typical values are 1e-5 to 1e-3, e.g. --learning-rate 1e-4"
    ]
