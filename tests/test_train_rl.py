"""GRPO, RLOO and distillation on tiny real models: reward specs, real TRL steps, lineage, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from posttrain.datasets import read_rows, write_version
from posttrain.datasets import resolve as get_dataset
from posttrain.errors import InvalidInput, JobFailed, NotFound
from posttrain.jobs import get_job
from posttrain.models.registry import get_model, register_model
from posttrain.models.tiny import init_tiny
from posttrain.project import Project
from posttrain.records import DatasetVersion, ModelRecord
from posttrain.train.distill import DistillConfig, train_distill
from posttrain.train.grpo import GRPOConfig, RLOOConfig, train_grpo, train_rloo
from posttrain.train.rewards import VerifierReward, build_rewards, parse_reward_spec
from posttrain.train.runner import load_config
from posttrain.train.sft import SFTConfig, train_sft

pytest.importorskip("trl")


def reward_length(completions: list[object], **columns: object) -> list[float]:
    """A Python reward for the MODULE:FUNCTION spec: shorter is better."""
    return [1.0 / (1 + len(str(c))) for c in completions]


def write_prompts(
    project: Project, rows: list[tuple[str, str | None, str | None]], name: str = "toy"
) -> DatasetVersion:
    table = pa.table(
        {
            "prompt": [[{"role": "user", "content": p}] for p, _, _ in rows],
            "answer": [a for _, a, _ in rows],
            "verifier": [v for _, _, v in rows],
        }
    )
    return write_version(project, name, "prompts", table, recipe={"test": True}, sources={})


@pytest.fixture
def tiny(project: Project) -> ModelRecord:
    return init_tiny(project, "tiny", hidden=32, layers=2, heads=2)


@pytest.fixture
def reward_model(project: Project, tiny: ModelRecord) -> ModelRecord:
    """A random-headed sequence classifier over the tiny model, registered as a reward-model."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = project.artifacts / "models" / "rm"
    AutoModelForSequenceClassification.from_pretrained(tiny.path, num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny.path).save_pretrained(folder)
    return register_model(project, "rm", folder, kind="reward-model")


@pytest.fixture
def toy(project: Project) -> DatasetVersion:
    """A task a random 30k-parameter model learns in ~30 steps: put a '7' somewhere in the answer."""
    return write_prompts(project, [(f"q{i}", "7", "contains") for i in range(16)])


@pytest.mark.parametrize(
    ("spec", "kind", "name", "weight"),
    [
        ("verifier:exact_match", "verifier", "exact_match", 1.0),
        ("model:rm1@0.5", "model", "rm1", 0.5),
        ("verifier:numeric:0.5@2", "verifier", "numeric:0.5", 2.0),
        ("function:brevity", "function", "brevity", 1.0),
    ],
)
def test_parse_reward_spec_forms(spec: str, kind: str, name: str, weight: float) -> None:
    parsed = parse_reward_spec(spec)
    assert (parsed.kind, parsed.name, parsed.weight) == (kind, name, weight)


@pytest.mark.parametrize("spec", ["exact_match", "verifier:", "model:rm@heavy", ":fn"])
def test_parse_reward_spec_bad_says_forms(spec: str) -> None:
    with pytest.raises(InvalidInput, match=r"model:|number"):
        parse_reward_spec(spec)


@pytest.mark.parametrize(
    "spec", ["pt_rl_never_a:fn", "os:system", "function:os:system", "verifier:python:pt_rl_never_b:f", "function:a.b"]
)
def test_parse_reward_spec_refuses_module_paths_without_importing(spec: str) -> None:
    with pytest.raises(InvalidInput, match="module|must be model:NAME") as info:
        parse_reward_spec(spec)
    assert info.value.field == "reward"
    assert not [m for m in sys.modules if m.startswith("pt_rl_never")]


def test_build_rewards_mixes_kinds_with_weights(project: Project) -> None:
    project.settings.functions.rewards["brevity"] = f"{__name__}:reward_length"
    rewards = build_rewards(project, ["verifier:exact_match", "function:brevity@0.25"])
    assert rewards.weights == [1.0, 0.25]
    assert rewards.processing_classes == [None, None]
    assert rewards.funcs[1](prompts=["p", "p"], completions=["ab", "a"]) == reward_length(completions=["ab", "a"])
    assert rewards.funcs[1].__name__ == "brevity"
    assert rewards.funcs[0].__name__ == "verifier_exact_match"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("function:nomod", "cannot import 'no_such_module_xyz'.*PYTHONPATH"),
        ("function:nofn", "no function 'no_such_fn'"),
        ("function:unregistered", r"no reward 'unregistered' in posttrain.toml \[functions.rewards\]"),
        ("verifier:nope", "unknown verifier 'nope'; use one of exact_match"),
    ],
)
def test_build_rewards_bad_spec_one_line(project: Project, spec: str, message: str) -> None:
    project.settings.functions.rewards.update(nomod="no_such_module_xyz:fn", nofn="posttrain.errors:no_such_fn")
    with pytest.raises(InvalidInput, match=message) as info:
        build_rewards(project, [spec])
    assert "\n" not in info.value.message


def test_build_rewards_model_must_be_reward_model(project: Project, tiny: ModelRecord) -> None:
    with pytest.raises(InvalidInput, match="not a reward-model; train one with 'posttrain train reward'"):
        build_rewards(project, ["model:tiny"])
    with pytest.raises(NotFound, match="no model 'ghost'"):
        build_rewards(project, ["model:ghost"])


def test_verifier_reward_scores_conversational_and_row_verifiers() -> None:
    reward = VerifierReward("row")
    completions = [[{"role": "assistant", "content": " 4 "}], [{"role": "assistant", "content": "5"}], "x"]
    scores = reward(
        prompts=[[], [], []],
        completions=completions,
        answer=["4", "4", "x"],
        verifier=["exact_match", "exact_match", None],
        trainer_state=None,
    )
    assert scores == [1.0, 0.0, None]


def test_grpo_config_rejects_bad_settings_naming_fix() -> None:
    base = {"model": "m", "dataset": "d", "output": "o"}
    with pytest.raises(InvalidInput, match="num_generations: must be at least 2"):
        load_config(GRPOConfig, overrides={**base, "num_generations": 1})
    with pytest.raises(InvalidInput, match="reward: reward 'bogus' must be model:NAME"):
        load_config(GRPOConfig, overrides={**base, "reward": ["bogus"]})


def _rewards(project: Project, record: ModelRecord) -> list[float]:
    assert record.run_id is not None
    return [m["reward"] for m in get_job(project, record.run_id).metrics if "reward" in m]


def test_train_grpo_raises_verifier_reward(project: Project, tiny: ModelRecord, toy: DatasetVersion) -> None:
    config = GRPOConfig(
        model="tiny",
        dataset="toy",
        output="tiny-grpo",
        reward=["verifier:contains"],
        batch_size=4,
        max_completion_length=8,
        max_steps=30,
        learning_rate=1e-2,
        logging_steps=1,
    )
    record = train_grpo(project, config)
    rewards = _rewards(project, record)
    assert len(rewards) >= 30
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.3
    assert record.parent_id == tiny.id and record.dataset_versions == [toy.ref]
    assert record.recipe["method"] == "grpo" and get_job(project, record.run_id or "").kind == "train.grpo"
    assert (Path(record.path) / "model.safetensors").is_file()


def test_train_rloo_runs_and_registers(project: Project, tiny: ModelRecord) -> None:
    write_prompts(project, [(f"add {i} 1", str(i + 1), "numeric") for i in range(8)], name="sums")
    config = RLOOConfig(
        model="tiny",
        dataset="sums",
        output="tiny-rloo",
        batch_size=2,
        num_generations=4,
        max_steps=3,
        max_completion_length=6,
        logging_steps=1,
    )
    record = train_rloo(project, config)
    assert get_model(project, "tiny-rloo").id == record.id
    assert record.recipe["config"]["beta"] == 0.05
    assert len(_rewards(project, record)) == 3


def test_train_grpo_wrong_dataset_kind_fails_before_job(project: Project, tiny: ModelRecord) -> None:
    table = pa.table(
        {"prompt": [[{"role": "user", "content": "hi"}]], "completion": [[{"role": "assistant", "content": "yo"}]]}
    )
    write_version(project, "chat", "sft", table, recipe={}, sources={})
    with pytest.raises(InvalidInput, match="is a sft dataset; this method needs prompts"):
        train_grpo(project, GRPOConfig(model="tiny", dataset="chat", output="x"))


def test_train_grpo_failing_reward_marks_job_failed(project: Project, tiny: ModelRecord) -> None:
    write_prompts(project, [("q", "not a number", "numeric")], name="bad")
    config = GRPOConfig(model="tiny", dataset="bad", output="x", batch_size=1, num_generations=2, max_steps=1)
    with pytest.raises(JobFailed, match="numeric verifier: answer 'not a number' is not a number"):
        train_grpo(project, config)


@pytest.fixture
def teacher(project: Project, tiny: ModelRecord) -> ModelRecord:
    """The tiny model fine-tuned to answer every toy prompt with '7' (most of the time)."""
    table = pa.table(
        {
            "prompt": [[{"role": "user", "content": f"q{i}"}] for i in range(16)],
            "completion": [[{"role": "assistant", "content": "7"}] for _ in range(16)],
        }
    )
    write_version(project, "sevens", "sft", table, recipe={}, sources={})
    config = SFTConfig(
        model="tiny", dataset="sevens", output="teacher", batch_size=16, max_steps=25, learning_rate=1e-2
    )
    return train_sft(project, config)


def test_train_distill_keeps_verified_samples_and_trains_student(
    project: Project, teacher: ModelRecord, toy: DatasetVersion
) -> None:
    student = init_tiny(project, "student", hidden=32, layers=2, heads=2, seed=1)
    config = DistillConfig(
        teacher="teacher",
        student="student",
        prompts="toy",
        output="student-distilled",
        verifier="exact_match",
        samples_per_prompt=4,
        max_new_tokens=4,
        batch_size=8,
        max_steps=4,
        learning_rate=1e-3,
    )
    record = train_distill(project, config)
    version = get_dataset(project, record.dataset_versions[0])
    completions = [row["completion"][0]["content"] for row in read_rows(version).to_pylist()]
    assert version.kind == "sft" and version.name == "student-distilled-distill"
    assert 0 < version.row_count <= 64 and {c.strip() for c in completions} == {"7"}
    assert version.recipe["teacher"] == "teacher" and version.recipe["teacher_id"] == teacher.id
    assert version.stats["generated"] == 64 and version.source_ids["interactions"] == version.row_count
    assert set(read_rows(version).column("source").to_pylist()) == {"distill"}
    assert record.parent_id == student.id and record.recipe["method"] == "distill"
    assert record.recipe["config"]["teacher"] == "teacher"
    assert get_job(project, record.run_id or "").kind == "train.distill"


def test_train_distill_no_accepted_sample_names_fix(project: Project, tiny: ModelRecord) -> None:
    write_prompts(project, [("q", "an answer no random model gives", "exact_match")], name="hard")
    config = DistillConfig(
        teacher="tiny", student="tiny", prompts="hard", output="s", samples_per_prompt=2, max_new_tokens=3
    )
    with pytest.raises(InvalidInput, match=r"gave no sample scoring >= 0.5 out of 2; raise --samples-per-prompt"):
        train_distill(project, config)
    with pytest.raises(NotFound):
        get_model(project, "s")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"verifier": "python:m:f"}, "verifier: verifier 'python:m:f': module paths are not accepted"),
        ({"verifier": "exact_match", "reward_model": "rm"}, "a verifier or a reward_model"),
        ({"samples_per_prompt": 0}, "samples_per_prompt: must be at least 1"),
        ({"model": "other"}, "give the student as student; model is set from it"),
    ],
)
def test_distill_config_rejects_bad_filters(overrides: dict[str, object], message: str) -> None:
    base = {"teacher": "t", "student": "s", "prompts": "p", "output": "o"}
    with pytest.raises(InvalidInput, match=message):
        load_config(DistillConfig, overrides={**base, **overrides})


def test_train_distill_teacher_must_be_causal_lm_and_prompts_kind(project: Project, tiny: ModelRecord) -> None:
    table = pa.table(
        {"prompt": [[{"role": "user", "content": "hi"}]], "completion": [[{"role": "assistant", "content": "yo"}]]}
    )
    write_version(project, "chat", "sft", table, recipe={}, sources={})
    config = DistillConfig(teacher="tiny", student="tiny", prompts="chat", output="s")
    with pytest.raises(InvalidInput, match="--prompts needs a prompts dataset"):
        train_distill(project, config)


def test_train_grpo_with_reward_model_and_weights(
    project: Project, reward_model: ModelRecord, toy: DatasetVersion
) -> None:
    rewards = build_rewards(project, ["model:rm@0.5", "verifier:contains"])
    assert rewards.processing_classes[0] is not None and rewards.weights == [0.5, 1.0]
    config = GRPOConfig(
        model="tiny",
        dataset="toy",
        output="tiny-grpo-rm",
        reward=["model:rm@0.5", "verifier:contains"],
        batch_size=2,
        num_generations=4,
        max_completion_length=6,
        max_steps=2,
        logging_steps=1,
    )
    record = train_grpo(project, config)
    assert "rewards/rm/mean" in record.metrics and "rewards/verifier_contains/mean" in record.metrics


def test_train_distill_filters_with_reward_model(
    project: Project, reward_model: ModelRecord, toy: DatasetVersion
) -> None:
    config = DistillConfig(
        teacher="tiny",
        student="tiny",
        prompts="toy",
        output="s",
        reward_model="rm",
        threshold=-1e9,
        samples_per_prompt=2,
        max_new_tokens=3,
        max_steps=1,
    )
    record = train_distill(project, config)
    version = get_dataset(project, record.dataset_versions[0])
    assert version.row_count == 32 and version.recipe["filter"]["reward_model"] == "rm"


def test_cli_train_grpo_and_rloo_run_with_repeated_rewards(
    project: Project, tiny: ModelRecord, toy: DatasetVersion, cli: CliRunner
) -> None:
    from posttrain.cli import app

    root = project.root
    project.close()
    small = ["--batch-size", "2", "--num-generations", "2", "--max-completion-length", "4", "--max-steps", "2"]
    with (root / "posttrain.toml").open("a") as f:
        f.write(f'\n[functions.rewards]\nbrevity = "{__name__}:reward_length"\n')
    rewards = ["--reward", "verifier:contains", "--reward", "function:brevity@0.5"]
    grpo = ["train", "grpo", "--model", "tiny", "--dataset", "toy", "--output", "cli-grpo", *rewards, *small]
    rloo = ["train", "rloo", "--model", "tiny", "--dataset", "toy", "--output", "cli-rloo", *small]

    results = [cli.invoke(app, [*args, "--project", str(root)]) for args in (grpo, rloo)]

    assert [r.exit_code for r in results] == [0, 0], [r.output for r in results]
    assert "registered causal-lm cli-grpo" in results[0].output
    assert get_model(project, "cli-grpo").recipe["config"]["reward"] == rewards[1::2]
    assert get_model(project, "cli-rloo").recipe["config"]["reward"] == ["verifier:row"]


def test_cli_train_distill_runs(project: Project, teacher: ModelRecord, toy: DatasetVersion, cli: CliRunner) -> None:
    from posttrain.cli import app

    root = project.root
    project.close()
    args = ["train", "distill", "--teacher", "teacher", "--student", "tiny", "--prompts", "toy"]
    args += ["--verifier", "exact_match", "--output", "cli-distill", "--max-steps", "2", "--max-new-tokens", "4"]

    result = cli.invoke(app, [*args, "--project", str(root)])

    assert result.exit_code == 0, result.output
    assert "registered causal-lm cli-distill" in result.output
    assert get_model(project, "cli-distill").dataset_versions == ["cli-distill-distill@1"]


def test_cli_train_grpo_bad_reward_is_one_line(project: Project, cli: CliRunner) -> None:
    from posttrain.cli import app

    root = project.root
    project.close()
    args = ["train", "grpo", "--model", "m", "--dataset", "d", "--output", "o", "--reward", "exact_match"]

    result = cli.invoke(app, [*args, "--project", str(root)])

    assert isinstance(result.exception, InvalidInput)
    assert result.exception.message == (
        "reward: reward 'exact_match' must be model:NAME, verifier:NAME or function:NAME (optionally @WEIGHT); "
        "Python rewards are registered in posttrain.toml [functions.rewards], never named by module"
    )
