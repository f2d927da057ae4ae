"""Lineage: where a model came from — its parents, the runs that made them, and the data behind each run.

The walk goes model → parent → grandparent … (each with its run and dataset versions); a model
without a parent continues to its ``base`` when that is a registered model, and the walk ends at
the first ``base`` that is not (a Hugging Face id, say). For each dataset version it counts the
interactions and feedback it was built from (``sources.parquet``) and keeps a few of their ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from posttrain import datasets, jobs
from posttrain.errors import NotFound
from posttrain.models.registry import find_model, get_model
from posttrain.project import Project
from posttrain.records import ModelRecord

Via = Literal["parent", "base"] | None


class RunSummary(BaseModel):
    """The job that made a model, summarised: its config, state and last metric values."""

    id: str
    kind: str
    state: str
    config: dict[str, Any]
    steps: int = Field(0, description="Points in the metrics history")
    metrics: dict[str, Any] = Field(default_factory=dict, description="The last value of each metric")
    error: str | None = None


class LabelSources(BaseModel):
    """The labels of one annotation queue behind a dataset version's feedback, and who gave them."""

    queue: str
    feedback: int = Field(description="Consensus feedback rows of this queue among the version's sources")
    labels: int = Field(description="Labels those consensus rows were resolved from")
    annotators: list[str] = Field(default_factory=list, description="Who labelled (key ids, judge:NAME)")


class DatasetSources(BaseModel):
    """A dataset version a model was trained on, and the records it was built from."""

    ref: str
    kind: str | None = None
    row_count: int | None = None
    content_hash: str | None = None
    counts: dict[str, int] = Field(default_factory=dict, description="Source records by kind")
    sample_ids: dict[str, list[str]] = Field(default_factory=dict, description="The first few ids by kind")
    labels: list[LabelSources] = Field(
        default_factory=list, description="Annotation queues whose consensus labels the version was built from"
    )
    missing: str | None = Field(None, description="Why the version or its sources could not be read")


class ModelLineage(BaseModel):
    """One model in the chain, with its run and its data."""

    model: ModelRecord
    via: Via = Field(None, description="How its child (the step before) names it")
    run: RunSummary | None = None
    run_missing: str | None = None
    datasets: list[DatasetSources] = Field(default_factory=list)


class Lineage(BaseModel):
    """A model's ancestry: ``chain[0]`` is the model, then its parent, and so on up to ``base``."""

    name: str
    base: str | None
    chain: list[ModelLineage]


def summarize_run(project: Project, run_id: str) -> RunSummary:
    """Return a job's config, state and last metric values; raise NotFound if there is no such job."""
    job = jobs.get_job(project, run_id)
    last: dict[str, Any] = {}
    for point in job.metrics:
        last.update({k: v for k, v in point.items() if k != "step"})
    return RunSummary(
        id=job.id, kind=job.kind, state=job.state, config=job.config, steps=len(job.metrics), metrics=last,
        error=job.error,
    )  # fmt: skip


def dataset_sources(project: Project, ref: str, *, sample: int = 5) -> DatasetSources:
    """Return a dataset version's source counts and up to ``sample`` ids per kind of source record."""
    try:
        version = datasets.resolve(project, ref)
    except NotFound as exc:
        return DatasetSources(ref=ref, missing=exc.message)
    out = DatasetSources(
        ref=version.ref, kind=version.kind, row_count=version.row_count, content_hash=version.content_hash
    )
    file = version.source_ids.get("file")
    if not file or not Path(file).is_file():
        out.missing = f"the sources file of {version.ref} is missing: {file}"
        return out
    table = pq.read_table(file, columns=["kind", "id"])
    for kind in sorted(set(table.column("kind").to_pylist())):
        ids = table.filter(pc.equal(table.column("kind"), kind)).column("id")
        out.counts[kind] = len(ids)
        out.sample_ids[kind] = ids.slice(0, sample).to_pylist()
    feedback = table.filter(pc.equal(table.column("kind"), "feedback")).column("id").to_pylist()
    out.labels = label_sources(project, feedback)
    return out


def label_sources(project: Project, feedback_ids: list[str]) -> list[LabelSources]:
    """Return, per annotation queue, the consensus feedback among ``feedback_ids`` and the labels behind it.

    Two indexed reads (the consensus feedback, then its labels) in SQL either warehouse runs; the
    grouping is done here.
    """
    if not feedback_ids:
        return []
    cur = project.cursor()
    consensus = cur.execute(
        "SELECT id, author, metadata FROM feedback WHERE list_contains(?, id) AND author LIKE 'queue:%'",
        [feedback_ids],
    ).fetchall()
    behind = {fid: [str(x) for x in (orjson.loads(meta or "{}").get("labels") or [])] for fid, _, meta in consensus}
    wanted = sorted({label for labels in behind.values() for label in labels})
    annotator = dict(
        cur.execute("SELECT id, annotator FROM labels WHERE list_contains(?, id)", [wanted]).fetchall()
        if wanted
        else []
    )
    queues: dict[str, tuple[set[str], int, set[str]]] = {}
    for fid, author, _ in consensus:
        ids, count, who = queues.setdefault(author.removeprefix("queue:"), (set(), 0, set()))
        ids.add(fid)
        found = [label for label in behind[fid] if label in annotator]
        who |= {annotator[label] for label in found if annotator[label]}
        queues[author.removeprefix("queue:")] = (ids, count + len(found), who)
    return [
        LabelSources(queue=q, feedback=len(ids), labels=n, annotators=sorted(who))
        for q, (ids, n, who) in sorted(queues.items())
    ]


def _step(project: Project, model: ModelRecord, sample: int, via: Via) -> ModelLineage:
    sources = [dataset_sources(project, ref, sample=sample) for ref in model.dataset_versions]
    step = ModelLineage(model=model, via=via, datasets=sources)
    if model.run_id:
        try:
            step.run = summarize_run(project, model.run_id)
        except NotFound:
            step.run_missing = f"run {model.run_id} is not in the jobs table"
    return step


def _next(project: Project, model: ModelRecord) -> tuple[ModelRecord | None, Via]:
    """Return the model this one came from: its parent, else its base when the base is registered."""
    if model.parent_id:
        return get_model(project, model.parent_id), "parent"
    if model.base:
        return find_model(project, model.base), "base"
    return None, None


def lineage(project: Project, name: str, *, sample: int = 5) -> Lineage:
    """Walk ``name``'s parent chain, with each model's run and dataset sources; raise NotFound for an unknown model."""
    model: ModelRecord | None = get_model(project, name)
    chain: list[ModelLineage] = []
    seen: set[str] = set()
    via: Via = None
    while model is not None and model.id not in seen:  # a hand-edited registry could hold a cycle
        seen.add(model.id)
        chain.append(_step(project, model, sample, via))
        model, via = _next(project, model)
    base = next((step.model.base for step in reversed(chain) if step.model.base), None)
    return Lineage(name=chain[0].model.name, base=base, chain=chain)
