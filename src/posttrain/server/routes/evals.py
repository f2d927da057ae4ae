"""POST /api/evals/run, /api/evals/compare, /api/evals/gate; GET /api/evals.

While ``posttrain serve`` runs it owns the warehouse, so an eval that records into it runs here.
Each POST answers 202 with a job as soon as the inputs are checked; the job's ``result`` is the
record the library returns (the run, the comparison, the verdict), so the CLI follows the job and
renders it as it does locally. Evals share the server's one heavy-run slot with training and loops.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from posttrain import evals
from posttrain.evals.compare import GateRule
from posttrain.server.auth import require
from posttrain.server.job_runner import JobStarted
from posttrain.server.schemas import ERRORS

router = APIRouter(prefix="/api/evals", tags=["evals"], responses=ERRORS)


class RunRequest(BaseModel):
    """A model and the suite to score it on."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="A registered causal-lm.")
    suite: evals.SuiteConfig


class CompareRequest(BaseModel):
    """A candidate, its baseline (none: the serving model), and the suite both run."""

    model_config = ConfigDict(extra="forbid")

    candidate: str = Field(min_length=1, description="A registered causal-lm.")
    baseline: str | None = Field(None, description="The model to beat (default: the serving model).")
    suite: evals.SuiteConfig


class GateRequest(CompareRequest):
    """A comparison and the rule that passes or fails it."""

    margin: float = Field(0.02, description="The loss tolerated, in the metric's units.")
    metric: str | None = Field(None, description="The scorer gated on (default: the suite's first).")
    rule: GateRule = Field("ci", description="ci: the difference's lower 95% bound; mean: the difference.")


@router.get("", response_model=list[evals.EvalResult], dependencies=[Depends(require("evals.read"))])
def list_eval_runs(request: Request, model: str | None = None, dataset: str | None = None) -> list[evals.EvalResult]:
    """List stored eval runs, newest first, of one model (name or id) and/or dataset (NAME@VERSION)."""
    return evals.list_runs(request.app.state.project, model=model, dataset=dataset)


@router.post("/run", response_model=JobStarted, status_code=202, dependencies=[Depends(require("evals.write"))])
async def run_eval(request: Request, body: RunRequest) -> JobStarted:
    """Generate with a model on an eval dataset and score it, as a job; its result is the eval run."""
    project = request.app.state.project
    return await request.app.state.runner.start(  # type: ignore[no-any-return]
        "evals-run", lambda on_job: evals.run_eval(project, body.model, body.suite, on_job=on_job)
    )


@router.post("/compare", response_model=JobStarted, status_code=202, dependencies=[Depends(require("evals.write"))])
async def compare_models(request: Request, body: CompareRequest) -> JobStarted:
    """Run a suite on a candidate and a baseline, as a job; its result is the comparison."""
    project = request.app.state.project
    return await request.app.state.runner.start(  # type: ignore[no-any-return]
        "evals-compare",
        lambda on_job: evals.compare(project, body.candidate, body.baseline, body.suite, on_job=on_job),
    )


@router.post("/gate", response_model=JobStarted, status_code=202, dependencies=[Depends(require("evals.write"))])
async def gate_model(request: Request, body: GateRequest) -> JobStarted:
    """Compare, then pass only if no slice regresses beyond the margin, as a job; its result is the verdict."""
    project = request.app.state.project
    return await request.app.state.runner.start(  # type: ignore[no-any-return]
        "evals-gate",
        lambda on_job: evals.gate(
            project, body.candidate, body.baseline, body.suite,
            margin=body.margin, metric=body.metric, rule=body.rule, on_job=on_job,
        ),
    )  # fmt: skip
