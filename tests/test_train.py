"""SFT, reward models and DPO on tiny real models: real TRL steps, the job row, lineage, the guard, errors."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from posttrain.datasets import write_version
from posttrain.errors import Conflict, InvalidInput, JobFailed, NotFound, PosttrainError
from posttrain.jobs import get_job, list_jobs
from posttrain.models.registry import get_model, list_models, register_model
from posttrain.project import Project, init_project
from posttrain.records import DatasetVersion, ModelRecord
from posttrain.train.dpo import DPOConfig, train_dpo
from posttrain.train.reward import RewardConfig, train_reward
from posttrain.train.runner import load_config, parse_config
from posttrain.train.sft import SFTConfig, train_sft

pytest.importorskip("trl")

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def spell_rows(n: int, *, seed: int = 0, rejected: str = "wrong-word") -> list[dict[str, Any]]:
    """``spell 3`` -> ``three``; rejected is another number's word, or the answer in capitals."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        d = rng.randrange(10)
        bad = WORDS[d].upper() if rejected == "capitals" else WORDS[(d + rng.randrange(1, 10)) % 10]
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"spell {d}"}],
                "chosen": [{"role": "assistant", "content": WORDS[d]}],
                "rejected": [{"role": "assistant", "content": bad}],
            }
        )
    return rows


def write_sft(project: Project, rows: list[dict[str, Any]], name: str = "spell") -> DatasetVersion:
    table = pa.Table.from_pylist([{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows])
    return write_version(project, name, "sft", table, recipe={"test": True}, sources={})


def write_pairs(project: Project, rows: list[dict[str, Any]], name: str = "pairs") -> DatasetVersion:
    return write_version(project, name, "preference", pa.Table.from_pylist(rows), recipe={"test": True}, sources={})


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def base(project: Project, tiny_model: Path) -> ModelRecord:
    return register_model(project, "base", tiny_model)


@pytest.fixture(scope="module")
def spell_model(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """The tiny model after SFT on the spell task: the starting point for DPO (built once)."""
    with init_project(tmp_path_factory.mktemp("sft") / "proj") as proj:
        register_model(proj, "base", tiny_model)
        write_sft(proj, spell_rows(200))
        config = SFTConfig(model="base", dataset="spell", output="speller", epochs=3, learning_rate=3e-3, batch_size=16)
        return Path(train_sft(proj, config).path)


@pytest.fixture
def speller(project: Project, spell_model: Path) -> ModelRecord:
    return register_model(project, "speller", spell_model)


def chosen_logp(model_path: str, rows: list[dict[str, Any]]) -> float:
    """Return the mean summed log-probability of the chosen answers under a model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    total = 0.0
    for row in rows:
        prompt = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(row["prompt"] + row["chosen"], tokenize=False)
        p_ids, ids = tok(prompt)["input_ids"], tok(full, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(ids).logits[0, :-1].log_softmax(-1)
        targets = ids[0, 1:]
        total += logits[len(p_ids) - 1 :].gather(1, targets[len(p_ids) - 1 :, None]).sum().item()
    return total / len(rows)


def test_train_sft_lowers_loss_and_registers_lineage(project: Project, base: ModelRecord) -> None:
    version = write_sft(project, spell_rows(200))
    steps: list[tuple[int, int]] = []
    config = SFTConfig(model="base", dataset="spell", output="sft-1", epochs=2, learning_rate=3e-3, batch_size=16)

    record = train_sft(project, config, on_progress=lambda step, total: steps.append((step, total)))

    job = get_job(project, record.run_id or "")
    losses = [m["loss"] for m in job.metrics if "loss" in m]
    assert losses[-1] < 0.75 * losses[0]
    assert job.state == "succeeded" and job.progress == 1.0 and job.kind == "train.sft"
    assert job.config["resolved"]["dataset_version"] == version.ref and "step 1:" in job.log
    assert steps[-1] == (steps[-1][1], steps[-1][1]) and len(steps) == steps[-1][1]
    assert record.parent_id == base.id and record.dataset_versions == [version.ref]
    assert record.recipe["method"] == "sft" and record.recipe["config"]["learning_rate"] == 3e-3
    assert (Path(record.path) / "config.json").is_file() and record.metrics["train_loss"] > 0
    assert (project.artifacts / "runs" / job.id).is_dir()


def test_train_reward_ranks_held_out_pairs_above_chance(project: Project, base: ModelRecord) -> None:
    write_pairs(project, spell_rows(250, rejected="capitals"))
    config = RewardConfig(model="base", dataset="pairs", output="rm", epochs=2, learning_rate=3e-3, batch_size=16)

    record = train_reward(project, config)

    assert record.kind == "reward-model"
    assert record.metrics["eval_pairs"] == 50
    assert record.metrics["eval_accuracy"] > 0.75


def test_train_dpo_raises_margin_and_guard_stays_quiet(project: Project, speller: ModelRecord) -> None:
    write_pairs(project, spell_rows(200, seed=1))
    config = DPOConfig(
        model="speller", dataset="pairs", output="dpo", epochs=3, learning_rate=1e-4, batch_size=16, logging_steps=2
    )

    record = train_dpo(project, config)

    margins = [m["rewards/margins"] for m in get_job(project, record.run_id or "").metrics if "rewards/margins" in m]
    assert margins[-1] > margins[0] + 0.05
    assert record.metrics["guard"]["tripped"] is False


def test_train_dpo_guard_stops_a_collapse_and_keeps_the_best_weights(project: Project, speller: ModelRecord) -> None:
    rows = spell_rows(200, seed=1)
    write_pairs(project, rows)
    config = DPOConfig(
        model="speller", dataset="pairs", output="dpo-hot", epochs=3, learning_rate=2e-3, batch_size=16, logging_steps=2
    )

    record = train_dpo(project, config)

    guard = record.metrics["guard"]
    assert guard["tripped"] is True
    assert guard["reason"].startswith(("likelihood displacement", "generation length", "early saturation"))
    assert guard["restored_step"] < guard["step"] < 39  # stopped long before the 39 steps of 3 epochs
    job = get_job(project, record.run_id or "")
    assert job.result and job.result["metrics"]["guard"]["reason"] == guard["reason"]
    assert f"guard tripped at step {guard['step']}" in job.log
    assert {"step": guard["step"], "guard_tripped": 1.0, "guard_restored_step": guard["restored_step"]} in job.metrics
    # the registered weights are the healthy ones: chosen answers are about as likely as before DPO
    assert chosen_logp(record.path, rows[:40]) > chosen_logp(speller.path, rows[:40]) - config.guard_logp_drop


def _fail_at(step: int) -> Any:
    def on_progress(done: int, total: int) -> None:
        if done == step:
            raise RuntimeError(f"stopped at step {done}")

    return on_progress


def test_failed_run_keeps_its_log_and_registers_nothing(project: Project, base: ModelRecord) -> None:
    write_sft(project, spell_rows(64))
    config = SFTConfig(model="base", dataset="spell", output="broken", max_steps=8, batch_size=8, logging_steps=1)

    with pytest.raises(JobFailed, match="stopped at step 3") as caught:
        train_sft(project, config, on_progress=_fail_at(3))

    assert "\n" not in caught.value.message
    job = list_jobs(project, kind="train.sft")[0]
    assert job.state == "failed" and job.error == "RuntimeError: stopped at step 3"
    assert "step 2:" in job.log and "Traceback" in job.log
    assert [m.name for m in list_models(project)] == ["base"]
    assert not (project.artifacts / "models" / "broken").exists()


def test_resume_continues_from_the_last_checkpoint(project: Project, base: ModelRecord) -> None:
    write_sft(project, spell_rows(64))
    config = SFTConfig(model="base", dataset="spell", output="resumed", max_steps=8, batch_size=8, save_steps=4)
    with pytest.raises(JobFailed):
        train_sft(project, config, on_progress=_fail_at(6))
    failed = list_jobs(project, kind="train.sft")[0]
    assert failed.checkpoint and failed.checkpoint.endswith("checkpoint-4")

    record = train_sft(project, config.model_copy(update={"resume": True}))

    job = get_job(project, record.run_id or "")
    assert job.config["resolved"]["resume_from"] == failed.checkpoint
    assert min(m["step"] for m in job.metrics) > 4 and record.metrics["step"] == 8


def test_resume_without_a_failed_run_says_how_to_fix(project: Project, base: ModelRecord) -> None:
    write_sft(project, spell_rows(8))
    with pytest.raises(NotFound, match="drop --resume"):
        train_sft(project, SFTConfig(model="base", dataset="spell", output="new", resume=True))


@pytest.mark.parametrize(
    ("update", "error", "message"),
    [
        ({"model": "nope"}, NotFound, "no model 'nope'"),
        ({"dataset": "missing"}, NotFound, "no dataset 'missing'"),
        ({"dataset": "empty"}, InvalidInput, "has no rows"),
        ({"dataset": "pairs"}, InvalidInput, "is a preference dataset; this method needs sft"),
        ({"output": "base"}, Conflict, "a model named 'base' exists"),
    ],
)
def test_bad_inputs_fail_before_a_job_starts(
    project: Project, base: ModelRecord, update: dict[str, str], error: type[PosttrainError], message: str
) -> None:
    write_sft(project, spell_rows(4))
    empty = pa.Table.from_pylist([{"prompt": [], "completion": []}]).slice(0, 0)
    write_version(project, "empty", "sft", empty, recipe={}, sources={})
    write_pairs(project, spell_rows(4))
    config = SFTConfig(model="base", dataset="spell", output="out").model_copy(update=update)

    with pytest.raises(error, match=message) as caught:
        train_sft(project, config)

    assert "\n" not in caught.value.message
    assert [m.name for m in list_models(project)] == ["base"] and list_jobs(project) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"learning_rate": 3.0}, "learning_rate: must be in (0, 1]"),
        ({"learning_rate": 0}, "learning_rate: must be in (0, 1]"),
        ({"epochs": 0}, "epochs: must be > 0"),
        ({"max_steps": -5}, "max_steps: must be a positive step count, or -1"),
        ({"epochz": 1}, "epochz: unknown setting"),
        ({"beta": -1}, "beta: must be > 0"),
        ({"loss": "hinge"}, "loss: "),
    ],
)
def test_parse_config_names_the_fix(data: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_config(DPOConfig, {"model": "m", "dataset": "d", "output": "o", **data})
    assert caught.value.message.startswith(message) and "\n" not in caught.value.message


def test_load_config_reads_yaml_and_flags_win(tmp_path: Path) -> None:
    path = tmp_path / "dpo.yaml"
    path.write_text("model: speller\ndataset: pairs@2\noutput: d\nlearning-rate: 1e-5\nbeta: 0.3\n")

    config = load_config(DPOConfig, path, {"beta": 0.2, "epochs": None})

    assert (config.dataset, config.learning_rate, config.beta, config.epochs) == ("pairs@2", 1e-5, 0.2, 1.0)


def test_cli_train_sft_runs_and_registers(project: Project, base: ModelRecord, cli: CliRunner) -> None:
    from posttrain.cli import app

    write_sft(project, spell_rows(16))
    root = project.root
    project.close()
    args = ["train", "sft", "--model", "base", "--dataset", "spell", "--output", "cli-sft", "--max-steps", "2"]

    result = cli.invoke(app, [*args, "--project", str(root)])

    assert result.exit_code == 0, result.output
    assert "registered causal-lm cli-sft" in result.output
    assert get_model(project, "cli-sft").recipe["config"]["max_steps"] == 2


def test_cli_train_bad_learning_rate_is_one_line(project: Project, cli: CliRunner) -> None:
    from posttrain.cli import app

    root = project.root
    project.close()
    args = ["train", "dpo", "--model", "m", "--dataset", "d", "--output", "o", "--learning-rate", "2"]

    result = cli.invoke(app, [*args, "--project", str(root)])

    assert isinstance(result.exception, InvalidInput)
    assert "learning_rate: must be in (0, 1]" in result.exception.message


def test_train_workers_without_ray_is_refused(project: Project, base: ModelRecord) -> None:
    write_sft(project, spell_rows(4))

    with pytest.raises(InvalidInput, match='workers: 2 workers need Ray Train; set \\[compute\\] backend = "ray"'):
        train_sft(project, SFTConfig(model="base", dataset="spell", output="o", workers=2))
    assert list_jobs(project) == []
