"""Eval suites: generate with a model on an ``eval`` dataset version, score, aggregate, store.

``run_eval(project, model, SuiteConfig(...))`` samples ``samples`` completions per prompt (greedy
at temperature 0) in left-padded batches, scores every completion with every scorer, and reports
each scorer's mean with a 95% interval overall, per cohort and per task family (see
``posttrain.evals.intervals``). The run is a job row (``evals.run``) and an ``eval_runs`` row
(model ← run ← dataset version); the per-completion scores go to
``artifacts/evals/RUN_ID/scores.parquet``, and the model's ``metrics["evals"]`` keeps the latest
means per dataset version.

A row's task family comes from ``SuiteConfig.family``: ``auto`` takes the row's ``family``
column, else its ``task`` column, else the first word of the prompt's last user message;
``first_word`` always takes that word; any other value names the column to read.

With ``[compute] backend = "ray"`` the completions are sampled by model actors on the cluster and
scored there, beside them (``posttrain.compute.ray_generate``); the driver resolves the scorers'
names against the project first and sends the workers names, the project's registry and folders,
never code. The stored run has the same shape either way, and greedy runs the same completions.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from posttrain import compute, datasets, jobs
from posttrain.clock import utc_now
from posttrain.errors import InvalidInput, NotFound
from posttrain.evals.intervals import Slices, slice_values
from posttrain.evals.judges import check_judge_spec
from posttrain.evals.scorers import ScorerSpec, check_scorer_name, resolve_scorer, scorer_from_spec
from posttrain.evals.verifiers import get_verifier
from posttrain.ids import new_id
from posttrain.models.registry import get_model
from posttrain.project import Project
from posttrain.records import DatasetVersion, ModelRecord, UtcTime
from posttrain.warehouse.rows import fetch_all, fetch_one

Progress = Callable[[int, int], None]
Scores = dict[str, list[float]]  # scorer name → one score per completion, prompt-major
SUITE_KINDS = ("eval", "prompts")
NO_VALUE = "(none)"
_WORD = re.compile(r"[A-Za-z0-9_]+")
_JSON = ("config", "results")


def _as_value_error(check: Callable[[str], None], value: str) -> None:
    """Run a name check inside a validator, so the error names the config's field."""
    try:
        check(value)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


class SuiteConfig(BaseModel):
    """An eval suite: a dataset version, the scorers, the judge, and how to sample."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="An eval (or prompts) dataset: NAME (latest) or NAME@VERSION.")
    scorers: list[str] = Field(
        default_factory=lambda: ["exact_match"],
        max_length=16,
        description="Verifiers (exact_match, numeric:TOL, regex, row, or one in [functions.verifiers]) or model:RM.",
    )
    judge: str | None = Field(
        None, description="Pairwise judge: verifier:NAME, model:RM or function:NAME (in [functions.judges])."
    )
    samples: int = Field(1, ge=1, description="Completions per prompt.")
    temperature: float = Field(0.0, ge=0, description="Sampling temperature; 0 is greedy.")
    max_new_tokens: int = Field(32, ge=1, description="Most tokens per completion.")
    seed: int = Field(0, description="Sampling seed.")
    batch_size: int = Field(32, ge=1, description="Sequences (prompts × samples) per generate call.")
    family: str = Field("auto", description="Task family: auto, first_word, or a column name.")

    @field_validator("scorers")
    @classmethod
    def _known_scorers(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one scorer, e.g. exact_match")
        if len(set(value)) != len(value):
            raise ValueError("a scorer is named twice; name each once")
        for name in value:
            _as_value_error(check_scorer_name, name)
        return value

    @field_validator("judge")
    @classmethod
    def _known_judge(cls, value: str | None) -> str | None:
        if value is not None:
            _as_value_error(check_judge_spec, value)
        return value

    @model_validator(mode="after")
    def _greedy_has_one_sample(self) -> SuiteConfig:
        if self.temperature == 0 and self.samples > 1:
            raise ValueError("greedy decoding (temperature 0) gives one completion; set temperature > 0 or samples 1")
        return self


class EvalResult(BaseModel):
    """One model scored on one dataset version: per scorer, the mean and 95% CI by slice."""

    id: str
    model: str
    model_id: str
    dataset: str = Field(description="NAME@VERSION")
    dataset_version_id: str
    job_id: str | None = None
    config: SuiteConfig
    prompts: int
    samples: int
    scores: dict[str, Slices] = Field(description="Scorer name → overall / per-cohort / per-family estimates")
    scores_path: str = Field(
        description="Parquet: prompt_index, sample, cohort, family, completion, one column per scorer"
    )
    seconds: float
    created_at: UtcTime


def causal_model(project: Project, name: str) -> ModelRecord:
    """Return a registered causal LM; raise NotFound or InvalidInput naming the fix."""
    record = get_model(project, name)
    if record.kind != "causal-lm":
        raise InvalidInput(f"model {name!r} is a {record.kind}; an eval runs a causal-lm", field="model")
    return record


def read_suite_rows(project: Project, ref: str) -> tuple[DatasetVersion, list[dict[str, Any]]]:
    """Return a suite's dataset version and its rows, checking kind and prompts."""
    version = datasets.resolve(project, ref)
    if version.kind not in SUITE_KINDS:
        raise InvalidInput(f"{version.ref} is a {version.kind} dataset; an eval needs an eval dataset", field="dataset")
    rows = datasets.read_rows(version).to_pylist()
    if not rows:
        raise InvalidInput(f"{version.ref} has no rows; build it from a query that matches", field="dataset")
    for i, row in enumerate(rows):
        prompt = row.get("prompt")
        if not (isinstance(prompt, list) and prompt and all(isinstance(m, dict) and "content" in m for m in prompt)):
            raise InvalidInput(f"row {i} of {version.ref} has no 'prompt' list of {{role, content}} messages")
    return version, rows


def family_of(row: dict[str, Any], family: str) -> str:
    """Return a row's task family as ``SuiteConfig.family`` says (see the module docstring)."""
    if family == "auto":
        for column in ("family", "task"):
            if row.get(column):
                return str(row[column])
        return _first_word(row["prompt"])
    if family == "first_word":
        return _first_word(row["prompt"])
    if family not in row:
        columns = ", ".join(sorted(row))
        raise InvalidInput(f"family column {family!r} is not in the dataset (columns: {columns})", field="family")
    return NO_VALUE if row[family] is None else str(row[family])


def _first_word(prompt: list[dict[str, Any]]) -> str:
    users = [m for m in prompt if m.get("role") == "user"] or prompt
    found = _WORD.search(str(users[-1].get("content") or ""))
    return found.group(0).lower() if found else NO_VALUE


def cohort_of(row: dict[str, Any]) -> str:
    """Return a row's cohort, ``(none)`` when it has none."""
    return str(row.get("cohort") or NO_VALUE)


def _generate(path: str, rows: list[dict[str, Any]], suite: SuiteConfig, progress: Progress | None) -> list[list[str]]:
    """Return ``suite.samples`` completions per row, seeded, in batches of about ``batch_size`` sequences."""
    import torch

    from posttrain.models.generation import _available_cpus, _sample_batch, load_causal_lm

    torch.set_num_threads(_available_cpus())
    torch.manual_seed(suite.seed)
    model, tokenizer = load_causal_lm(path)
    per_batch, out = max(1, suite.batch_size // suite.samples), []
    for start in range(0, len(rows), per_batch):
        chunk = [r["prompt"] for r in rows[start : start + per_batch]]
        results = _sample_batch(
            model, tokenizer, chunk, samples=suite.samples, max_new_tokens=suite.max_new_tokens,
            temperature=suite.temperature,
        )  # fmt: skip
        texts = [text for text, _, _ in results]
        out += [texts[i : i + suite.samples] for i in range(0, len(texts), suite.samples)]
        if progress is not None:
            progress(len(out) * suite.samples, len(rows) * suite.samples)
    return out


def _score(scorers: list[ScorerSpec], rows: list[dict[str, Any]], completions: list[list[str]]) -> Scores:
    """Return every scorer's score of every completion, flattened prompt-major."""
    flat_rows = [row for row, texts in zip(rows, completions, strict=True) for _ in texts]
    flat = [text for texts in completions for text in texts]
    return {spec.name: scorer_from_spec(spec).score(flat_rows, flat) for spec in scorers}


def _generate_on_ray(
    project: Project,
    path: str,
    rows: list[dict[str, Any]],
    suite: SuiteConfig,
    scorers: list[ScorerSpec],
    progress: Progress | None,
) -> tuple[list[list[str]], Scores]:
    """Generate and score on the Ray cluster: model actors sample, the scorers run beside them."""
    from posttrain.compute import ray_generate
    from posttrain.models.generation import _sample_batch, load_causal_lm

    sampling = ray_generate.Sampling(**suite.model_dump(include=set(ray_generate.Sampling.model_fields)))
    out = ray_generate.sample(
        project, path, rows, sampling, load=load_causal_lm, sample_batch=_sample_batch, scorers=scorers,
        what="evals.run", progress=progress,
    )  # fmt: skip
    flat = out.column("completion").to_pylist()
    completions = [flat[i : i + suite.samples] for i in range(0, len(flat), suite.samples)]
    scores = {s.name: out.column(ray_generate.score_column(s.name)).to_pylist() for s in scorers}
    return completions, scores


def _score_table(
    suite: SuiteConfig, rows: list[dict[str, Any]], completions: list[list[str]], scores: Scores
) -> pa.Table:
    """Return one row per (prompt, sample) with its completion and every scorer's score."""
    flat_rows = [row for row, texts in zip(rows, completions, strict=True) for _ in texts]
    columns: dict[str, Any] = {
        "prompt_index": [i for i, texts in enumerate(completions) for _ in texts],
        "sample": [j for texts in completions for j in range(len(texts))],
        "cohort": [cohort_of(r) for r in flat_rows],
        "family": [family_of(r, suite.family) for r in flat_rows],
        "completion": [text for texts in completions for text in texts],
    }
    for name in suite.scorers:
        columns[name] = pa.array(scores[name], pa.float64())
    return pa.table(columns)


def per_prompt(table: pa.Table, column: str) -> list[float]:
    """Return a score column averaged over each prompt's samples, in prompt order."""
    sums: dict[int, list[float]] = {}
    for index, value in zip(table.column("prompt_index").to_pylist(), table.column(column).to_pylist(), strict=True):
        sums.setdefault(index, []).append(value)
    return [sum(v) / len(v) for _, v in sorted(sums.items())]


def prompt_keys(table: pa.Table, column: str) -> list[str]:
    """Return one cohort (or family) per prompt, in prompt order."""
    seen: dict[int, str] = {}
    for index, key in zip(table.column("prompt_index").to_pylist(), table.column(column).to_pylist(), strict=True):
        seen.setdefault(index, key)
    return [key for _, key in sorted(seen.items())]


def _slices(table: pa.Table, scorers: list[str]) -> dict[str, Slices]:
    cohorts, families = prompt_keys(table, "cohort"), prompt_keys(table, "family")
    return {name: slice_values(per_prompt(table, name), cohorts, families, kind="mean") for name in scorers}


def check_functions(project: Project, suite: SuiteConfig) -> None:
    """Refuse scorers and a judge the project does not know, before any model runs."""
    registry = project.settings.functions
    for name in suite.scorers:
        if not name.startswith("model:") and name != "row":
            get_verifier(name, registry.verifiers)
    kind, _, name = (suite.judge or "").partition(":")
    if kind == "verifier" and not name.startswith("model:") and name != "row":
        get_verifier(name, registry.verifiers)
    elif kind == "function" and name not in registry.judges:
        known = ", ".join(sorted(registry.judges)) or "none registered"
        raise InvalidInput(f"no judge {name!r} in posttrain.toml [functions.judges] ({known})", field="judge")


def run_eval(
    project: Project,
    model: str,
    suite: SuiteConfig,
    *,
    progress: Progress | None = None,
    on_job: jobs.JobFn | None = None,
) -> EvalResult:
    """Generate with ``model`` on the suite's dataset, score every completion, store and return the result.

    Raises NotFound for an unknown model or dataset, InvalidInput for a wrong kind, bad rows or a
    scorer that cannot run — before the job exists. ``progress(done, total)`` counts generated
    sequences; ``on_job(id)`` is told the job's id as soon as it exists.
    """
    check_functions(project, suite)
    record = causal_model(project, model)
    version, rows = read_suite_rows(project, suite.dataset)
    suite = suite.model_copy(update={"dataset": version.ref})
    for row in rows[:1]:
        family_of(row, suite.family)  # a missing family column fails before any generation
    scorers = [resolve_scorer(project, name) for name in suite.scorers]
    config = {"model": record.name, **suite.model_dump(mode="json")}
    return jobs.run_as_job(
        project, "evals.run", config,
        lambda job: _run(project, record, version, rows, suite, scorers, job, progress), on_job=on_job,
    )  # fmt: skip


def _tracking(job: jobs.JobHandle, progress: Progress | None) -> Progress:
    """Return a progress callback that moves the job row (and checks for a cancel), then the caller's."""

    def track(done: int, total: int) -> None:
        job.progress(done / total)
        if progress is not None:
            progress(done, total)

    return track


def _run(
    project: Project,
    record: ModelRecord,
    version: DatasetVersion,
    rows: list[dict[str, Any]],
    suite: SuiteConfig,
    scorers: list[ScorerSpec],
    job: jobs.JobHandle,
    progress: Progress | None,
) -> EvalResult:
    started, progress = time.perf_counter(), _tracking(job, progress)
    if compute.uses_ray(project):
        completions, scores = _generate_on_ray(project, record.path, rows, suite, scorers, progress)
    else:
        completions = _generate(record.path, rows, suite, progress)
        scores = _score(scorers, rows, completions)
    table = _score_table(suite, rows, completions, scores)
    run_id = new_id()
    folder = project.artifacts / "evals" / run_id
    folder.mkdir(parents=True, exist_ok=False)
    pq.write_table(table, folder / "scores.parquet")
    result = EvalResult(
        id=run_id, model=record.name, model_id=record.id, dataset=version.ref, dataset_version_id=version.id,
        job_id=job.id, config=suite, prompts=len(rows), samples=suite.samples, scores=_slices(table, suite.scorers),
        scores_path=str(folder / "scores.parquet"), seconds=round(time.perf_counter() - started, 3),
        created_at=utc_now(),
    )  # fmt: skip
    _store(project, result)
    _note_on_model(project, record, result)
    return result


def _store(project: Project, result: EvalResult) -> None:
    results = result.model_dump(mode="json", include={"prompts", "samples", "scores", "seconds"})
    project.cursor().execute(
        "INSERT INTO eval_runs (id, model_id, model, dataset_version_id, dataset, job_id, config, results, "
        "scores_path, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            result.id, result.model_id, result.model, result.dataset_version_id, result.dataset, result.job_id,
            result.config.model_dump_json(), orjson.dumps(results).decode(), result.scores_path, result.created_at,
        ],
    )  # fmt: skip


def _note_on_model(project: Project, record: ModelRecord, result: EvalResult) -> None:
    """Keep the latest means per dataset version in the model's metrics, under ``evals``."""
    metrics = dict(get_model(project, record.id).metrics)
    evals = dict(metrics.get("evals") or {})
    evals[result.dataset] = {"run": result.id, **{k: s.overall.mean for k, s in result.scores.items()}}
    metrics["evals"] = evals
    project.cursor().execute("UPDATE models SET metrics = ? WHERE id = ?", [orjson.dumps(metrics).decode(), record.id])


def _to_result(data: dict[str, Any]) -> EvalResult:
    return EvalResult(**{k: v for k, v in data.items() if k != "results"}, **data["results"])


def get_run(project: Project, run_id: str) -> EvalResult:
    """Return a stored eval run; raise NotFound naming the fix."""
    data = fetch_one(project.cursor(), "SELECT * FROM eval_runs WHERE id = ?", [run_id], json=_JSON)
    if data is None:
        raise NotFound(f"no eval run {run_id!r}; run 'posttrain evals list'", field="run")
    return _to_result(data)


def list_runs(project: Project, *, model: str | None = None, dataset: str | None = None) -> list[EvalResult]:
    """Return stored eval runs, newest first, of one model (name or id) and/or dataset (NAME@V)."""
    clauses, params = ["TRUE"], []
    if model:
        clauses.append("(model = ? OR model_id = ?)")
        params += [model, model]
    if dataset:
        clauses.append("dataset = ?")
        params.append(dataset)
    sql = f"SELECT * FROM eval_runs WHERE {' AND '.join(clauses)} ORDER BY created_at DESC, id DESC"
    return [_to_result(r) for r in fetch_all(project.cursor(), sql, params, json=_JSON)]


def read_scores(result: EvalResult) -> pa.Table:
    """Return a run's per-completion scores (prompt_index, sample, cohort, family, completion, scorers)."""
    path = Path(result.scores_path)
    if not path.is_file():
        raise NotFound(f"the scores of eval run {result.id} are missing: {path}", field="run")
    return pq.read_table(path)
