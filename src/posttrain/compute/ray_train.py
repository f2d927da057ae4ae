"""Training on Ray Train: ``run_training``'s fit spread over ``workers`` data-parallel workers.

``run_training`` does everything around the fit on the driver (checks, the job row, registering the
model); with ``compute.backend = "ray"`` it calls ``fit`` here instead of ``trainer.train()``:

- inputs: the base model's folder and the dataset version's Parquet file are put under
  ``compute.storage`` (no copy when it is a local folder); each worker reads them from there;
- each worker builds its own ``TrainingRun`` (no warehouse: ``run.project`` is None and ``run.job``
  is a relay), loads model, tokenizer and rows with ``fitting.load_trainer`` exactly as a local run
  does, and trains under ``torch.distributed`` (gloo on CPUs, NCCL on GPUs, as Ray Train sets up);
  each worker takes its share of every step's rows, so a step sees ``workers * batch_size`` rows;
- the job relay: rank 0's progress, metrics, log lines and checkpoints go to a small actor that a
  loop on the driver drains into the job row and ``on_progress`` while training runs. When the job
  is cancelled the driver raises the actor's stop flag; the workers agree on it at the next step
  (an all-reduce, so every rank stops at the same step) and end without saving a model;
- checkpoints: each one the trainer saves is also reported to Ray Train (rank 0's files) under
  ``<storage>/ray-train/<job id>``; a worker lost mid-run restarts the worker group once
  (``FailureConfig(max_failures=1)``) from the last of them; a second failure fails the job with a
  one-line message;
- the end: every worker computes the final metrics (an eval set is shared out among them); rank 0
  saves the model (LoRA merged) under ``<storage>/train/<job id>/model`` and sends the metrics,
  ``run.metrics`` extras (the DPO guard's report) included; the driver moves the model to
  ``artifacts/models/<output>``.

With a local ``compute.storage`` (the default, the project's artifacts folder) the workers share
the driver's filesystem, so the trainer writes its checkpoints to ``artifacts/runs/<job id>`` as a
local run does and the job records each one's path. With object storage (``s3://…``) the trainer
writes them to each worker's scratch folder, and the job records the URL of Ray Train's upload
(``<storage>/ray-train/<job id>/checkpoint-N``) once ``report`` has returned; ``--resume`` finds it
there, and the workers (or a local run) copy it to their scratch folder to start from it. After a
success the job's ``ray-train`` folder is removed (the model is saved; after a failure or a
cancellation it stays for ``--resume``).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from posttrain.compute import Storage, storage
from posttrain.compute.ray_runtime import connect, unwrap
from posttrain.compute.storage import local_folder
from posttrain.errors import InvalidInput, JobFailed
from posttrain.jobs import JobCancelled, JobHandle
from posttrain.records import DatasetVersion, ModelRecord
from posttrain.train.config import TrainConfig
from posttrain.train.fitting import (
    ProgressFn,
    TrainingPlan,
    TrainingRun,
    final_metrics,
    load_trainer,
    save_model,
)

if TYPE_CHECKING:
    from transformers import Trainer, TrainerCallback

    from posttrain.project import Project

__all__ = ["fit"]

POLL_S = 0.5  # how often the driver drains the relay and checks for cancellation


class _Relay:
    """The actor between rank 0 and the driver: job events one way, the stop flag the other."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.stopping = False
        self.outcome: dict[str, Any] | None = None

    def push(self, event: tuple[Any, ...]) -> None:
        self.events.append(event)

    def take(self) -> list[tuple[Any, ...]]:
        events, self.events = self.events, []
        return events

    def stop(self) -> None:
        self.stopping = True

    def should_stop(self) -> bool:
        return self.stopping

    def finish(self, outcome: dict[str, Any]) -> None:
        self.outcome = outcome

    def result(self) -> dict[str, Any] | None:
        return self.outcome


class _Spec(NamedTuple):
    """What every worker gets: the run's records, where its inputs and outputs are, the relay."""

    config: TrainConfig
    job_id: str
    base: ModelRecord
    version: DatasetVersion
    plan: TrainingPlan
    relay: Any
    storage_url: str
    model_path: str  # the base model's folder under storage
    rows_path: str  # the version's Parquet file under storage
    run_dir: str  # the trainer's output_dir when storage is local (shared with the driver)
    output_path: str  # where rank 0 saves the trained model, under storage


def fit(
    project: Project, run: TrainingRun, plan: TrainingPlan, output: Path, *, on_progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Train ``run`` on the Ray cluster, put the model in ``output`` and return the final metrics.

    Raises JobCancelled when the job was cancelled meanwhile, or the workers' error (one line).
    """
    settings = project.settings.compute
    ray = connect(settings)
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    workers = run.config.workers or settings.workers
    use_gpu = _use_gpu(ray, run.config.device, workers, settings.cpus_per_worker)
    store = storage(project)
    relay = ray.remote(num_cpus=0)(_Relay).remote()
    spec = _spec(store, run, plan, relay, use_gpu)
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"spec": spec},
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": settings.cpus_per_worker}
        ),
        run_config=RunConfig(
            name=run.job.id,
            storage_path=store.path("ray-train"),
            storage_filesystem=store.arrow_filesystem(),
            failure_config=_failure_config(FailureConfig),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    try:
        outcome = _follow(ray, trainer, relay, run.job, on_progress, what=f"train.{plan.method}")
        _fetch(store, spec.output_path, output)
        store.remove(store.path("ray-train", run.job.id))  # the model is saved: its checkpoints are not needed
    finally:
        store.remove(store.path("train", run.job.id))
    return outcome


def _failure_config(failure_config: Any) -> Any:
    """Restart the worker group once after a lost worker; give up when the group cannot start again.

    A restart waits for the group's resources (60 s, Ray Train's default). Ray Train retries such a
    wait without end by default, so a cluster that lost a node for good would hang the job; here the
    wait is tried twice, then the job fails naming the cause.
    """
    fields = getattr(failure_config, "__dataclass_fields__", {})
    limit = {"controller_failure_limit": 1} if "controller_failure_limit" in fields else {}
    return failure_config(max_failures=1, **limit)


def _use_gpu(ray: Any, device: str, workers: int, cpus_per_worker: float) -> bool:
    """Return whether the workers train on GPUs; refuse what the cluster cannot give."""
    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 0)
    if device == "cuda" and gpus < workers:
        raise InvalidInput(
            f"device: cuda for {workers} workers needs {workers} GPUs; the Ray cluster has {gpus:g}; "
            "lower --workers or use --device cpu",
            field="device",
        )
    if workers * cpus_per_worker > cpus:
        raise InvalidInput(
            f"workers: {workers} workers of {cpus_per_worker:g} CPU need {workers * cpus_per_worker:g} CPUs; "
            f"the Ray cluster has {cpus:g}; lower --workers or compute.cpus_per_worker",
            field="workers",
        )
    return device != "cpu" and gpus >= workers


def _spec(store: Storage, run: TrainingRun, plan: TrainingPlan, relay: Any, use_gpu: bool) -> _Spec:
    """Put the inputs under storage (when it is not this machine's folder) and describe the run to workers."""
    model_path, rows_path = run.base.path, run.version.path
    if not store.is_local:
        model_path = store.path("inputs", "models", run.base.id)
        if not store.exists(model_path):
            store.put_dir(run.base.path, "inputs", "models", run.base.id)
        rows_path = store.put_file(run.version.path, "inputs", "datasets", f"{run.version.id}.parquet")
    # the workers' own devices decide "auto" there; the driver's do not matter
    config = run.config.model_copy(update={"device": "cuda" if use_gpu else "cpu"})
    return _Spec(
        config=config,
        job_id=run.job.id,
        base=run.base,
        version=run.version,
        plan=plan,
        relay=relay,
        storage_url=store.url_root,
        model_path=model_path,
        rows_path=rows_path,
        run_dir=str(run.run_dir),
        output_path=store.path("train", run.job.id, "model"),
    )


class _Fit(threading.Thread):
    """``trainer.fit()`` in a thread, so the driver's own thread drains the relay into the job row."""

    def __init__(self, trainer: Any) -> None:
        super().__init__(name="posttrain-ray-train", daemon=True)
        self.trainer = trainer
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.trainer.fit()
        except BaseException as exc:  # handed to the driver's thread, which raises it
            self.error = exc


def _follow(
    ray: Any, trainer: Any, relay: Any, job: JobHandle, on_progress: ProgressFn | None, *, what: str
) -> dict[str, Any]:
    """Run the fit, writing the relayed events into the job until it ends; return rank 0's outcome."""
    fitting = _Fit(trainer)
    fitting.start()
    cancelled: JobCancelled | None = None
    try:
        while True:
            fitting.join(POLL_S)
            done = not fitting.is_alive()
            seen = cancelled
            for event in ray.get(relay.take.remote()):  # a progress write may find the job cancelled
                cancelled = _apply(event, job, on_progress) or cancelled
            cancelled = cancelled or _check_cancelled(job)
            if cancelled is not None and seen is None:
                relay.stop.remote()  # the workers agree on it at their next step
            if done:
                break
    except BaseException:
        relay.stop.remote()  # Ctrl-C: the workers stop at their next step
        raise
    return _outcome(ray, relay, fitting, cancelled, what)


def _outcome(ray: Any, relay: Any, fitting: _Fit, cancelled: JobCancelled | None, what: str) -> dict[str, Any]:
    if cancelled is not None:
        raise cancelled
    if fitting.error is not None:
        raise _unwrap(fitting.error, what) from None
    outcome = ray.get(relay.result.remote())
    if outcome is None:
        raise JobFailed(f"{what}: the Ray Train workers ended without saving a model")
    return cast(dict[str, Any], outcome)


def _check_cancelled(job: JobHandle) -> JobCancelled | None:
    try:
        job.check_cancelled()
    except JobCancelled as exc:
        return exc
    return None


def _apply(event: tuple[Any, ...], job: JobHandle, on_progress: ProgressFn | None) -> JobCancelled | None:
    """Write one relayed event into the job; return JobCancelled when a progress write finds the job cancelled."""
    kind, *args = event
    if kind == "progress":
        try:
            job.progress(args[0])
        except JobCancelled as exc:
            return exc
    elif kind == "step" and on_progress is not None:
        on_progress(args[0], args[1])
    elif kind == "metric":
        job.metric(args[0], **args[1])
    elif kind == "log":
        job.log(args[0])
    elif kind == "checkpoint":
        job.checkpoint(args[0])
    return None


def _unwrap(exc: BaseException, what: str) -> Exception:
    """Return the error of the lowest-ranked failed worker, else Ray Train's own, as one line."""
    failures = getattr(exc, "worker_failures", None) or {}
    if failures:
        return unwrap(failures[min(failures)], what)
    cause = getattr(exc, "controller_failure", exc)
    if type(cause).__name__ == "WorkerGroupStartupTimeoutError":  # after a lost node, the group cannot restart
        return JobFailed(
            f"{what}: the Ray cluster could not start the training workers again after losing one "
            f"({_free_cpus()}); the last checkpoint stays for --resume once the cluster is whole"
        )
    return unwrap(cause, what)


def _free_cpus() -> str:
    import ray

    try:
        return f"{ray.available_resources().get('CPU', 0):g} of {ray.cluster_resources().get('CPU', 0):g} CPUs free"
    except Exception:  # the cluster itself may be gone
        return "the cluster did not answer"


def _fetch(store: Storage, path: str, output: Path) -> None:
    """Bring rank 0's saved model from storage to ``output``."""
    if store.is_local:
        shutil.move(path, output)
    else:
        store.get_dir(path, output)


# ---- in each Ray Train worker ----


class _JobRelay:
    """A worker's stand-in for the JobHandle: rank 0 sends every call to the driver; other ranks stay silent."""

    def __init__(self, relay: Any, job_id: str, *, speaking: bool, local_storage: bool) -> None:
        self.relay, self.id, self.speaking, self.local_storage = relay, job_id, speaking, local_storage

    def _send(self, *event: Any) -> None:
        if self.speaking:
            self.relay.push.remote(event)  # the actor runs one caller's calls in order

    def progress(self, fraction: float) -> None:
        self._send("progress", fraction)

    def check_cancelled(self) -> None:
        """The driver checks; workers stop when told through ``should_stop``."""

    def metric(self, step: int, **values: float) -> None:
        self._send("metric", step, values)

    def log(self, line: str) -> None:
        self._send("log", line)

    def checkpoint(self, path: str) -> None:
        """Record the trainer's checkpoint folder when the driver can read it (a local storage)."""
        if self.local_storage:
            self._send("checkpoint", path)

    def uploaded(self, url: str) -> None:
        """Record the URL of a checkpoint Ray Train has written to object storage."""
        if not self.local_storage:
            self._send("checkpoint", url)

    def step(self, done: int, total: int) -> None:
        self._send("step", done, total)

    def should_stop(self) -> bool:
        import ray

        return bool(ray.get(self.relay.should_stop.remote())) if self.speaking else False

    def finish(self, outcome: dict[str, Any]) -> None:
        import ray

        ray.get(self.relay.finish.remote(outcome))


def _train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's loop: load, train (resuming from the cluster's checkpoint after a lost worker), save on rank 0."""
    import ray.train
    from ray.train.huggingface.transformers import prepare_trainer

    spec: _Spec = loop_config["spec"]
    context = ray.train.get_context()
    rank = context.get_world_rank()
    store = Storage(spec.storage_url)
    job = _JobRelay(spec.relay, spec.job_id, speaking=rank == 0, local_storage=store.is_local)
    job.log(f"ray: {context.get_world_size()} workers, {_backend()}")
    with tempfile.TemporaryDirectory(prefix="posttrain-train-") as scratch, contextlib.ExitStack() as stack:
        run = _worker_run(spec, store, cast(JobHandle, job), Path(scratch))
        trainer = load_trainer(run, spec.plan, job.step)
        cluster = _cluster_callback(job, rank, store.url("ray-train", spec.job_id))
        trainer.add_callback(cluster)
        trainer = prepare_trainer(trainer)
        trainer.train(resume_from_checkpoint=_resume_from(spec, job, stack, Path(scratch)))
        if getattr(cluster, "cancelled", False):
            return
        metrics = final_metrics(trainer, run)
        if rank == 0:
            _save(trainer, run, spec, store, Path(scratch))
            job.finish(metrics)


def _backend() -> str:
    import torch.distributed as dist

    return str(dist.get_backend()) if dist.is_available() and dist.is_initialized() else "no process group"


def _worker_run(spec: _Spec, store: Storage, job: JobHandle, scratch: Path) -> TrainingRun:
    """Return this worker's TrainingRun, its inputs read from storage (in place when storage is local)."""
    model_path, rows_path, run_dir = spec.model_path, spec.rows_path, spec.run_dir
    if not store.is_local:
        model_path = str(store.get_dir(spec.model_path, scratch / "base"))
        rows_path = str(scratch / "rows.parquet")
        store.fs.get_file(spec.rows_path, rows_path)
        run_dir = str(scratch / "run")
    base = spec.base.model_copy(update={"path": model_path})
    version = spec.version.model_copy(update={"path": rows_path})
    return TrainingRun(None, spec.config, job, base, version, Path(run_dir))


def _resume_from(spec: _Spec, job: _JobRelay, stack: contextlib.ExitStack, scratch: Path) -> str | None:
    """Return the checkpoint to start from: Ray Train's latest after a restart, else the one --resume found
    (copied from object storage into ``scratch`` when it is a URL)."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return local_folder(spec.plan.resume_from, scratch / "resume") if spec.plan.resume_from else None
    folder = stack.enter_context(checkpoint.as_directory())
    job.log(f"ray: the worker group restarted; resuming from {Path(checkpoint.path).name}")
    return str(folder)


def _save(trainer: Trainer, run: TrainingRun, spec: _Spec, store: Storage, scratch: Path) -> None:
    if store.is_local:
        save_model(trainer, run, Path(spec.output_path))
        return
    save_model(trainer, run, scratch / "model")
    store.put_dir(scratch / "model", "train", spec.job_id, "model")


def _agree(flag: bool, device: Any) -> bool:
    """Return whether any worker raised ``flag`` (every worker calls it at the same point of a step)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _cluster_callback(job: _JobRelay, rank: int, uploads: str) -> TrainerCallback:
    """Return the callback that stops every worker together and reports checkpoints to Ray Train
    (which writes them under the URL ``uploads``)."""
    from transformers import TrainerCallback

    class ClusterCallback(TrainerCallback):
        cancelled = False

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if _agree(job.should_stop(), args.device):
                self.cancelled = control.should_training_stop = True

        def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # a callback (the DPO guard) may stop on what it saw; the ranks must stop at the same step
            control.should_training_stop = _agree(control.should_training_stop, args.device)

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            name = _report_checkpoint(Path(args.output_dir), state.global_step, rank)
            job.uploaded(f"{uploads}/{name}")

    return ClusterCallback()


def _report_checkpoint(output_dir: Path, step: int, rank: int) -> str:
    """Hand rank 0's checkpoint of ``step`` to Ray Train, which writes it to
    ``<storage>/ray-train/<job id>/checkpoint-<step>``; return that folder's name. Every rank must call
    ``report`` (a barrier); it returns once the upload is done."""
    import ray.train

    name = f"checkpoint-{step}"
    checkpoint = ray.train.Checkpoint.from_directory(str(output_dir / name)) if rank == 0 else None
    ray.train.report({"step": step}, checkpoint=checkpoint, checkpoint_dir_name=name)
    return name
