"""The settings every training method shares (``TrainConfig``) and how configs are read from YAML and flags.

No torch, transformers or TRL here: ``trl`` is imported only to check ``trainer_args`` names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from posttrain.errors import InvalidInput, NotFound
from posttrain.names import Name
from posttrain.validation import error_field, error_message

__all__ = ["Device", "TrainConfig", "load_config", "parse_config"]

Device = Literal["auto", "cpu", "cuda"]
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
    workers: int | None = Field(
        None,
        description="Ray Train workers (data-parallel, batch_size rows each) when compute.backend is ray; "
        "default compute.workers. Without Ray, 1.",
    )
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

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= 4096:
            raise ValueError("must be a worker count from 1 to 4096, e.g. --workers 2")
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
