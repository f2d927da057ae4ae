"""GET /api/jobs, GET /api/jobs/{id} and POST /api/jobs/{id}/cancel: long work, its progress, metrics and log."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from posttrain import jobs
from posttrain.records import Job
from posttrain.server.auth import require
from posttrain.server.schemas import ERRORS

router = APIRouter(prefix="/api/jobs", tags=["jobs"], responses=ERRORS)
_READ = [Depends(require("jobs.read"))]


@router.get("", response_model=list[Job], dependencies=_READ)
def list_jobs(request: Request, kind: str | None = None, limit: int = Query(100, ge=1, le=1000)) -> list[Job]:
    """List jobs newest first, optionally of one kind (train.sft, generate, ...)."""
    return jobs.list_jobs(request.app.state.project, kind=kind, limit=limit)


@router.get("/{job_id}", response_model=Job, dependencies=_READ)
def show_job(request: Request, job_id: str) -> Job:
    """Return one job with its metrics history and log."""
    return jobs.get_job(request.app.state.project, job_id)


# "train" is the admin-only action that starts the heavy work a cancellation stops
@router.post("/{job_id}/cancel", response_model=Job, dependencies=[Depends(require("train"))])
def cancel_job(request: Request, job_id: str) -> Job:
    """Cancel a queued or running job; a running one stops cleanly at its next progress report."""
    return jobs.cancel_job(request.app.state.project, job_id)
