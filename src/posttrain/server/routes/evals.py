"""POST /api/evals/run, /api/evals/compare, /api/evals/gate; GET /api/evals.

While ``posttrain serve`` runs it owns the warehouse, so an eval that records into it runs here.
Each POST answers when the eval is done (seconds to minutes for a small model) with the same
record the library returns, so the CLI renders it as it does locally; the work runs in a worker
thread, never on the event loop. Evals share the training lock: one heavy run at a time per server.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from posttrain import evals
from posttrain.evals.compare import GateRule
from posttrain.server.auth import require
from posttrain.server.routes.train import _RUNNING, claim
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


@contextmanager
def _exclusive() -> Iterator[None]:
    """Hold the server's training lock for one eval, or refuse at once."""
    claim()
    try:
        yield
    finally:
        _RUNNING.release()


@router.get("", response_model=list[evals.EvalResult], dependencies=[Depends(require("evals.read"))])
def list_eval_runs(request: Request, model: str | None = None, dataset: str | None = None) -> list[evals.EvalResult]:
    """List stored eval runs, newest first, of one model (name or id) and/or dataset (NAME@VERSION)."""
    return evals.list_runs(request.app.state.project, model=model, dataset=dataset)


@router.post("/run", response_model=evals.EvalResult, status_code=201, dependencies=[Depends(require("evals.write"))])
def run_eval(request: Request, body: RunRequest) -> evals.EvalResult:
    """Generate with a model on an eval dataset and score it; answers when the run is stored."""
    with _exclusive():
        return evals.run_eval(request.app.state.project, body.model, body.suite)


@router.post(
    "/compare", response_model=evals.ComparisonResult, status_code=201, dependencies=[Depends(require("evals.write"))]
)
def compare_models(request: Request, body: CompareRequest) -> evals.ComparisonResult:
    """Run a suite on a candidate and a baseline: paired differences and the judge's win rate."""
    with _exclusive():
        return evals.compare(request.app.state.project, body.candidate, body.baseline, body.suite)


@router.post("/gate", response_model=evals.GateResult, dependencies=[Depends(require("evals.write"))])
def gate_model(request: Request, body: GateRequest) -> evals.GateResult:
    """Compare, then pass only if no slice regresses beyond the margin; a failed gate is a 200 with passed false."""
    with _exclusive():
        return evals.gate(
            request.app.state.project, body.candidate, body.baseline, body.suite,
            margin=body.margin, metric=body.metric, rule=body.rule,
        )  # fmt: skip
