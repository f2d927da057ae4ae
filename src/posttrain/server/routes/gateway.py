"""POST /v1/chat/completions and GET /v1/models: the OpenAI-compatible gateway.

These routes speak OpenAI's wire format, errors included, so the official SDKs work unchanged;
they are left out of posttrain's own OpenAPI document (OpenAI publishes theirs).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from posttrain import gateway
from posttrain.errors import InvalidInput, PayloadTooLarge, PosttrainError
from posttrain.server.auth import require
from posttrain.server.responses import JSONResponse

router = APIRouter(prefix="/v1", tags=["gateway"], dependencies=[Depends(require("gateway"))])

INTERACTION_HEADER = "X-Posttrain-Interaction-Id"
SIDE_BY_SIDE = gateway.SIDE_BY_SIDE_HEADER


async def _body(request: Request) -> Any:
    """Read and parse the body, refusing it (413) as soon as it passes ``capture.max_body_bytes``."""
    limit = request.app.state.project.settings.capture.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is {declared} bytes; the limit is {limit} (capture.max_body_bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():  # chunked framing declares no length: count as it comes
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes (capture.max_body_bytes)")
        chunks.append(chunk)
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}", field="body") from None


@router.post("/chat/completions", include_in_schema=False)
async def chat_completions(request: Request) -> Any:
    """Answer a chat completion (OpenAI format, streaming too) and log it as an interaction."""
    chat = gateway.parse_request(await _body(request))
    who = {"user": request.headers.get("x-posttrain-user"), "cohort": request.headers.get("x-posttrain-cohort")}
    side_by_side = request.headers.get("x-posttrain-side-by-side", "").strip().lower()
    if side_by_side not in ("", "false", "0", "true", "1"):
        raise InvalidInput(f"{SIDE_BY_SIDE}: {side_by_side!r} is not true or false", field=SIDE_BY_SIDE)
    if side_by_side in ("true", "1"):
        if chat.stream:
            raise InvalidInput(f"{SIDE_BY_SIDE}: side-by-side answers cannot stream; drop stream", field="stream")
        pair_id, answers = await request.app.state.gateway.side_by_side(chat, **who)
        ids = ",".join(a.interaction_id for a in answers)
        return JSONResponse(gateway.pair_body(pair_id, answers), headers={INTERACTION_HEADER: ids})
    if not chat.stream:
        served = await request.app.state.gateway.complete(chat, **who)
        headers = {INTERACTION_HEADER: served.interaction_id}
        return JSONResponse(gateway.completion_body(served), headers=headers)
    interaction_id, chunks = await request.app.state.gateway.stream(chat, **who)
    return StreamingResponse(_sse(chunks), media_type="text/event-stream", headers={INTERACTION_HEADER: interaction_id})


async def _sse(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """Frame chunks as server-sent events; a failure mid-stream becomes an error event, as OpenAI sends."""
    try:
        async for chunk in chunks:
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    except PosttrainError as exc:
        yield b"data: " + orjson.dumps(gateway.openai_error(exc.status, exc.message, exc.field)) + b"\n\n"
        return
    yield b"data: [DONE]\n\n"


@router.get("/models", include_in_schema=False)
async def list_models(request: Request) -> JSONResponse:
    """List the models this gateway serves (OpenAI format)."""
    return JSONResponse({"object": "list", "data": request.app.state.gateway.models()})
