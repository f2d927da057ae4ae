"""Generation with a local transformers model: K sampled completions per prompt, stored as interactions.

``generate`` reads a ``prompts`` (or ``eval``) dataset version, samples completions in left-padded
batches on the CPU, and commits them all in one transaction through ``capture.commit``, tagged
``generated`` and ``output:NAME`` so later stages (curation, judges, evals) find them. It runs as a
job row. torch and transformers are imported inside the functions, so this module stays light.
With ``[compute] backend = "ray"`` the batches are sampled by model actors on the Ray cluster
(``posttrain.compute.ray_generate``) and the interactions stored here, the same as local ones.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from posttrain import capture, compute, datasets, jobs
from posttrain.errors import Conflict, InvalidInput
from posttrain.models.registry import get_model
from posttrain.project import Project
from posttrain.records import DatasetVersion, ModelRecord

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Progress = Callable[[int, int], None]
PROMPT_KINDS = ("prompts", "eval")
_OUTPUT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,99}")


class GenerateConfig(BaseModel):
    """One generation run's options, as its job row records them (``prompts`` is a resolved ``NAME@V``)."""

    model: str
    prompts: str
    samples: int
    output: str
    max_new_tokens: int = 32
    temperature: float = 1.0
    seed: int = 0
    batch_size: int = 64

    @property
    def tag(self) -> str:
        """Return the tag every interaction of this run carries, ``output:NAME``."""
        return f"output:{self.output}"


class GenerateReport(BaseModel):
    """What a generation run stored."""

    model: str
    dataset: str
    output: str
    tag: str
    prompts: int
    samples: int
    interactions: int
    job_id: str
    seconds: float


def load_causal_lm(path: Path | str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a local Hugging Face causal LM and its tokenizer for inference (eval mode, left padding)."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise InvalidInput(f"{folder} is not a Hugging Face model folder (no config.json)", field="model")
    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars would interleave with ours
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        raise InvalidInput(f"the tokenizer in {folder} has no pad token; set one and save it again", field="model")
    model = AutoModelForCausalLM.from_pretrained(folder)
    model.eval()
    return model, tokenizer


def _check_options(samples: int, max_new_tokens: int, temperature: float, batch_size: int) -> None:
    for name, value in [("samples", samples), ("max_new_tokens", max_new_tokens), ("batch_size", batch_size)]:
        if value < 1:
            flag = name.replace("_", "-")
            raise InvalidInput(f"{name} must be at least 1 (got {value}); pass --{flag} 1 or more", field=name)
    if temperature < 0:
        raise InvalidInput(f"temperature must be 0 (greedy) or more (got {temperature})", field="temperature")


def _check_output_free(project: Project, output: str) -> None:
    if not _OUTPUT.fullmatch(output):
        raise InvalidInput(
            f"output name {output!r} must be letters, digits, '.', '_' or '-' (at most 100)", field="output"
        )
    tag = f"output:{output}"
    found = project.cursor().execute("SELECT count(*) FROM interactions WHERE list_contains(tags, ?)", [tag]).fetchone()
    if found and found[0]:
        raise Conflict(
            f"output {output!r} holds {found[0]} interactions already; choose another --output", field="output"
        )


def _read_prompts(project: Project, ref: str) -> tuple[DatasetVersion, list[dict[str, Any]]]:
    version = datasets.resolve(project, ref)
    if version.kind not in PROMPT_KINDS:
        raise InvalidInput(
            f"{version.ref} is a {version.kind} dataset; generate needs a prompts or eval dataset", field="prompts"
        )
    rows = datasets.read_rows(version).to_pylist()
    if not rows:
        raise InvalidInput(f"{version.ref} has no rows; build it from a query that matches", field="prompts")
    for i, row in enumerate(rows):
        if not _is_conversation(row.get("prompt")):
            raise InvalidInput(
                f"row {i} of {version.ref} has no 'prompt' list of {{role, content}} messages", field="prompts"
            )
    return version, rows


def _is_conversation(prompt: Any) -> bool:
    return (
        isinstance(prompt, list)
        and bool(prompt)
        and all(isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m for m in prompt)
    )


def _causal_model(project: Project, name: str) -> ModelRecord:
    record = get_model(project, name)
    if record.kind != "causal-lm":
        raise InvalidInput(f"model {name!r} is a {record.kind}; generate needs a causal-lm", field="model")
    return record


def _sample_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[list[dict[str, Any]]],
    *,
    samples: int,
    max_new_tokens: int,
    temperature: float,
) -> list[tuple[str, int, int]]:
    """Return (completion, prompt tokens, completion tokens) for each prompt × sample, prompt-major."""
    import torch

    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    width = enc["input_ids"].shape[1]
    limit = model.config.max_position_embeddings
    if width + max_new_tokens > limit:
        raise InvalidInput(
            f"a prompt of {width} tokens plus {max_new_tokens} new tokens exceeds the model's {limit} positions; "
            "lower --max-new-tokens or shorten the prompts",
            field="max_new_tokens",
        )
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    with torch.no_grad():
        out = model.generate(  # type: ignore[operator]
            **enc,
            max_new_tokens=max_new_tokens,
            num_return_sequences=samples,
            pad_token_id=tokenizer.pad_token_id,
            **sampling,
        )
    new = out[:, width:]
    decoded = tokenizer.batch_decode(new, skip_special_tokens=True)
    used = (new != tokenizer.pad_token_id).sum(dim=1).tolist()
    lengths = enc["attention_mask"].sum(dim=1).repeat_interleave(samples).tolist()
    return list(zip(decoded, lengths, used, strict=True))


def _interaction(
    row: dict[str, Any], index: int, sample: int, result: tuple[str, int, int], config: GenerateConfig
) -> dict[str, Any]:
    completion, prompt_tokens, completion_tokens = result
    return {
        "messages": row["prompt"],
        "response": completion,
        "model": config.model,
        "session_id": f"gen-{config.output}",
        "tags": ["generated", config.tag],
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "metadata": {"dataset": config.prompts, "prompt_index": index, "sample": sample, "answer": row.get("answer")},
    }


def _store(project: Project, events: list[dict[str, Any]]) -> int:
    """Validate and commit every event in one transaction; return how many were stored."""
    limits = project.settings.capture
    stored: list[dict[str, Any]] = []
    for start in range(0, len(events), limits.max_batch_events):
        chunk = events[start : start + limits.max_batch_events]
        results, rows = capture.validate_events("interactions", chunk, limits, check_size=False)
        errors = [r.error for r in results if r is not None]
        if errors:
            raise InvalidInput(f"{len(errors)} generated interactions are invalid; first: {errors[0]}", field="prompts")
        stored += [row | {"source": "generate"} for _, row in rows]
    statuses = capture.commit(project.cursor(), [("interactions", stored)])[0]
    return statuses.count("created")


def _available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def generate(
    project: Project,
    *,
    model: str,
    prompts: str,
    samples: int,
    output: str,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,
    on_progress: Progress | None = None,
) -> GenerateReport:
    """Sample ``samples`` completions per prompt of dataset ``prompts`` with ``model``; store them as interactions.

    ``batch_size`` counts sequences (prompts × samples) per ``generate`` call. Raises NotFound for
    an unknown model or dataset, Conflict when ``output`` is taken, InvalidInput for bad options.
    """
    _check_options(samples, max_new_tokens, temperature, batch_size)
    record = _causal_model(project, model)
    version, rows = _read_prompts(project, prompts)
    _check_output_free(project, output)
    config = GenerateConfig(
        model=record.name, prompts=version.ref, samples=samples, output=output, max_new_tokens=max_new_tokens,
        temperature=temperature, seed=seed, batch_size=batch_size,
    )  # fmt: skip
    job = jobs.start_job(project, "generate", config.model_dump())
    try:
        report = _run(project, config, Path(record.path), rows, job, on_progress)
    except BaseException as exc:
        job.fail(f"{type(exc).__name__}: {exc}")
        raise
    job.succeed(output=config.tag, result=report.model_dump(mode="json"))
    return report


def _run(
    project: Project,
    config: GenerateConfig,
    path: Path,
    rows: list[dict[str, Any]],
    job: jobs.JobHandle,
    on_progress: Progress | None,
) -> GenerateReport:
    started = time.perf_counter()
    if compute.uses_ray(project):
        events = _sample_on_ray(project, config, path, rows, job, on_progress)
    else:
        events = _sample_here(config, path, rows, job, on_progress)
    stored = _store(project, events)
    return GenerateReport(
        model=config.model, dataset=config.prompts, output=config.output, tag=config.tag, prompts=len(rows),
        samples=config.samples, interactions=stored, job_id=job.id, seconds=round(time.perf_counter() - started, 3),
    )  # fmt: skip


def _sample_here(
    config: GenerateConfig, path: Path, rows: list[dict[str, Any]], job: jobs.JobHandle, on_progress: Progress | None
) -> list[dict[str, Any]]:
    """Return the run's interactions, sampled in this process batch by batch."""
    import torch

    torch.set_num_threads(_available_cpus())
    torch.manual_seed(config.seed)
    lm, tokenizer = load_causal_lm(path)
    total, per_batch = len(rows) * config.samples, max(1, config.batch_size // config.samples)
    events: list[dict[str, Any]] = []
    for start in range(0, len(rows), per_batch):
        chunk = [r["prompt"] for r in rows[start : start + per_batch]]
        results = _sample_batch(
            lm, tokenizer, chunk, samples=config.samples, max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
        )  # fmt: skip
        for j, result in enumerate(results):
            index = start + j // config.samples
            events.append(_interaction(rows[index], index, j % config.samples, result, config))
        job.progress(len(events) / total)
        if on_progress is not None:
            on_progress(len(events), total)
    return events


def _sample_on_ray(
    project: Project,
    config: GenerateConfig,
    path: Path,
    rows: list[dict[str, Any]],
    job: jobs.JobHandle,
    on_progress: Progress | None,
) -> list[dict[str, Any]]:
    """Return the run's interactions, sampled by model actors on the Ray cluster (see ``compute.ray_generate``)."""
    from posttrain.compute import ray_generate

    def progress(done: int, total: int) -> None:
        job.progress(done / total)
        if on_progress is not None:
            on_progress(done, total)

    sampling = ray_generate.Sampling(**config.model_dump(include=set(ray_generate.Sampling.model_fields)))
    prompts = [{"prompt": row["prompt"]} for row in rows]  # the workers need the prompts alone
    out = ray_generate.sample(
        project, str(path), prompts, sampling, load=load_causal_lm, sample_batch=_sample_batch, what="generate",
        progress=progress,
    ).to_pydict()  # fmt: skip
    return [
        _interaction(rows[index], index, sample, (text, prompt_tokens, completion_tokens), config)
        for index, sample, text, prompt_tokens, completion_tokens in zip(
            out["prompt_index"],
            out["sample"],
            out["completion"],
            out["prompt_tokens"],
            out["completion_tokens"],
            strict=True,
        )
    ]
