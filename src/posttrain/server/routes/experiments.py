"""GET /api/experiments, GET /api/experiments/{name}, GET .../analysis, POST .../decide."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from posttrain import experiments
from posttrain.server.auth import require
from posttrain.server.schemas import ERRORS

router = APIRouter(prefix="/api/experiments", tags=["experiments"], responses=ERRORS)


@router.get("", response_model=list[experiments.Experiment], dependencies=[Depends(require("experiments.read"))])
def list_experiments(request: Request) -> list[experiments.Experiment]:
    """List experiments, newest first."""
    return experiments.list_experiments(request.app.state.project)


@router.get("/{name}", response_model=experiments.Experiment, dependencies=[Depends(require("experiments.read"))])
def show_experiment(request: Request, name: str) -> experiments.Experiment:
    """Return one experiment: variants, targeting, metrics, state, decision."""
    return experiments.get_experiment(request.app.state.project, name)


@router.get(
    "/{name}/analysis", response_model=experiments.Analysis, dependencies=[Depends(require("experiments.read"))]
)
def analyse_experiment(request: Request, name: str) -> experiments.Analysis:
    """Analyse per variant and per cohort (frequentist, Bayesian, always-valid, SRM); keeps a snapshot."""
    return experiments.analyse(request.app.state.project, name)


@router.post(
    "/{name}/decide", response_model=experiments.Decision, dependencies=[Depends(require("experiments.decide"))]
)
def decide_experiment(request: Request, name: str, apply: bool = False) -> experiments.Decision:
    """Decide promote / roll back / continue; with ``apply`` carry it out. Recorded with its analysis."""
    return experiments.decide(request.app.state.project, name, apply=apply)
