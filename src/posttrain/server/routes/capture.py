"""POST /api/capture/interactions, POST /api/capture/feedback, GET /api/capture/export."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from posttrain import capture
from posttrain.errors import InvalidInput, PayloadTooLarge
from posttrain.records import CaptureResponse
from posttrain.server.auth import require
from posttrain.server.responses import JSONResponse
from posttrain.server.schemas import ERRORS, request_body

router = APIRouter(prefix="/api/capture", tags=["capture"])


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is {declared} bytes; the limit is {limit} (capture.max_body_bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes (capture.max_body_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def _events(body: bytes, key: str) -> list[Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}", field="body") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise InvalidInput(f"body must be an object with a list '{key}'", field=key)
    if unknown := sorted(set(data) - {key}):
        raise InvalidInput(f"unknown field {unknown[0]!r}; the body holds only '{key}'", field=unknown[0])
    return data[key]  # type: ignore[no-any-return]


async def _capture(request: Request, kind: capture.Kind) -> JSONResponse:
    project = request.app.state.project
    limits = project.settings.capture
    body = await _read_body(request, limits.max_body_bytes)
    events = _events(body, kind)
    # no event can be over the limit when the whole body is under it
    check_size = len(body) > limits.max_event_bytes
    caller = request.state.caller  # set by require(): feedback's source and author follow the key
    results, rows = capture.validate_events(kind, events, limits, check_size=check_size, caller=caller)
    future = request.app.state.ingestor.submit(kind, [r for _, r in rows])
    statuses = await asyncio.wrap_future(future)
    status = 207 if len(rows) < len(events) else 200
    return JSONResponse({"results": capture.result_dicts(results, rows, statuses)}, status_code=status)


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": CaptureResponse, "description": "Every event stored or a known duplicate"},
    207: {"model": CaptureResponse, "description": "Some events were rejected; see each result"},
    **ERRORS,
}


@router.post(
    "/interactions",
    response_model=CaptureResponse,
    responses=_RESPONSES,
    openapi_extra=request_body("InteractionsRequest"),
    dependencies=[Depends(require("capture.interactions"))],
)
async def capture_interactions(request: Request) -> JSONResponse:
    """Store a batch of interactions; one result per event, in order."""
    return await _capture(request, "interactions")


@router.post(
    "/feedback",
    response_model=CaptureResponse,
    responses=_RESPONSES,
    openapi_extra=request_body("FeedbackRequest"),
    dependencies=[Depends(require("capture.feedback"))],
)
async def capture_feedback(request: Request) -> JSONResponse:
    """Store a batch of feedback; it may name interactions that have not arrived yet."""
    return await _capture(request, "feedback")


@router.get(
    "/export",
    responses={**ERRORS, 200: {"content": {"application/x-ndjson": {}}}},
    dependencies=[Depends(require("capture.export"))],
)
async def capture_export(
    request: Request, kind: Literal["interactions", "feedback"] = "interactions"
) -> StreamingResponse:
    """Stream every record of ``kind`` as JSON lines, oldest first."""
    lines: Iterator[bytes] = capture.export_lines(request.app.state.project, kind=kind)

    async def body() -> AsyncIterator[bytes]:
        for chunk in lines:
            yield chunk

    return StreamingResponse(body(), media_type="application/x-ndjson")
