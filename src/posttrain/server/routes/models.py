"""GET /api/models, /api/models/{name}, /api/models/{name}/lineage."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from posttrain.models import lineage as lineage_mod
from posttrain.models import registry
from posttrain.records import ModelRecord
from posttrain.server.auth import require
from posttrain.server.schemas import ERRORS

router = APIRouter(
    prefix="/api/models", tags=["models"], responses=ERRORS, dependencies=[Depends(require("models.read"))]
)


@router.get("", response_model=list[ModelRecord])
def list_models(request: Request) -> list[ModelRecord]:
    """List registered models, newest first."""
    return registry.list_models(request.app.state.project)


@router.get("/{name}", response_model=ModelRecord)
def show_model(request: Request, name: str) -> ModelRecord:
    """Return one registered model."""
    return registry.get_model(request.app.state.project, name)


@router.get("/{name}/lineage", response_model=lineage_mod.Lineage)
def model_lineage(request: Request, name: str, sample: int = Query(5, ge=0, le=100)) -> lineage_mod.Lineage:
    """Return the chain base → parents → runs → dataset versions → source records of a model."""
    return lineage_mod.lineage(request.app.state.project, name, sample=sample)
