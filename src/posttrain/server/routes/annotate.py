"""/api/annotate: queues (create, list, show, state, guidelines, fill, gold), the annotator's work, stats, export.

An annotator is the API key that calls: ``next`` leases an item to the key's id, and only that key
may submit or skip the lease.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from posttrain import annotate
from posttrain.annotate import active, export, judges, stats
from posttrain.project import Project
from posttrain.server.auth import require
from posttrain.server.job_runner import JobStarted
from posttrain.server.responses import JSONResponse
from posttrain.server.schemas import ERRORS

router = APIRouter(prefix="/api/annotate", tags=["annotate"], responses=ERRORS)
_READ = [Depends(require("annotate.read"))]
_LABEL = [Depends(require("annotate.label"))]
_ADMIN = [Depends(require("annotate.admin"))]

MAX_IDS = 10_000  # ids or pairs in one fill request
MAX_ACTIVE = 100_000
Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Text = Annotated[str, StringConstraints(max_length=500)]


class StateRequest(BaseModel):
    """Open, pause or close a queue."""

    model_config = ConfigDict(extra="forbid")

    state: Literal["open", "paused", "closed"]


class GuidelinesRequest(BaseModel):
    """A queue's new guidelines (markdown)."""

    model_config = ConfigDict(extra="forbid")

    guidelines: Annotated[str, StringConstraints(max_length=20_000)]


class FillRequest(BaseModel):
    """Where a queue's items come from: exactly one of where, dataset, interaction_ids, pairs, active."""

    model_config = ConfigDict(extra="forbid")

    where: Annotated[str, StringConstraints(min_length=1, max_length=4000)] | None = Field(
        None, description="A SQL condition on interactions (alias i)."
    )
    dataset: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        None, description="A dataset version, NAME@V."
    )
    interaction_ids: list[Id] | None = Field(None, max_length=MAX_IDS)
    pairs: list[Annotated[list[Id], Field(min_length=2, max_length=2)]] | None = Field(
        None, max_length=MAX_IDS, description="pairwise: [[first, second], ...] answers to the same prompt."
    )
    active: int | None = Field(None, ge=1, le=MAX_ACTIVE, description="Let active selection pick this many.")
    limit: int = Field(1000, ge=1, le=100_000)

    @model_validator(mode="after")
    def _one_source(self) -> FillRequest:
        given = [k for k in ("where", "dataset", "interaction_ids", "pairs", "active") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of where, dataset, interaction_ids, pairs, active")
        return self


class GoldRequest(BaseModel):
    """A gold item: an interaction (or pair) and its known right label."""

    model_config = ConfigDict(extra="forbid")

    interaction_id: Id
    second_interaction_id: Id | None = None
    answer: dict[str, Any] = Field(description="The right label, as an annotator would submit it.")


class SubmitRequest(BaseModel):
    """A label for a leased item, and optionally the seconds spent on it."""

    model_config = ConfigDict(extra="forbid")

    label: dict[str, Any] = Field(description="The label; its keys depend on the queue's task.")
    seconds: float | None = Field(None, ge=0, le=86_400)


class SkipRequest(BaseModel):
    """Why an item is skipped (optional)."""

    model_config = ConfigDict(extra="forbid")

    reason: Text | None = None


class PrelabelRequest(BaseModel):
    """Which judges pre-label the queue (default: the queue's own), and whether sure trusted ones resolve items."""

    model_config = ConfigDict(extra="forbid")

    judges: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] | None = Field(None, max_length=10)
    limit: int = Field(10_000, ge=1, le=100_000, description="Items each judge labels at most.")
    resolve: bool = Field(True, description="Then let trusted judges resolve the items they are sure of.")


class Skipped(BaseModel):
    skipped: str


def _project(request: Request) -> Project:
    return request.app.state.project  # type: ignore[no-any-return]


def _json(record: BaseModel, status: int = 200) -> JSONResponse:
    """Answer a record with times as UTC ISO 8601 (the annotate records hold naive UTC datetimes)."""
    return JSONResponse(record.model_dump(), status_code=status)


def _annotator(request: Request) -> str:
    return str(request.state.caller.key_id)


@router.post("/queues", status_code=201, response_model=annotate.Queue, dependencies=_ADMIN)
def create_queue(request: Request, config: annotate.QueueConfig) -> Response:
    """Create an open queue: its task, guidelines, label schema, overlap, lease time and consensus."""
    return _json(annotate.create_queue(_project(request), config, author=_annotator(request)), 201)


@router.get("/queues", response_model=list[annotate.QueueSummary], dependencies=_READ)
def list_queues(request: Request, state: Literal["open", "paused", "closed"] | None = None) -> Response:
    """List queues with their counts, newest first, optionally of one state."""
    return JSONResponse([q.model_dump() for q in annotate.list_queues(_project(request), state=state)])


@router.get("/queues/{name}", response_model=annotate.QueueSummary, dependencies=_READ)
def show_queue(request: Request, name: str) -> Response:
    """Return one queue: config, guidelines, state, versions and counts."""
    return _json(annotate.summarise(_project(request), name))


@router.post("/queues/{name}/state", response_model=annotate.Queue, dependencies=_ADMIN)
def set_queue_state(request: Request, name: str, body: StateRequest) -> Response:
    """Open, pause or close a queue; a paused or closed queue serves no items."""
    return _json(annotate.set_state(_project(request), name, body.state))


@router.put("/queues/{name}/guidelines", response_model=annotate.Queue, dependencies=_ADMIN)
def set_guidelines(request: Request, name: str, body: GuidelinesRequest) -> Response:
    """Replace a queue's guidelines; later labels record the new guidelines version."""
    return _json(annotate.update_guidelines(_project(request), name, body.guidelines))


@router.post("/queues/{name}/fill", response_model=annotate.FillResult | active.SelectionResult, dependencies=_ADMIN)
def fill_queue(request: Request, name: str, body: FillRequest) -> annotate.FillResult | active.SelectionResult:
    """Add items from exactly one source: a SQL condition, a dataset version, ids, pairs or active selection."""
    project = _project(request)
    if body.active is not None:
        return active.select(project, name, budget=body.active)
    pairs = [(a, b) for a, b in body.pairs] if body.pairs is not None else None
    return annotate.fill(project, name, where=body.where, dataset=body.dataset,
                         interaction_ids=body.interaction_ids, pairs=pairs, limit=body.limit)  # fmt: skip


@router.post("/queues/{name}/prelabel", response_model=JobStarted, status_code=202, dependencies=_ADMIN)
async def prelabel_queue(request: Request, name: str, body: PrelabelRequest | None = None) -> JobStarted:
    """Have the judges of posttrain.toml pre-label the queue, then resolve what trusted ones are sure of, as a job.

    The job's result is the outcome: items labelled (and not) per judge, items resolved by judges alone.
    """
    given = body or PrelabelRequest()
    project = _project(request)
    return await request.app.state.runner.start(  # type: ignore[no-any-return]
        "annotate-prelabel",
        lambda on_job: judges.prelabel_and_resolve(project, name, judges=given.judges, limit=given.limit,
                                                   resolve=given.resolve, on_job=on_job),
    )  # fmt: skip


@router.post("/queues/{name}/gold", status_code=201, response_model=annotate.FillResult, dependencies=_ADMIN)
def add_gold(request: Request, name: str, body: GoldRequest) -> annotate.FillResult:
    """Add a gold item whose right label is known (pairwise: choice 'a' is the first interaction)."""
    return annotate.add_gold(_project(request), name, body.interaction_id, body.answer,
                             second_interaction_id=body.second_interaction_id)  # fmt: skip


@router.post(
    "/queues/{name}/next",
    response_model=annotate.Assignment,
    responses={204: {"description": "Nothing is left for this annotator"}},
    dependencies=_LABEL,
)
def next_item(request: Request, name: str) -> Any:
    """Lease the next item to the calling key; 204 when nothing is left for it, 409 if the queue is not open."""
    found = annotate.next_item(_project(request), name, _annotator(request))
    return Response(status_code=204) if found is None else _json(found)


@router.post("/leases/{lease_id}/submit", status_code=201, response_model=annotate.Label, dependencies=_LABEL)
def submit_label(request: Request, lease_id: str, body: SubmitRequest) -> Response:
    """Label a leased item; 409 if the lease expired or was used, 400 naming the label field that does not fit."""
    return _json(
        annotate.submit(_project(request), lease_id, _annotator(request), body.label, seconds=body.seconds), 201
    )


@router.post("/leases/{lease_id}/skip", response_model=Skipped, dependencies=_LABEL)
def skip_item(request: Request, lease_id: str, body: SkipRequest | None = None) -> Skipped:
    """Give a leased item back unlabelled; it is not served to this key again."""
    annotate.skip(_project(request), lease_id, _annotator(request), reason=body.reason if body else None)
    return Skipped(skipped=lease_id)


@router.get("/queues/{name}/stats", response_model=stats.QueueStats, dependencies=_READ)
def queue_stats(
    request: Request, name: str, bootstrap: Annotated[int, Query(ge=0, le=stats.MAX_BOOTSTRAP)] = 1000
) -> stats.QueueStats:
    """Label quality: counts, agreement per field, each annotator's speed and gold accuracy, judge calibration."""
    return stats.queue_stats(_project(request), name, bootstrap=bootstrap)


@router.get(
    "/queues/{name}/export",
    responses={200: {"content": {"application/x-ndjson": {}, "application/vnd.apache.parquet": {}}}},
    dependencies=_READ,
)
async def export_labels(request: Request, name: str, format: Literal["jsonl", "parquet"] = "jsonl") -> Response:
    """Export the queue's labels with each item's consensus, oldest first, as JSON lines (streamed) or Parquet."""
    project = _project(request)
    annotate.get_queue(project, name)  # a 404 before the stream starts
    if format == "parquet":
        data = await asyncio.to_thread(export.parquet_bytes, project, name)
        disposition = {"Content-Disposition": f'attachment; filename="{name}.parquet"'}
        return Response(data, media_type="application/vnd.apache.parquet", headers=disposition)
    lines: Iterator[bytes] = export.export_lines(project, name)

    async def body() -> AsyncIterator[bytes]:
        for chunk in lines:
            yield chunk

    return StreamingResponse(body(), media_type="application/x-ndjson")
