"""POST /api/loop/run: run flywheel turns in the server (202 + job id); GET /api/loop/turns."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from posttrain import jobs, loop
from posttrain.server.auth import require
from posttrain.server.job_runner import JobStarted, OnJob
from posttrain.server.schemas import ERRORS

router = APIRouter(prefix="/api/loop", tags=["loop"], responses=ERRORS)


class LoopRequest(BaseModel):
    """Turns to run, the recipe (its fields; empty means the default), the first turn's serving model."""

    model_config = ConfigDict(extra="forbid")

    turns: int = Field(1, ge=1, le=100)
    recipe: dict[str, Any] = Field(default_factory=dict)
    base: str | None = None


@router.post("/run", response_model=JobStarted, status_code=202, dependencies=[Depends(require("train"))])
async def run_loop(request: Request, body: LoopRequest) -> JobStarted:
    """Run (or resume) turns in a worker thread; follow the job: its log has one line per step."""
    project = request.app.state.project
    recipe = loop.load_recipe(None, **body.recipe)

    def work(on_job: OnJob) -> None:
        job = jobs.start_job(project, "loop.run", body.model_dump(mode="json"))
        on_job(job.id)
        try:
            done = loop.run(project, recipe, body.turns, base=body.base,
                            on_event=lambda step, message: job.log(f"{step}: {message}"))  # fmt: skip
            request.app.state.gateway.refresh()
            job.succeed(result={"turns": [t.model_dump(mode="json", exclude={"steps"}) for t in done]})
        except Exception as exc:  # the job keeps it; the request was answered long ago
            job.fail(getattr(exc, "message", f"{type(exc).__name__}: {exc}"))

    return await request.app.state.runner.start("loop", work)  # type: ignore[no-any-return]


@router.get("/turns", response_model=list[loop.TurnRecord], dependencies=[Depends(require("jobs.read"))])
def list_turns(request: Request, loop_name: str | None = None) -> list[loop.TurnRecord]:
    """Every turn of every loop (or of ``loop_name``), oldest first, with its steps."""
    return loop.status(request.app.state.project, loop_name)
