"""/api/experiments: create, start, stop, analyse, decide, promote, roll back; the timeline."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict

from posttrain import experiments
from posttrain.server.auth import require
from posttrain.server.schemas import ERRORS

router = APIRouter(prefix="/api/experiments", tags=["experiments"], responses=ERRORS)


class PromoteRequest(BaseModel):
    """Which variant to ship; none means the decided winner (or the only treatment)."""

    model_config = ConfigDict(extra="forbid")

    variant: str | None = None


def _changed(request: Request) -> None:
    request.app.state.gateway.refresh()  # the gateway sees a start, stop or promotion at once


@router.get("", response_model=list[experiments.Experiment], dependencies=[Depends(require("experiments.read"))])
def list_experiments(request: Request) -> list[experiments.Experiment]:
    """List experiments, newest first."""
    return experiments.list_experiments(request.app.state.project)


@router.post(
    "", status_code=201, response_model=experiments.Experiment, dependencies=[Depends(require("experiments.write"))]
)
def create_experiment(request: Request, config: experiments.ExperimentConfig) -> experiments.Experiment:
    """Create a draft experiment: variants with shares (the first is the control), cohorts, metric, guardrails."""
    return experiments.create_experiment(request.app.state.project, config)


@router.get("/{name}", response_model=experiments.Experiment, dependencies=[Depends(require("experiments.read"))])
def show_experiment(request: Request, name: str) -> experiments.Experiment:
    """Return one experiment: variants, targeting, metrics, state, decision."""
    return experiments.get_experiment(request.app.state.project, name)


@router.post(
    "/{name}/start", response_model=experiments.Experiment, dependencies=[Depends(require("experiments.write"))]
)
def start_experiment(request: Request, name: str) -> experiments.Experiment:
    """Start a draft experiment: the gateway assigns users to it from now on."""
    found = experiments.start(request.app.state.project, name)
    _changed(request)
    return found


@router.post(
    "/{name}/stop", response_model=experiments.Experiment, dependencies=[Depends(require("experiments.write"))]
)
def stop_experiment(request: Request, name: str) -> experiments.Experiment:
    """Stop assigning users to a running experiment; its data stays for analysis."""
    found = experiments.stop(request.app.state.project, name)
    _changed(request)
    return found


@router.get(
    "/{name}/analysis", response_model=experiments.Analysis, dependencies=[Depends(require("experiments.read"))]
)
def analyse_experiment(request: Request, name: str) -> experiments.Analysis:
    """Analyse per variant and per cohort (frequentist, Bayesian, always-valid, SRM, pairwise); keeps a snapshot."""
    return experiments.analyse(request.app.state.project, name)


@router.get(
    "/{name}/timeline", response_model=experiments.Timeline, dependencies=[Depends(require("experiments.read"))]
)
def experiment_timeline(
    request: Request, name: str, buckets: Annotated[int, Query(ge=1, le=500)] = 20
) -> experiments.Timeline:
    """The primary metric over time per variant (95% CI) and each difference (confidence sequence)."""
    return experiments.timeline(request.app.state.project, name, buckets=buckets)


@router.post(
    "/{name}/decide", response_model=experiments.Decision, dependencies=[Depends(require("experiments.decide"))]
)
def decide_experiment(request: Request, name: str, apply: bool = False) -> experiments.Decision:
    """Decide promote / roll back / continue; with ``apply`` carry it out. Recorded with its analysis."""
    decision = experiments.decide(request.app.state.project, name, apply=apply)
    _changed(request)
    return decision


@router.post(
    "/{name}/promote", response_model=experiments.Experiment, dependencies=[Depends(require("experiments.decide"))]
)
def promote_experiment(request: Request, name: str, body: PromoteRequest | None = None) -> experiments.Experiment:
    """Ship a variant: its model becomes serving and the experiment promoted."""
    found = experiments.promote(request.app.state.project, name, body.variant if body else None)
    _changed(request)
    return found


@router.post(
    "/{name}/rollback", response_model=experiments.Experiment, dependencies=[Depends(require("experiments.decide"))]
)
def rollback_experiment(request: Request, name: str) -> experiments.Experiment:
    """End the experiment without shipping; the control keeps serving."""
    found = experiments.rollback(request.app.state.project, name)
    _changed(request)
    return found
