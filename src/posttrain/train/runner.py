"""What every training method shares: the base config and the runner that turns a trainer into a job.

A method (SFT, reward, DPO, GRPO ...) writes a ``<Method>Config`` subclassing ``TrainConfig`` and
one function that calls ``run_training`` with a ``build_trainer(run) -> transformers.Trainer``.
``run_training`` does everything else, the same way for every method:

1. resolve the model and the dataset version; refuse an empty dataset, a dataset of the wrong
   kind or an output name already taken, all before a job exists;
2. start the job row (kind ``train.<method>``, the resolved config saved);
3. load model and tokenizer, build the Hugging Face dataset, call ``build_trainer``;
4. train, writing progress and every log dict into the job, checkpoints under
   ``artifacts/runs/<job id>`` (``resume`` continues the last failed run of the same output);
5. merge LoRA, save to ``artifacts/models/<output>``, register the model, mark the job succeeded.

On any failure the job is marked failed with its log kept, nothing is registered, the output folder
is removed and ``JobFailed`` is raised with a one-line message.

Torch, transformers and TRL are imported only inside functions, so configs stay light to import.
"""

from __future__ import annotations

import shutil
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from posttrain.datasets import read_rows, resolve
from posttrain.errors import Conflict, InvalidInput, JobFailed, NotFound, PosttrainError
from posttrain.jobs import JobCancelled, JobHandle, list_jobs, start_job
from posttrain.models.registry import check_name_free, get_model, register_model
from posttrain.names import Name
from posttrain.project import Project
from posttrain.records import DatasetKind, DatasetVersion, ModelKind, ModelRecord
from posttrain.stored_paths import store_path
from posttrain.validation import error_field, error_message

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer

__all__ = [
    "ProgressFn",
    "TrainConfig",
    "TrainingRun",
    "load_config",
    "parse_config",
    "run_training",
]

Device = Literal["auto", "cpu", "cuda"]
ProgressFn = Callable[[int, int], None]
JobFn = Callable[[str], None]  # told the job id as soon as the job row exists
C = TypeVar("C", bound="TrainConfig")

# TrainingArguments posttrain sets from its own settings (the setting to use instead), or for itself (None)
_SET_BY_POSTTRAIN: dict[str, str | None] = {
    "output_dir": None,
    "overwrite_output_dir": None,
    "resume_from_checkpoint": "resume",
    "num_train_epochs": "epochs",
    "max_steps": "max_steps",
    "learning_rate": "learning_rate",
    "per_device_train_batch_size": "batch_size",
    "per_device_eval_batch_size": "batch_size",
    "seed": "seed",
    "data_seed": "seed",
    "use_cpu": "device",
    "save_steps": "save_steps",
    "save_strategy": None,
    "logging_steps": "logging_steps",
    "disable_tqdm": None,
}


class TrainConfig(BaseModel):
    """Settings every training method shares; a method's config subclasses this."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="The registered model to start from (see 'posttrain models list').")
    dataset: str = Field(description="The dataset version to train on: NAME (latest) or NAME@V.")
    output: Name = Field(description="The name to register the trained model under; must be new.")
    epochs: float = Field(1.0, description="Passes over the data (fractions allowed).")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps; -1 means use epochs.")
    learning_rate: float = Field(1e-4, description="Peak learning rate.")
    batch_size: int = Field(8, description="Rows per device per step.")
    seed: int = Field(0, description="Seed for weights init, shuffling and dropout.")
    lora: bool = Field(False, description="Train a LoRA adapter and merge it into the saved model.")
    lora_r: int = Field(8, description="LoRA rank.")
    lora_alpha: int = Field(16, description="LoRA scaling numerator.")
    max_length: int = Field(512, description="Truncate tokenized rows to this many tokens.")
    logging_steps: int = Field(5, description="Log (and record in the job) every this many steps.")
    save_steps: int = Field(100, description="Write a checkpoint every this many steps.")
    resume: bool = Field(False, description="Continue the last failed run of this output from its checkpoint.")
    device: Device = Field("auto", description="auto (CUDA when available), cpu or cuda.")
    trainer_args: dict[str, Any] = Field(
        default_factory=dict,
        description="More TRL/Transformers training arguments (gradient_accumulation_steps, warmup_ratio, "
        "lr_scheduler_type, weight_decay, bf16, report_to ...); names are checked against the method's TRL config.",
        json_schema_extra={"cli": False},
    )

    trl_config: ClassVar[str] = "SFTConfig"  # the trl class whose fields trainer_args may set
    trl_owned: ClassVar[frozenset[str]] = frozenset()  # its fields this method sets from its own settings

    @field_validator("trainer_args")
    @classmethod
    def _known_trainer_args(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            return value
        fields = _trl_fields(cls.trl_config)
        for key in value:
            _check_trainer_arg(cls, key, fields)
        return value

    @field_validator("epochs")
    @classmethod
    def _positive_epochs(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be > 0; pass e.g. --epochs 1, or set --max-steps")
        return value

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, value: int) -> int:
        if value < -1 or value == 0:
            raise ValueError("must be a positive step count, or -1 to train for --epochs")
        return value

    @field_validator("learning_rate")
    @classmethod
    def _lr(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError("must be in (0, 1]; typical values are 1e-5 to 1e-3, e.g. --learning-rate 1e-4")
        return value

    @field_validator("batch_size", "lora_r", "lora_alpha", "max_length", "logging_steps", "save_steps")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("model", "dataset")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()


def _trl_fields(name: str) -> set[str]:
    import dataclasses

    import trl

    return {f.name for f in dataclasses.fields(getattr(trl, name))}


def _check_trainer_arg(cls: type[TrainConfig], key: str, fields: set[str]) -> None:
    """Raise ValueError naming ``key`` when trainer_args may not set it, and what to do instead."""
    if key not in fields:
        raise ValueError(f"{key!r} is not a field of trl.{cls.trl_config}; see its documentation for the names")
    instead = _SET_BY_POSTTRAIN.get(key, key if key in cls.model_fields else None)
    if key in _SET_BY_POSTTRAIN or key in cls.model_fields or key in cls.trl_owned:
        hint = f"use the {instead!r} setting instead" if instead else "remove it"
        raise ValueError(f"{key!r} is set by posttrain itself; {hint}")


def parse_config(cls: type[C], data: dict[str, Any]) -> C:
    """Validate ``data`` as ``cls``; raise InvalidInput with a one-line message naming the fix."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field, message = error_field(first) or None, error_message(first)
        if first["type"] == "extra_forbidden":
            message = f"unknown setting; the settings are: {', '.join(cls.model_fields)}"
        elif first["type"] == "missing":
            message = "is required"
        raise InvalidInput(f"{field}: {message}", field=field) from None


def load_config(cls: type[C], yaml_path: Path | None = None, overrides: dict[str, Any] | None = None) -> C:
    """Return ``cls`` from a YAML file (optional) with ``overrides`` (CLI flags; None means unset) on top."""
    data: dict[str, Any] = {}
    if yaml_path is not None:
        data = _read_yaml(Path(yaml_path))
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return parse_config(cls, data)


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise NotFound(f"no config file {path}; check the path given to --config", field="config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path} is not valid YAML: {str(exc).splitlines()[0]}", field="config") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInput(f"{path} must hold a mapping of setting: value", field="config")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


class TrainingRun:
    """Everything a method's ``build_trainer`` gets: the loaded model, tokenizer, rows and shared args."""

    def __init__(
        self,
        project: Project,
        config: TrainConfig,
        job: JobHandle,
        base: ModelRecord,
        version: DatasetVersion,
        run_dir: Path,
    ) -> None:
        self.project = project
        self.config = config
        self.job = job
        self.base = base
        self.version = version
        self.run_dir = run_dir
        self.model: PreTrainedModel = None  # type: ignore[assignment]  # set by run_training before build_trainer
        self.tokenizer: PreTrainedTokenizerBase = None  # type: ignore[assignment]
        self.rows: Dataset = None  # type: ignore[assignment]
        self.metrics: dict[str, Any] = {}  # extra final metrics a method or callback adds (e.g. the guard)

    @property
    def use_cpu(self) -> bool:
        """Return whether to train on CPU (``device`` cpu, or auto without CUDA)."""
        return _use_cpu(self.config.device)

    def trainer_args(self) -> dict[str, Any]:
        """Return the TrainingArguments every TRL config shares; pass them as ``XConfig(**run.trainer_args(), ...)``."""
        import torch

        cfg, cpu = self.config, self.use_cpu
        return {
            "output_dir": str(self.run_dir),
            "num_train_epochs": cfg.epochs,
            "max_steps": cfg.max_steps,
            "learning_rate": cfg.learning_rate,
            "per_device_train_batch_size": cfg.batch_size,
            "per_device_eval_batch_size": cfg.batch_size,
            "seed": cfg.seed,
            "data_seed": cfg.seed,
            "use_cpu": cpu,
            "bf16": False if cpu else torch.cuda.is_bf16_supported(),
            "report_to": "none",
            "disable_tqdm": True,
            "save_strategy": "steps",
            "save_steps": cfg.save_steps,
            "save_total_limit": 2,
            "logging_steps": cfg.logging_steps,
            "logging_first_step": True,
            "gradient_checkpointing": False,  # TRL turns it on by default; it only slows small models
            "dataloader_num_workers": 0,
            **cfg.trainer_args,  # checked when the config was parsed: known, and not set above or by the method
        }

    def peft_config(self, task_type: str = "CAUSAL_LM") -> Any:
        """Return a LoraConfig when ``config.lora`` is set, else None (pass it as ``peft_config=``)."""
        if not self.config.lora:
            return None
        from peft import LoraConfig

        return LoraConfig(
            r=self.config.lora_r,
            lora_alpha=self.config.lora_alpha,
            target_modules="all-linear",
            task_type=task_type,
        )


BuildTrainer = Callable[[TrainingRun], "Trainer"]
LoadModel = Callable[[str], "PreTrainedModel"]


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
    loads a sequence classifier); ``model_kind`` is the kind registered.
    """
    base, version = _check_inputs(project, config, dataset_kind, columns)
    resume_from = _checkpoint_to_resume(project, method, config) if config.resume else None
    job = start_job(project, f"train.{method}", _job_config(method, config, base, version, resume_from))
    if on_job is not None:  # the server answers 202 with this id while the run goes on
        on_job(job.id)
    run = TrainingRun(project, config, job, base, version, project.artifacts / "runs" / job.id)
    output = project.artifacts / "models" / config.output
    try:
        return _train(run, method, build_trainer, on_progress, columns, model_kind, load_model, resume_from, output)
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
    _use_cpu(config.device)
    return base, version


def _use_cpu(device: Device) -> bool:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("device: cuda was asked for but no GPU is visible; use --device cpu", field="device")
    return device == "cpu" or not torch.cuda.is_available()


def _check_output_free(project: Project, name: str) -> None:
    check_name_free(project, name)
    folder = project.artifacts / "models" / name
    if folder.exists():
        raise Conflict(f"{folder} exists but is not registered; remove it or pass another --output", field="output")


def _checkpoint_to_resume(project: Project, method: str, config: TrainConfig) -> str:
    for job in list_jobs(project, kind=f"train.{method}", limit=1000):
        if job.config.get("output") != config.output:
            continue
        if job.state in ("failed", "cancelled") and job.checkpoint and Path(job.checkpoint).is_dir():
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
    run: TrainingRun,
    method: str,
    build_trainer: BuildTrainer,
    on_progress: ProgressFn | None,
    columns: Sequence[str],
    model_kind: ModelKind,
    load_model: LoadModel | None,
    resume_from: str | None,
    output: Path,
) -> ModelRecord:
    _load(run, load_model, columns)
    trainer = build_trainer(run)
    trainer.add_callback(_job_callback(run.job, on_progress))
    _quiet(trainer)
    run.job.log(f"train.{method}: {run.base.name} on {run.version.ref} ({len(run.rows)} rows) -> {run.config.output}")
    trainer.train(resume_from_checkpoint=resume_from)
    metrics = _final_metrics(trainer, run)
    _save(trainer, run, output)
    record = register_model(
        run.project,
        run.config.output,
        output,
        kind=model_kind,
        base=run.base.base or run.base.name,
        parent=run.base.name,
        run_id=run.job.id,
        dataset_versions=[run.version.ref],
        recipe={"method": method, "config": run.config.model_dump(mode="json")},
        metrics=metrics,
    )
    result = {"model": record.name, "model_id": record.id, "metrics": metrics}
    run.job.succeed(output=store_path(run.project.root, output), result=result)
    return record


def _load(run: TrainingRun, load_model: LoadModel | None, columns: Sequence[str]) -> None:
    import datasets
    import torch
    import transformers
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # the CLI shows one progress bar for the run; the libraries' own bars would interleave with it
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()  # e.g. the expected "score.weight MISSING" of a new reward head
    # TRL 1.16 still sets the old name itself; the rename is transformers' business, not the user's
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning)

    path = run.base.path
    run.tokenizer = AutoTokenizer.from_pretrained(path)
    if run.tokenizer.pad_token is None:
        run.tokenizer.pad_token = run.tokenizer.eos_token
    if load_model is not None:
        run.model = load_model(path)
    else:
        run.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    table = read_rows(run.version)
    if columns:
        table = table.select(list(columns))
    run.rows = Dataset.from_list([_clean_row(row) for row in table.to_pylist()])


def _clean_row(row: dict[str, Any]) -> dict[str, Any]:
    """Reduce message lists to role and content: Parquet fills absent keys (tool_calls ...) with nulls."""
    return {key: _clean_messages(value) for key, value in row.items()}


def _clean_messages(value: Any) -> Any:
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        return [{"role": m["role"], "content": m.get("content") or ""} for m in value]
    return value


def _final_metrics(trainer: Trainer, run: TrainingRun) -> dict[str, Any]:
    """Return the last logged value of every metric, eval metrics if the trainer has an eval set, extras."""
    metrics: dict[str, Any] = {}
    for entry in trainer.state.log_history:
        metrics.update(entry)
    if trainer.eval_dataset is not None:
        metrics.update(trainer.evaluate())
    metrics.update({k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in run.metrics.items()})
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool | dict | list)}


def _quiet(trainer: Trainer) -> None:
    """Drop the callback that prints every log dict to stdout: the job records them instead."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def _save(trainer: Trainer, run: TrainingRun, output: Path) -> None:
    model = trainer.accelerator.unwrap_model(trainer.model)
    if run.config.lora and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    output.mkdir(parents=True, exist_ok=False)
    model.save_pretrained(output)
    run.tokenizer.save_pretrained(output)


def _abandon(run: TrainingRun, output: Path, reason: str) -> None:
    run.job.fail(reason)
    shutil.rmtree(output, ignore_errors=True)


def _job_callback(job: JobHandle, on_progress: ProgressFn | None) -> Any:
    """Return a TrainerCallback writing progress, log dicts and checkpoints into the job."""
    from transformers import TrainerCallback

    class JobCallback(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.max_steps:
                job.progress(state.global_step / state.max_steps)
            if on_progress is not None:
                on_progress(state.global_step, state.max_steps)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            values = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
            if values:
                job.metric(state.global_step, **values)
                job.log(f"step {state.global_step}: " + " ".join(f"{k}={v:.4g}" for k, v in values.items()))

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            job.checkpoint(str(Path(args.output_dir) / f"checkpoint-{state.global_step}"))

    return JobCallback()
