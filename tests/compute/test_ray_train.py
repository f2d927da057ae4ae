"""Training on Ray Train: the session's loopback cluster (two nodes of 1 CPU), two data-parallel workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import use_ray
from posttrain.jobs import get_job
from posttrain.models.registry import get_model, register_model
from posttrain.project import Project, open_project
from posttrain.train.dpo import DPOConfig, train_dpo
from posttrain.train.sft import SFTConfig, train_sft
from test_train import spell_rows, write_pairs, write_sft

pytest.importorskip("ray")
pytest.importorskip("trl")
pytestmark = pytest.mark.slow


def losses(metrics: list[dict[str, Any]]) -> list[float]:
    return [point["loss"] for point in metrics if "loss" in point]


def test_train_sft_on_two_ray_workers_registers_a_model_that_generates(
    project: Project, ray_cluster: Any, tiny_model: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = register_model(project, "base", tiny_model)
    write_sft(project, spell_rows(64))
    config = SFTConfig(
        model="base", dataset="spell", output="ray-sft", max_steps=8, learning_rate=3e-3, batch_size=4,
        logging_steps=2, save_steps=4, workers=2,
    )  # fmt: skip
    local = train_sft(project, config.model_copy(update={"output": "here", "max_steps": 1, "workers": None}))
    use_ray(project, ray_cluster.address)

    record = train_sft(project, config)

    job = get_job(project, record.run_id or "")
    assert job.state == "succeeded"
    assert "ray: 2 workers, gloo" in job.log
    loss = losses(job.metrics)
    assert len(loss) >= 3 and loss[0] > loss[-1]
    assert job.checkpoint and job.checkpoint.endswith("checkpoint-8") and Path(job.checkpoint).is_dir()
    assert record.dataset_versions == local.dataset_versions == ["spell@1"]
    assert (record.kind, record.base, record.parent_id) == (local.kind, local.base, local.parent_id) == (
        "causal-lm", "base", base.id
    )  # fmt: skip
    assert record.metrics["train_loss"] > 0
    tokenizer = AutoTokenizer.from_pretrained(record.path)
    model = AutoModelForCausalLM.from_pretrained(record.path)
    out = model.generate(**tokenizer("spell 3", return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape[1] > 0


def test_cli_train_sft_workers_on_ray(
    project: Project, ray_cluster: Any, tiny_model: Path, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from posttrain.cli import app

    register_model(project, "base", tiny_model)
    write_sft(project, spell_rows(16))
    root = project.root
    project.close()
    env = {"POSTTRAIN_COMPUTE_BACKEND": "ray", "POSTTRAIN_COMPUTE_ADDRESS": ray_cluster.address}
    args = ["train", "sft", "--model", "base", "--dataset", "spell", "--output", "cli-ray", "--max-steps", "2"]

    result = cli.invoke(app, [*args, "--workers", "2", "--project", str(root)], env=env)

    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].startswith("registered causal-lm cli-ray (job ")
    assert "ray" not in result.output.lower().replace("cli-ray", "")  # none of the cluster's own chatter
    with open_project(root) as proj:
        job = get_job(proj, get_model(proj, "cli-ray").run_id or "")
        assert job.config["workers"] == 2 and "ray: 2 workers" in job.log


def test_train_dpo_on_two_ray_workers_with_the_guard(ray_project: Project, tiny_model: Path) -> None:
    register_model(ray_project, "base", tiny_model)
    write_pairs(ray_project, spell_rows(32))
    config = DPOConfig(model="base", dataset="pairs", output="ray-dpo", max_steps=4, batch_size=4, logging_steps=1)
    config = config.model_copy(update={"workers": 2, "guard_probes": 2})

    record = train_dpo(ray_project, config)

    job = get_job(ray_project, record.run_id or "")
    assert job.state == "succeeded" and "ray: 2 workers" in job.log
    assert isinstance(record.metrics["guard"], dict) and "tripped" in record.metrics["guard"]
    assert any("rewards/margins" in point for point in job.metrics)

