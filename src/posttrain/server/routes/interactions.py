"""GET /api/interactions and GET /api/interactions/{id}."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request

from posttrain.errors import NotFound
from posttrain.records import InteractionPage, StoredInteraction
from posttrain.server.auth import require
from posttrain.server.schemas import ERRORS
from posttrain.warehouse import queries

_COMMIT_WAIT_SECONDS = 10.0  # a group commit takes milliseconds; this bounds a stuck one

router = APIRouter(
    prefix="/api/interactions",
    tags=["interactions"],
    responses=ERRORS,
    dependencies=[Depends(require("interactions.read"))],
)


@router.get("", response_model=InteractionPage)
def list_interactions(
    request: Request,
    since: datetime | None = None,
    until: datetime | None = None,
    user_id: str | None = None,
    cohort: str | None = None,
    model: str | None = None,
    tag: str | None = None,
    has_feedback: bool | None = None,
    cursor: str | None = None,
    limit: int = Query(100, ge=1, le=queries.MAX_PAGE),
) -> InteractionPage:
    """List interactions newest first, with their feedback; follow ``next_cursor`` for more."""
    return queries.list_interactions(
        request.app.state.project.cursor(),
        since=since,
        until=until,
        user_id=user_id,
        cohort=cohort,
        model=model,
        tag=tag,
        has_feedback=has_feedback,
        cursor=cursor,
        limit=limit,
    )


@router.get("/{interaction_id}", response_model=StoredInteraction)
def get_interaction(request: Request, interaction_id: str) -> StoredInteraction:
    """Return one interaction with every feedback event that names it (one just served is waited for)."""
    project = request.app.state.project
    try:
        return queries.get_interaction(project.cursor(), interaction_id)
    except NotFound:  # queued behind the group commit? wait for it; it may also have just landed
        request.app.state.ingestor.wait_for(interaction_id, timeout=_COMMIT_WAIT_SECONDS)
    return queries.get_interaction(project.cursor(), interaction_id)
