"""Run a build's curation recipe over its rows: each stage in turn, each counted and timed.

``curate(project, kind, name, table, config)`` returns the rows to write, the report that goes
into the version's manifest (``stats["curation"]``: per stage, rows removed, a few examples, the
time it took) and a details table written beside the rows as ``curation.parquet`` (one row per
input row: which stage removed it and why, its cohort and family, and for the rows that reached
selection their 2-D embedding map position, cluster and whether they were selected), which the
report page draws.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field

from posttrain import compute
from posttrain.curation.config import CurationConfig, SafetyStage
from posttrain.curation.frame import Frame, Verdict, build_frame
from posttrain.project import Project
from posttrain.records import DatasetKind

EXAMPLE_CHARS = 200


class StageReport(BaseModel):
    """What one stage did."""

    stage: str
    rows_in: int
    removed: int
    seconds: float
    examples: list[dict[str, Any]] = Field(default_factory=list)
    note: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class CurationReport(BaseModel):
    """A build's curation, as its manifest records it."""

    rows_in: int
    rows_out: int
    strict: bool
    stages: list[StageReport] = Field(default_factory=list)

    def removed(self) -> dict[str, int]:
        """Return rows removed per stage."""
        return {s.stage: s.removed for s in self.stages}


class Curated(BaseModel):
    """The rows to write, the report and the per-row details."""

    model_config = {"arbitrary_types_allowed": True}

    table: Any  # pa.Table
    report: CurationReport
    details: Any  # pa.Table


def is_strict(project: Project, config: CurationConfig, cohorts: np.ndarray, build_cohorts: list[str]) -> bool:
    """Return whether the strict setting applies: said so, or every row's cohort is a strict one (minors)."""
    if config.strict is not None:
        return config.strict
    strict = set(project.settings.curate.strict_cohorts)
    if not strict:
        return False
    if build_cohorts:
        return set(build_cohorts) <= strict
    return len(cohorts) > 0 and all(c in strict for c in cohorts)


def _short(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…"


def _examples(frame: Frame, verdict: Verdict, count: int) -> list[dict[str, Any]]:
    removed = np.flatnonzero(~verdict.keep)[:count]
    return [
        {
            "interaction_id": frame.interaction_id[i],
            "prompt": _short(frame.prompt[i]),
            "answer": _short(frame.answer[i]),
            "reason": verdict.reasons[i] if verdict.reasons else None,
        }
        for i in removed
    ]


def _run_stage(name: str, frame: Frame, config: CurationConfig) -> Verdict:
    stage = getattr(config, name)
    if name == "dedup":
        from posttrain.curation import dedup

        return dedup.run(frame, stage)
    if name == "decontaminate":
        from posttrain.curation import decontaminate

        return decontaminate.run(frame, stage)
    if name == "quality":
        from posttrain.curation import quality

        return quality.run(frame, stage)
    if name == "safety":
        from posttrain.curation import safety

        return safety.run(frame, stage)
    raise ValueError(f"unknown curation stage {name!r}")  # pragma: no cover - config lists the stages


def curate(
    project: Project,
    kind: DatasetKind,
    name: str,
    table: pa.Table,
    config: CurationConfig,
    *,
    build_cohorts: list[str] | None = None,
) -> Curated:
    """Apply ``config``'s stages to ``table`` (rows as a build selected them, regex PII already scrubbed)."""
    rows_in = table.num_rows
    stages: list[StageReport] = []
    frame = build_frame(project, kind, name, table)
    frame.strict_cohorts = frozenset(project.settings.curate.strict_cohorts)
    frame.strict = is_strict(project, config, frame.cohort, build_cohorts or [])
    if frame.strict and (config.safety is None or not config.safety.enabled):
        config = config.model_copy(update={"safety": SafetyStage()})
    first = frame
    removed_by = np.full(rows_in, None, dtype=object)
    reason = np.full(rows_in, None, dtype=object)
    position = np.arange(rows_in)  # where each row of the current frame sits in the input
    for stage_name in [s for s in config.active() if s not in ("pii", "select")]:
        started = time.perf_counter()
        verdict = _run_stage(stage_name, frame, config)
        seconds = round(time.perf_counter() - started, 3)
        gone = np.flatnonzero(~verdict.keep)
        removed_by[position[gone]] = stage_name
        if verdict.reasons:
            reason[position[gone]] = [verdict.reasons[i] for i in gone]
        stages.append(StageReport(stage=stage_name, rows_in=len(frame), removed=len(gone), seconds=seconds,
                                  examples=_examples(frame, verdict, config.examples), note=verdict.note,
                                  details=verdict.details))  # fmt: skip
        frame = frame.take(verdict.keep)
        position = position[verdict.keep]
    x = np.full(rows_in, np.nan)
    y = np.full(rows_in, np.nan)
    cluster = np.full(rows_in, -1, dtype=np.int64)
    selected = np.zeros(rows_in, dtype=bool)
    if config.select is not None and config.select.enabled:
        from posttrain.curation import select

        started = time.perf_counter()
        choice = select.run(frame, config.select)
        seconds = round(time.perf_counter() - started, 3)
        x[position], y[position], cluster[position] = choice.x, choice.y, choice.cluster
        gone = np.flatnonzero(~choice.verdict.keep)
        removed_by[position[gone]] = "select"
        stages.append(StageReport(stage="select", rows_in=len(frame), removed=len(gone), seconds=seconds,
                                  examples=_examples(frame, choice.verdict, config.examples),
                                  note=choice.verdict.note, details=choice.verdict.details))  # fmt: skip
        frame = frame.take(choice.verdict.keep)
        position = position[choice.verdict.keep]
    selected[position] = True
    table = frame.table
    if config.pii is not None and config.pii.enabled and config.pii.ner:
        table, pii_report = _scrub_names(project, table, stages, config)
        stages.append(pii_report)
    full = build_details(first, removed_by, reason, x, y, cluster, selected)
    report = CurationReport(rows_in=rows_in, rows_out=len(frame), strict=frame.strict, stages=stages)
    return Curated(table=table, report=report, details=full)


def _scrub_names(
    project: Project, table: pa.Table, stages: list[StageReport], config: CurationConfig
) -> tuple[pa.Table, StageReport]:
    """Replace names and addresses (NER) in the rows kept and in every stage's examples.

    The NER is the slow part of PII (~200 texts/s past its regex gate), so it runs last, on what the
    other stages kept, and batch by batch on the Ray cluster when ``[compute]`` says so; the regexes
    ran on every row before any stage. The examples of removed rows that the manifest shows (a few
    dozen) go through the NER here.
    """
    from posttrain.curation import pii

    assert config.pii is not None
    started = time.perf_counter()
    scrub = functools.partial(pii.scrub_table, stage=config.pii)
    scrubbed, counts = compute.map_batches(project, table, scrub, what="curation's PII stage (NER)")
    table = scrubbed.cast(table.schema)  # Ray's Parquet round trip renames list items (see datasets.build)
    examples = [e for s in stages for e in s.examples]
    if examples:
        texts = pa.table({"prompt": [e["prompt"] for e in examples], "answer": [e["answer"] for e in examples]})
        scrubbed, _ = pii.scrub_table(texts, config.pii)
        for example, prompt, answer in zip(examples, scrubbed.column("prompt").to_pylist(),
                                           scrubbed.column("answer").to_pylist(), strict=True):  # fmt: skip
            example["prompt"], example["answer"] = prompt, answer
    seconds = round(time.perf_counter() - started, 3)
    report = StageReport(stage="pii", rows_in=table.num_rows, removed=0, seconds=seconds, details={"replaced": counts})
    return table, report


def build_details(
    frame: Frame,
    removed_by: np.ndarray,
    reason: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    cluster: np.ndarray,
    kept: np.ndarray,
) -> pa.Table:
    """Return the per-row details table (input order)."""
    return pa.table({
        "interaction_id": pa.array(frame.interaction_id.tolist(), pa.string()),
        "cohort": pa.array(frame.cohort.tolist(), pa.string()),
        "family": pa.array(frame.family.tolist(), pa.string()),
        "removed_by": pa.array(removed_by.tolist(), pa.string()),
        "reason": pa.array(reason.tolist(), pa.string()),
        "x": pa.array(x, pa.float32(), mask=np.isnan(x)),
        "y": pa.array(y, pa.float32(), mask=np.isnan(y)),
        "cluster": pa.array(cluster, pa.int64(), mask=cluster < 0),
        "kept": pa.array(kept, pa.bool_()),
    })  # fmt: skip
