"""Distillation by rejection sampling: a teacher answers, a filter keeps the good answers, a student learns them.

``train_distill`` runs three recorded steps:

1. the teacher samples ``samples_per_prompt`` completions for each row of a ``prompts`` dataset
   (``posttrain.models.generation.generate``: they land in the warehouse as interactions tagged
   ``output:distill-<output>-<id>``);
2. a verifier (against the row's ``answer``) or a reward model scores each one, and those scoring at
   least ``threshold`` become an ``sft`` dataset version (source ``distill``, its recipe naming the
   teacher, its sources the interactions);
3. the student is fine-tuned on that version with the SFT trainer, as job ``train.distill``, and
   registered with the student as parent, the dataset version, and the teacher in its recipe.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from posttrain.datasets import read_rows, resolve, write_version
from posttrain.errors import InvalidInput
from posttrain.evals.verifiers import get_verifier, validated_name
from posttrain.ids import new_id
from posttrain.models.registry import check_name_free, get_model
from posttrain.project import Project
from posttrain.records import DatasetVersion, ModelRecord
from posttrain.train.runner import JobFn, ProgressFn, run_training
from posttrain.train.sft import SFTConfig, build_sft_trainer

__all__ = ["DistillConfig", "train_distill"]


class DistillConfig(SFTConfig):
    """Settings for ``train_distill``: teacher sampling, the filter, then SFT of the student."""

    teacher: str = Field(description="The registered model that answers the prompts.")
    student: str = Field(description="The registered model to fine-tune on the accepted samples.")
    model: str = Field("", description="Set from student.", json_schema_extra={"cli": False})
    prompts: str = Field(description="The prompts dataset version: NAME (latest) or NAME@V.")
    dataset: str = Field(
        "", description="Name of the sft dataset to write accepted samples to; default OUTPUT-distill."
    )
    samples_per_prompt: int = Field(4, description="Teacher completions sampled per prompt.")
    verifier: str | None = Field(
        None, description="Verifier scoring each sample against the row's answer; default: each row's own verifier."
    )
    reward_model: str | None = Field(None, description="A registered reward-model to score samples instead.")
    threshold: float = Field(0.5, description="Keep samples scoring at least this.")
    max_new_tokens: int = Field(32, description="Most new tokens per teacher sample.")
    temperature: float = Field(1.0, description="Teacher sampling temperature (0 is greedy).")

    @model_validator(mode="before")
    @classmethod
    def _student_is_model(cls, data: Any) -> Any:
        """The shared SFT path trains ``model``; here that is always the student."""
        if isinstance(data, dict) and data.get("student"):
            if data.get("model") and data["model"] != data["student"]:
                raise ValueError("give the student as student; model is set from it")
            return {**data, "model": data["student"]}
        return data

    @field_validator("samples_per_prompt", "max_new_tokens")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("verifier")
    @classmethod
    def _known_verifier(cls, value: str | None) -> str | None:
        return validated_name(value)

    @model_validator(mode="after")
    def _one_filter(self) -> DistillConfig:
        if self.verifier and self.reward_model:
            raise ValueError("give a verifier or a reward_model to filter with, not both")
        return self


def train_distill(
    project: Project, config: DistillConfig, *, on_progress: ProgressFn | None = None, on_job: JobFn | None = None
) -> ModelRecord:
    """Sample the teacher, keep the samples the filter accepts as an sft dataset, train the student on it."""
    teacher = _check_inputs(project, config)
    version = distill_dataset(project, config, teacher)
    sft_config = config.model_copy(update={"dataset": version.ref})
    return run_training(
        project,
        "distill",
        sft_config,
        build_sft_trainer,
        on_progress,
        dataset_kind="sft",
        columns=("prompt", "completion"),
        on_job=on_job,
    )


def _check_inputs(project: Project, config: DistillConfig) -> ModelRecord:
    """Fail before sampling: unknown models or verifier, a wrong dataset kind, a taken output name."""
    if config.verifier:
        get_verifier(config.verifier, project.settings.functions.verifiers)
    teacher = get_model(project, config.teacher)
    if teacher.kind != "causal-lm":
        raise InvalidInput(f"teacher {teacher.name!r} is a {teacher.kind}; use a causal-lm", field="teacher")
    get_model(project, config.model)
    check_name_free(project, config.output)
    prompts = resolve(project, config.prompts)
    if prompts.kind != "prompts":
        raise InvalidInput(
            f"{prompts.ref} is a {prompts.kind} dataset; --prompts needs a prompts dataset", field="prompts"
        )
    if config.reward_model:
        get_model(project, config.reward_model)
    return teacher


def distill_dataset(project: Project, config: DistillConfig, teacher: ModelRecord) -> DatasetVersion:
    """Sample the teacher over ``config.prompts`` and write the accepted samples as an sft dataset version."""
    from posttrain.models.generation import generate

    prompts = resolve(project, config.prompts)
    rows = read_rows(prompts).to_pylist()
    report = generate(
        project,
        model=teacher.name,
        prompts=prompts.ref,
        samples=config.samples_per_prompt,
        output=f"distill-{config.output}-{new_id().lower()}",
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        seed=config.seed,
    )
    samples = _read_samples(project, report.tag, rows)
    scores = _score(project, config, samples)
    kept = [s for s, score in zip(samples, scores, strict=True) if score is not None and score >= config.threshold]
    if not kept:
        raise InvalidInput(
            f"teacher {teacher.name!r} gave no sample scoring >= {config.threshold} out of {len(samples)}; "
            "raise --samples-per-prompt, lower --threshold or use a stronger teacher",
            field="teacher",
        )
    return _write(project, config, teacher, prompts, kept, len(samples))


def _read_samples(project: Project, tag: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the generated interactions as (id, prompt row, completion) dicts, in prompt order."""
    found = (
        project.cursor()
        .execute("SELECT id, response, metadata FROM interactions WHERE list_contains(tags, ?)", [tag])
        .fetchall()
    )
    samples = []
    for interaction_id, response, metadata in found:
        meta = orjson.loads(metadata) if isinstance(metadata, str) else metadata
        samples.append({"id": interaction_id, "row": rows[meta["prompt_index"]], "completion": response or "", **meta})
    return sorted(samples, key=lambda s: (s["prompt_index"], s["sample"]))


def _score(project: Project, config: DistillConfig, samples: list[dict[str, Any]]) -> list[float | None]:
    if config.reward_model:
        return _score_with_reward_model(project, config.reward_model, samples)
    registry = project.settings.functions.verifiers
    return [_verify(config.verifier, s, registry) for s in samples]


def _verify(name: str | None, sample: dict[str, Any], registry: Mapping[str, str]) -> float | None:
    row = dict(sample["row"])
    name = name or row.get("verifier")
    if not name:
        return None  # a row without a verifier cannot be checked, so its samples are dropped
    answer = row.pop("answer", None)
    for column in ("prompt", "verifier"):
        row.pop(column, None)
    return get_verifier(name, registry)(sample["completion"], answer, **row)


def _score_with_reward_model(project: Project, name: str, samples: list[dict[str, Any]]) -> list[float | None]:
    import torch

    from posttrain.train.rewards import load_reward_model

    model, tokenizer = load_reward_model(project, name)
    texts = [
        tokenizer.apply_chat_template(
            [*_messages(s["row"]["prompt"]), {"role": "assistant", "content": s["completion"]}], tokenize=False
        )
        for s in samples
    ]
    scores: list[float | None] = []
    for start in range(0, len(texts), 64):
        enc = tokenizer(
            texts[start : start + 64], return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False
        )
        with torch.no_grad():
            scores += model(**enc).logits[:, 0].tolist()
    return scores


def _messages(prompt: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"role": m["role"], "content": m.get("content") or ""} for m in prompt]


def _write(
    project: Project,
    config: DistillConfig,
    teacher: ModelRecord,
    prompts: DatasetVersion,
    kept: list[dict[str, Any]],
    generated: int,
) -> DatasetVersion:
    table = pa.table(
        {
            "prompt": [_messages(s["row"]["prompt"]) for s in kept],
            "completion": [[{"role": "assistant", "content": s["completion"]}] for s in kept],
            "source": ["distill"] * len(kept),
            "interaction_id": [s["id"] for s in kept],
        }
    )
    recipe = {
        "source": "distill",
        "teacher": teacher.name,
        "teacher_id": teacher.id,
        "prompts": prompts.ref,
        "samples_per_prompt": config.samples_per_prompt,
        "filter": {"verifier": config.verifier, "reward_model": config.reward_model, "threshold": config.threshold},
    }
    stats = {"generated": generated, "accepted": len(kept), "acceptance_rate": round(len(kept) / generated, 4)}
    name = config.dataset or f"{config.output}-distill"
    return write_version(
        project, name, "sft", table, recipe=recipe, sources={"interactions": [s["id"] for s in kept]}, stats=stats
    )
