"""What every training method shares: the runner that turns a trainer into a job.

A method (SFT, reward, DPO, GRPO ...) writes a ``<Method>Config`` subclassing ``TrainConfig``
(``posttrain.train.config``) and one function that calls ``run_training`` with a
``build_trainer(run) -> transformers.Trainer``. ``run_training`` does everything else, the same
way for every method:

1. resolve the model and the dataset version; refuse an empty dataset, a dataset of the wrong
   kind, an output name already taken or ``workers`` > 1 without Ray, all before a job exists;
2. start the job row (kind ``train.<method>``, the resolved config saved);
3. the fit (``posttrain.train.fitting``): load model and tokenizer, build the Hugging Face dataset,
   call ``build_trainer``, train, writing progress and every log dict into the job, checkpoints
   under ``artifacts/runs/<job id>`` (``resume`` continues the last failed run of the same
   output); merge LoRA and save to ``artifacts/models/<output>``. In this process, or with
   ``compute.backend = "ray"`` on ``workers`` Ray Train workers (``posttrain.compute.ray_train``);
4. register the model, mark the job succeeded.

On any failure the job is marked failed with its log kept, nothing is registered, the output folder
is removed and ``JobFailed`` is raised with a one-line message.

Torch, transformers and TRL are imported only inside functions, so configs stay light to import."""

from __future__ import annotations

import shutil
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from posttrain.compute import uses_ray
from posttrain.compute.storage import folder_exists, local_folder
from posttrain.datasets import read_rows, resolve
from posttrain.errors import Conflict, InvalidInput, JobFailed, NotFound, PosttrainError
from posttrain.jobs import JobCancelled, list_jobs, start_job
from posttrain.models.registry import check_name_free, get_model, register_model
from posttrain.project import Project
from posttrain.records import DatasetKind, DatasetVersion, ModelKind, ModelRecord
from posttrain.stored_paths import store_path
from posttrain.train.config import TrainConfig, load_config, parse_config
from posttrain.train.fitting import (
    BuildTrainer,
    LoadModel,
    ProgressFn,
    TrainingPlan,
    TrainingRun,
    final_metrics,
    load_trainer,
    save_model,
    use_cpu,
)

__all__ = [
    "JobFn",
    "ProgressFn",
    "TrainConfig",
    "TrainingRun",
    "load_config",
    "parse_config",
    "run_training",
]

JobFn = Callable[[str], None]  # told the job id as soon as the job row exists


def run_training(
    project: Project,
    method: str,
    config: TrainConfig,
    build_trainer: BuildTrainer,
    on_progress: ProgressFn | None = None,
    *,
    dataset_kind: DatasetKind | Sequence[DatasetKind] = "sft",
    columns: Sequence[str] = (),
    model_kind: ModelKind = "causal-lm",
    load_model: LoadModel | None = None,
    on_job: JobFn | None = None,
) -> ModelRecord:
    """Run one training job end to end and return the registered model.

    ``dataset_kind`` and ``columns`` are what the method needs from the dataset version (checked
    before the job starts); ``load_model`` replaces the default causal-LM loader (the reward model
    loads a sequence classifier); ``model_kind`` is the kind registered. With ``compute.backend =
    "ray"`` the fit runs on Ray Train (``posttrain.compute.ray_train``); all else happens here.
    """
    base, version = _check_inputs(project, config, dataset_kind, columns)
    resume_from = _checkpoint_to_resume(project, method, config) if config.resume else None
    job = start_job(project, f"train.{method}", _job_config(method, config, base, version, resume_from))
    if on_job is not None:  # the server answers 202 with this id while the run goes on
        on_job(job.id)
    run = TrainingRun(project, config, job, base, version, project.artifacts / "runs" / job.id)
    plan = TrainingPlan(method, build_trainer, tuple(columns), load_model, resume_from)
    output = project.artifacts / "models" / config.output
    try:
        return _train(project, run, plan, on_progress, model_kind, output)
    except KeyboardInterrupt:
        _abandon(run, output, "interrupted")
        raise
    except JobCancelled as exc:
        job.cancelled(exc.message)
        shutil.rmtree(output, ignore_errors=True)
        raise
    except Exception as exc:
        job.log(traceback.format_exc())
        reason = exc.message if isinstance(exc, PosttrainError) else f"{type(exc).__name__}: {exc}"
        reason = reason.strip().splitlines()[0] if reason.strip() else type(exc).__name__
        _abandon(run, output, reason)
        raise JobFailed(f"training job {job.id} failed: {reason} (the job keeps its log)") from exc


def _check_inputs(
    project: Project, config: TrainConfig, kinds: DatasetKind | Sequence[DatasetKind], columns: Sequence[str]
) -> tuple[ModelRecord, DatasetVersion]:
    base = get_model(project, config.model)
    version = resolve(project, config.dataset)
    allowed = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if version.kind not in allowed:
        raise InvalidInput(
            f"dataset {version.ref} is a {version.kind} dataset; this method needs {' or '.join(allowed)}",
            field="dataset",
        )
    if version.row_count == 0:
        raise InvalidInput(f"dataset {version.ref} has no rows; build one with data first", field="dataset")
    missing = [c for c in columns if c not in read_rows(version).column_names]
    if missing:
        raise InvalidInput(f"dataset {version.ref} lacks column(s) {', '.join(missing)}", field="dataset")
    _check_output_free(project, config.output)
    if uses_ray(project):
        return base, version  # the device is the cluster's: checked against its resources when the fit starts
    if config.workers is not None and config.workers > 1:
        raise InvalidInput(
            f'workers: {config.workers} workers need Ray Train; set [compute] backend = "ray" in posttrain.toml '
            "(or POSTTRAIN_COMPUTE_BACKEND=ray) with a cluster at compute.address, or drop --workers",
            field="workers",
        )
    use_cpu(config.device)
    return base, version


def _check_output_free(project: Project, name: str) -> None:
    check_name_free(project, name)
    folder = project.artifacts / "models" / name
    if folder.exists():
        raise Conflict(f"{folder} exists but is not registered; remove it or pass another --output", field="output")


def _checkpoint_to_resume(project: Project, method: str, config: TrainConfig) -> str:
    for job in list_jobs(project, kind=f"train.{method}", limit=1000):
        if job.config.get("output") != config.output:
            continue
        if job.state in ("failed", "cancelled") and job.checkpoint and folder_exists(job.checkpoint):
            return job.checkpoint
    raise NotFound(
        f"no failed or stopped train.{method} run of {config.output!r} left a checkpoint; drop --resume",
        field="resume",
    )


def _job_config(
    method: str, config: TrainConfig, base: ModelRecord, version: DatasetVersion, resume_from: str | None
) -> dict[str, Any]:
    resolved = {"method": method, "model_id": base.id, "dataset_version": version.ref, "resume_from": resume_from}
    return {**config.model_dump(mode="json"), "resolved": resolved}


def _train(
    project: Project,
    run: TrainingRun,
    plan: TrainingPlan,
    on_progress: ProgressFn | None,
    model_kind: ModelKind,
    output: Path,
) -> ModelRecord:
    if uses_ray(project):
        from posttrain.compute import ray_train

        metrics = ray_train.fit(project, run, plan, output, on_progress=on_progress)
    else:
        metrics = _fit_here(run, plan, output, on_progress)
    record = register_model(
        project,
        run.config.output,
        output,
        kind=model_kind,
        base=run.base.base or run.base.name,
        parent=run.base.name,
        run_id=run.job.id,
        dataset_versions=[run.version.ref],
        recipe={"method": plan.method, "config": run.config.model_dump(mode="json")},
        metrics=metrics,
    )
    result = {"model": record.name, "model_id": record.id, "metrics": metrics}
    run.job.succeed(output=store_path(project.root, output), result=result)
    return record


def _fit_here(run: TrainingRun, plan: TrainingPlan, output: Path, on_progress: ProgressFn | None) -> dict[str, Any]:
    """Train in this process, save the model to ``output`` and return the final metrics."""
    trainer = load_trainer(run, plan, on_progress)
    with tempfile.TemporaryDirectory(prefix="posttrain-resume-") as scratch:
        # a checkpoint a Ray run wrote to object storage is copied here first
        resume_from = local_folder(plan.resume_from, Path(scratch)) if plan.resume_from else None
        trainer.train(resume_from_checkpoint=resume_from)
    metrics = final_metrics(trainer, run)
    save_model(trainer, run, output)
    return metrics


def _abandon(run: TrainingRun, output: Path, reason: str) -> None:
    run.job.fail(reason)
    shutil.rmtree(output, ignore_errors=True)
