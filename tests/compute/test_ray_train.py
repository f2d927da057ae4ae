"""Training on Ray Train: the session's loopback cluster (two nodes of 1 CPU), two data-parallel workers."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import use_ray
from posttrain.jobs import get_job
from posttrain.models.registry import get_model, register_model
from posttrain.project import Project, open_project
from posttrain.records import ModelRecord
from posttrain.train.distill import DistillConfig, train_distill
from posttrain.train.dpo import DPOConfig, train_dpo
from posttrain.train.grpo import GRPOConfig, RLOOConfig, train_grpo, train_rloo
from posttrain.train.reward import RewardConfig, train_reward
from posttrain.train.sft import SFTConfig, train_sft
from test_train import spell_rows, write_pairs, write_sft
from test_train_rl import write_prompts

pytest.importorskip("ray")
pytest.importorskip("trl")
pytestmark = pytest.mark.slow


def _train_in_background(project: Project, config: SFTConfig) -> tuple[threading.Thread, list[BaseException]]:
    """Start ``train_sft`` in a thread; return it and the list its error lands in."""
    raised: list[BaseException] = []

    def train() -> None:
        try:
            train_sft(project, config)
        except BaseException as exc:  # the thread hands its error to the test
            raised.append(exc)

    thread = threading.Thread(target=train)
    thread.start()
    return thread, raised


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


def test_cancelling_a_training_job_on_ray_stops_every_worker(ray_project: Project, tiny_model: Path) -> None:
    import time

    from posttrain.jobs import JobCancelled, cancel_job, list_jobs

    register_model(ray_project, "base", tiny_model)
    write_sft(ray_project, spell_rows(64))
    config = SFTConfig(model="base", dataset="spell", output="never", max_steps=100_000, batch_size=2, workers=2)
    thread, raised = _train_in_background(ray_project, config)
    deadline = time.monotonic() + 240
    job = None
    while time.monotonic() < deadline and thread.is_alive():
        jobs = [j for j in list_jobs(ray_project, kind="train.sft") if j.state == "running"]
        if jobs and jobs[0].progress > 0:
            job = jobs[0]
            break
        time.sleep(0.5)
    assert job is not None, raised
    cancelled_at = time.monotonic()
    cancel_job(ray_project, job.id)
    thread.join(120)

    assert not thread.is_alive(), "the job did not stop within 120 s of its cancellation"
    assert time.monotonic() - cancelled_at < 120
    assert len(raised) == 1 and isinstance(raised[0], JobCancelled), raised
    assert get_job(ray_project, job.id).state == "cancelled"
    assert not (ray_project.root / "artifacts" / "models" / "never").exists()


def test_train_reward_on_two_ray_workers(ray_project: Project, tiny_model: Path) -> None:
    register_model(ray_project, "base", tiny_model)
    write_pairs(ray_project, spell_rows(16))
    config = RewardConfig(model="base", dataset="pairs", output="rm", max_steps=2, batch_size=2, workers=2)

    record = train_reward(ray_project, config)

    assert record.kind == "reward-model" and 0 <= record.metrics["eval_accuracy"] <= 1
    assert "ray: 2 workers" in get_job(ray_project, record.run_id or "").log
    assert (Path(record.path) / "config.json").is_file()


def _rollouts(project: Project, tiny_model: Path) -> dict[str, Any]:
    register_model(project, "base", tiny_model)
    write_prompts(project, [(f"spell {i}", "7", "contains") for i in range(8)])
    return {"model": "base", "dataset": "toy", "batch_size": 2, "num_generations": 2, "max_steps": 2,
            "max_completion_length": 4, "logging_steps": 1, "workers": 2}  # fmt: skip


def _rewarded(project: Project, record: ModelRecord) -> None:
    job = get_job(project, record.run_id or "")
    assert job.state == "succeeded" and "ray: 2 workers" in job.log
    assert len([point for point in job.metrics if "reward" in point]) >= 2
    assert record.parent_id == get_model(project, "base").id


def test_train_grpo_on_two_ray_workers_with_a_reward_model_and_a_verifier(
    ray_project: Project, tiny_model: Path
) -> None:
    """The reward model is loaded in each worker beside the policy; its scores and the verifier's are summed."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rollouts = _rollouts(ray_project, tiny_model)
    folder = ray_project.artifacts / "models" / "rm"
    AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    register_model(ray_project, "rm", folder, kind="reward-model")

    record = train_grpo(
        ray_project, GRPOConfig(output="grpo", reward=["model:rm@0.5", "verifier:contains"], **rollouts)
    )

    _rewarded(ray_project, record)


def test_train_rloo_on_two_ray_workers(ray_project: Project, tiny_model: Path) -> None:
    record = train_rloo(ray_project, RLOOConfig(output="rloo", **_rollouts(ray_project, tiny_model)))

    _rewarded(ray_project, record)


def test_train_distill_samples_the_teacher_and_trains_the_student_on_ray(
    ray_project: Project, tiny_model: Path
) -> None:
    """The teacher's samples come from model actors on the cluster; the student trains on 2 Ray workers."""
    from posttrain.datasets import resolve

    register_model(ray_project, "teacher", tiny_model)
    register_model(ray_project, "student", tiny_model)
    write_prompts(ray_project, [(f"spell {i}", "7", "contains") for i in range(8)])
    config = DistillConfig(
        teacher="teacher", student="student", prompts="toy", output="distilled", verifier="exact_match",
        threshold=0.0, samples_per_prompt=2, max_new_tokens=4, batch_size=4, max_steps=2, workers=2,
    )  # fmt: skip

    record = train_distill(ray_project, config)

    version = resolve(ray_project, record.dataset_versions[0])
    assert version.stats["generated"] == 16 and version.row_count == 16
    job = get_job(ray_project, record.run_id or "")
    assert job.state == "succeeded" and job.kind == "train.distill" and "ray: 2 workers" in job.log
    assert record.parent_id == get_model(ray_project, "student").id


@pytest.mark.timeout(420)
def test_a_worker_node_killed_mid_training_is_retried_or_fails_the_job_in_one_line(
    project: Project, tiny_model: Path
) -> None:
    """Two Ray Train workers on two worker nodes; one node is killed mid-run. Ray Train restarts the
    worker group once from its last checkpoint (it cannot: one CPU is left) and the job fails with
    one line, or finishes; it never hangs."""
    import threading
    import time

    from posttrain.compute import ray_runtime
    from posttrain.compute.cluster import LocalCluster
    from posttrain.errors import PosttrainError
    from posttrain.jobs import list_jobs

    register_model(project, "base", tiny_model)
    write_sft(project, spell_rows(64))
    config = SFTConfig(model="base", dataset="spell", output="survivor", max_steps=60, batch_size=2, save_steps=5,
                       workers=2)  # fmt: skip
    ray_runtime.disconnect()
    cluster = LocalCluster(workers=2, head_cpus=0).start()
    try:
        use_ray(project, cluster.address)

        def kill_after_a_checkpoint() -> None:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                running = [j for j in list_jobs(project, kind="train.sft") if j.state == "running"]
                if running and running[0].checkpoint:
                    cluster.kill_worker(1)
                    return
                time.sleep(0.5)

        killer = threading.Thread(target=kill_after_a_checkpoint, daemon=True)
        killer.start()
        started = time.monotonic()
        try:
            record = train_sft(project, config)
        except PosttrainError as exc:
            assert exc.message and "\n" not in exc.message, exc.message
            job = list_jobs(project, kind="train.sft")[0]
            assert job.state == "failed" and job.error
        else:
            assert get_job(project, record.run_id or "").state == "succeeded"
        killer.join(timeout=5)
        assert time.monotonic() - started < 360
    finally:
        ray_runtime.disconnect()
        cluster.stop()


@pytest.mark.timeout(480)
def test_a_ray_run_on_object_storage_is_cancelled_then_resumed_from_its_checkpoint_there(
    project: Project, tiny_model: Path, s3: str
) -> None:
    """``compute.storage = "s3://…"`` on a real S3-compatible server: the workers share no folder with
    the driver. The job records the URL of each checkpoint Ray Train wrote there; ``--resume`` starts
    two new workers from it; after the success the run's checkpoints are removed."""
    import time

    from posttrain.compute import Storage, ray_runtime
    from posttrain.compute.cluster import LocalCluster
    from posttrain.jobs import JobCancelled, cancel_job, list_jobs

    register_model(project, "base", tiny_model)
    write_sft(project, spell_rows(64))
    config = SFTConfig(model="base", dataset="spell", output="resumed", max_steps=100_000, batch_size=2, save_steps=2,
                       logging_steps=1, workers=2)  # fmt: skip
    ray_runtime.disconnect()
    cluster = LocalCluster(workers=1).start()  # started after the S3 endpoint is set: its nodes reach it
    store = Storage(s3)
    try:
        use_ray(project, cluster.address, storage=s3)
        thread, raised = _train_in_background(project, config)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and thread.is_alive():
            running = [j for j in list_jobs(project, kind="train.sft") if j.state == "running"]
            if running and running[0].checkpoint:
                cancel_job(project, running[0].id)
                break
            time.sleep(0.5)
        thread.join(120)
        assert not thread.is_alive() and len(raised) == 1 and isinstance(raised[0], JobCancelled), raised
        [cancelled] = list_jobs(project, kind="train.sft")
        assert cancelled.state == "cancelled" and cancelled.checkpoint
        assert cancelled.checkpoint.startswith(f"{s3}/ray-train/{cancelled.id}/checkpoint-")
        assert store.fs.exists(f"{cancelled.checkpoint}/trainer_state.json")
        step = int(cancelled.checkpoint.rsplit("-", 1)[1])

        record = train_sft(project, config.model_copy(update={"resume": True, "max_steps": step + 2}))

        job = get_job(project, record.run_id or "")
        assert job.state == "succeeded" and "ray: 2 workers" in job.log
        assert job.config["resolved"]["resume_from"] == cancelled.checkpoint
        assert min(m["step"] for m in job.metrics) > step and record.metrics["step"] == step + 2
        assert not store.exists(store.path("ray-train", job.id))  # a success keeps only the model
        assert store.exists(cancelled.checkpoint)  # the cancelled run's stay for another --resume
        assert (Path(record.path) / "config.json").is_file()
    finally:
        ray_runtime.disconnect()
        cluster.stop()
