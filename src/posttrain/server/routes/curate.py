"""GET /api/curate/safety, POST /api/curate/safety: the safety classifiers curation filters with."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from posttrain.names import Name
from posttrain.server.auth import require
from posttrain.server.schemas import ERRORS

router = APIRouter(prefix="/api/curate", tags=["curate"], responses=ERRORS)


class TrainSafetyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name = Field(description="The classifier's name (a new one, or a new training of a name).")
    where: str | None = Field(
        None, max_length=4000, description="One SQL condition over interactions 'i' limiting the examples."
    )
    min_examples: int = Field(20, ge=2, le=1_000_000, description="Examples each class needs.")


@router.get("/safety", dependencies=[Depends(require("datasets.read"))])
def list_safety(request: Request) -> list[dict[str, Any]]:
    """List the trained safety classifiers, newest first."""
    from posttrain.curation import safety

    return [c.model_dump(mode="json") for c in safety.list_classifiers(request.app.state.project)]


@router.post("/safety", status_code=201, dependencies=[Depends(require("datasets.build"))])
def train_safety(request: Request, body: TrainSafetyRequest) -> dict[str, Any]:
    """Train a safety classifier on the warehouse's flagged and labelled answers."""
    from posttrain.curation import safety
    from posttrain.datasets import check_where
    from posttrain.errors import InvalidInput

    try:
        where = check_where(body.where)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="where") from None
    found = safety.train_classifier(request.app.state.project, body.name, where=where, min_examples=body.min_examples)
    return found.model_dump(mode="json")
