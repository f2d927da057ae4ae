"""OpenAPI pieces the routes reference but FastAPI cannot infer (raw-body capture requests)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from posttrain.records import Feedback, Interaction

_REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    type: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """The shape of every 4xx/5xx response."""

    error: ErrorDetail


class InteractionsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    interactions: list[Interaction] = Field(description="Events; each succeeds or fails on its own.")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feedback: list[Feedback] = Field(description="Events; each succeeds or fails on its own.")


def extra_schemas() -> dict[str, Any]:
    """Return component schemas for the capture request bodies and what they reference."""
    _, top = models_json_schema(
        [(InteractionsRequest, "validation"), (FeedbackRequest, "validation")], ref_template=_REF
    )
    return top.get("$defs", {})


def request_body(model: str) -> dict[str, Any]:
    """Return ``openapi_extra`` declaring a JSON body of component ``model``."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model=model)}}},
        }
    }


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in [
        (400, "Invalid input; `error.field` names the field"),
        (401, "Missing, unknown or revoked API key"),
        (403, "The key's role may not do this"),
        (404, "Not found"),
        (409, "Conflicts with the current state (a name taken, a run in progress); the message says what to do"),
        (413, "Body or batch over its limit; the message gives the limit"),
        (429, "Ingest backlog full; retry after the Retry-After header"),
        (503, "Storage failed or the server is shutting down; nothing was stored"),
    ]
}


def json_errors() -> dict[int | str, dict[str, Any]]:
    """Return ``ERRORS`` with their JSON content spelled out, for a route whose success is not JSON (a page).

    FastAPI documents an error ``model`` under the route's own media type; the errors are JSON whatever
    the route returns.
    """
    schema = {"$ref": "#/components/schemas/ErrorBody"}
    return {status: {"description": entry["description"], "content": {"application/json": {"schema": schema}}}
            for status, entry in ERRORS.items()}  # fmt: skip
