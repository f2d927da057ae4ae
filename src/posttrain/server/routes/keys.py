"""POST /api/keys, GET /api/keys, DELETE /api/keys/{id} (admin only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from posttrain import keys
from posttrain.records import ApiKey, NewApiKey, Role
from posttrain.server.auth import require
from posttrain.server.schemas import ERRORS

router = APIRouter(prefix="/api/keys", tags=["keys"], responses=ERRORS, dependencies=[Depends(require("keys"))])


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    name: str | None = None


@router.post("", response_model=NewApiKey, status_code=201)
def create_key(request: Request, body: KeyRequest) -> NewApiKey:
    """Create a key; the response is the only time its secret is shown."""
    return keys.create_key(request.app.state.project, body.role, name=body.name)


@router.get("", response_model=list[ApiKey])
def list_keys(request: Request) -> list[ApiKey]:
    """List every key (no secrets)."""
    return keys.list_keys(request.app.state.project)


@router.delete("/{key_id}", response_model=ApiKey)
def revoke_key(request: Request, key_id: str) -> ApiKey:
    """Revoke a key by id or prefix; it stops working at once."""
    revoked = keys.revoke_key(request.app.state.project, key_id)
    request.app.state.keys.forget_all()
    return revoked
