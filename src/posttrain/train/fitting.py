"""One fit's pieces, the same in this process and in each Ray Train worker: the run, its trainer, its output.

``load_trainer`` loads the model, tokenizer and rows, builds the method's trainer and makes it
report into ``run.job``; ``final_metrics`` and ``save_model`` take what it trained. Nothing here
touches the warehouse (a Ray worker has none): ``run.project`` may be None there.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import BaseModel

from posttrain.datasets import read_rows
from posttrain.errors import InvalidInput
from posttrain.jobs import JobHandle
from posttrain.records import DatasetVersion, ModelRecord
from posttrain.train.config import Device, TrainConfig

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer

    from posttrain.project import Project

__all__ = [
    "BuildTrainer",
    "LoadModel",
    "ProgressFn",
    "TrainingPlan",
    "TrainingRun",
    "final_metrics",
    "load_trainer",
    "save_model",
    "use_cpu",
]

ProgressFn = Callable[[int, int], None]


class TrainingRun:
    """Everything a method's ``build_trainer`` gets: the loaded model, tokenizer, rows and shared args."""

    def __init__(
        self,
        project: Project | None,
        config: TrainConfig,
        job: JobHandle,
        base: ModelRecord,
        version: DatasetVersion,
        run_dir: Path,
    ) -> None:
        self.project = project  # None in a Ray Train worker, which has no warehouse
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
        return use_cpu(self.config.device)

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


class TrainingPlan(NamedTuple):
    """How a method trains, beside its config: what ``run_training`` hands to the fit, here or on Ray Train."""

    method: str
    build_trainer: BuildTrainer
    columns: tuple[str, ...]
    load_model: LoadModel | None
    resume_from: str | None


def use_cpu(device: Device) -> bool:
    """Return whether to train on CPU; raise InvalidInput when cuda is asked for and none is visible."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("device: cuda was asked for but no GPU is visible; use --device cpu", field="device")
    return device == "cpu" or not torch.cuda.is_available()


def load_trainer(run: TrainingRun, plan: TrainingPlan, on_progress: ProgressFn | None) -> Trainer:
    """Load the run's model, tokenizer and rows, build the method's trainer and make it report to ``run.job``.

    The same in this process and in each Ray Train worker (where ``run.job`` relays to the driver).
    """
    _load(run, plan.load_model, plan.columns)
    trainer = plan.build_trainer(run)
    trainer.add_callback(_job_callback(run.job, on_progress))
    _quiet(trainer)
    rows = len(run.rows)
    run.job.log(f"train.{plan.method}: {run.base.name} on {run.version.ref} ({rows} rows) -> {run.config.output}")
    return trainer


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


def final_metrics(trainer: Trainer, run: TrainingRun) -> dict[str, Any]:
    """Return the last logged value of every metric, eval metrics if the trainer has an eval set, extras.

    With several Ray Train workers every one must call it (the evaluation is shared out among them).
    """
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


def save_model(trainer: Trainer, run: TrainingRun, output: Path) -> None:
    """Save the trained model (LoRA merged into it) and the tokenizer to the new folder ``output``."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if run.config.lora and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    output.mkdir(parents=True, exist_ok=False)
    model.save_pretrained(output)
    run.tokenizer.save_pretrained(output)


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
