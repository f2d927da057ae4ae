"""trainer_args: more TRL/Transformers training arguments in a config, checked against the TRL config's fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from posttrain.datasets import write_version
from posttrain.errors import InvalidInput
from posttrain.models.registry import register_model
from posttrain.project import Project
from posttrain.train.dpo import DPOConfig
from posttrain.train.runner import TrainConfig, TrainingRun, load_config, parse_config
from posttrain.train.sft import SFTConfig, train_sft

pytest.importorskip("trl")
BASE = {"model": "m", "dataset": "d", "output": "o"}


def test_trainer_args_accepts_trl_fields(tmp_path: Path) -> None:
    yaml = tmp_path / "sft.yaml"
    yaml.write_text("model: m\ndataset: d\noutput: o\ntrainer_args:\n  gradient_accumulation_steps: 2\n"
                    "  lr_scheduler_type: cosine\n  weight_decay: 0.01\n  report_to: none\n")  # fmt: skip
    config = load_config(SFTConfig, yaml)
    assert config.trainer_args == {
        "gradient_accumulation_steps": 2, "lr_scheduler_type": "cosine", "weight_decay": 0.01, "report_to": "none"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("cls", "args", "message"),
    [
        (SFTConfig, {"gradient_acumulation_steps": 2}, "'gradient_acumulation_steps' is not a field of trl.SFTConfig"),
        (SFTConfig, {"output_dir": "x"}, "'output_dir' is set by posttrain itself; remove it"),
        (SFTConfig, {"learning_rate": 0.1}, "use the 'learning_rate' setting instead"),
        (SFTConfig, {"max_length": 8}, "use the 'max_length' setting instead"),
        (DPOConfig, {"loss_type": ["ipo"]}, "'loss_type' is set by posttrain itself"),
    ],
)
def test_trainer_args_refuses_unknown_and_owned_names(
    cls: type[TrainConfig], args: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        parse_config(cls, {**BASE, "trainer_args": args})
    assert caught.value.exit_code == 2 and caught.value.message.startswith("trainer_args: ")


def test_trainer_args_reach_the_trainer(project: Project, tiny_model: Path) -> None:
    register_model(project, "m", tiny_model)
    rows = [{"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "yo"}]}] * 8
    write_version(project, "d", "sft", pa.Table.from_pylist(rows), recipe={}, sources={})
    extra = {"gradient_accumulation_steps": 2, "lr_scheduler_type": "constant", "weight_decay": 0.05}
    config = SFTConfig(**BASE, max_steps=1, batch_size=2, device="cpu", trainer_args=extra)
    record = train_sft(project, config)
    assert record.recipe["config"]["trainer_args"] == extra
    assert record.metrics["step"] == 1


def test_trainer_args_override_posttrain_defaults(project: Project, tmp_path: Path) -> None:
    config = SFTConfig(
        **BASE, device="cpu", trainer_args={"report_to": "tensorboard", "gradient_accumulation_steps": 4}
    )
    run = TrainingRun(project, config, None, None, None, tmp_path)  # type: ignore[arg-type]  # args need none
    args = run.trainer_args()
    assert args["report_to"] == "tensorboard" and args["gradient_accumulation_steps"] == 4
    assert args["output_dir"] == str(tmp_path)


def test_loop_stages_take_training_settings(tmp_path: Path) -> None:
    from posttrain.loop.recipe import load_recipe

    yaml = tmp_path / "loop.yaml"
    yaml.write_text(
        "name: l\ndpo:\n  train: {lora: true, loss: ipo, guard_probes: 4, trainer_args: {warmup_steps: 2}}\n"
    )
    assert load_recipe(yaml).dpo.train["trainer_args"] == {"warmup_steps": 2}


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"trainer_args": {"bogus": 1}}, "'bogus' is not a field of trl.SFTConfig"),
        ({"learning_rate": 0.1}, "train.learning_rate is set by the loop or by the stage's own setting"),
        ({"output": "x"}, "train.output is set by the loop"),
    ],
)
def test_loop_stage_training_settings_are_checked(tmp_path: Path, train: dict[str, Any], message: str) -> None:
    from posttrain.loop.recipe import SFTStage

    with pytest.raises(ValueError, match=message):
        SFTStage(train=train)
