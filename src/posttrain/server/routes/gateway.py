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
from posttrain.errors import InvalidInput, PosttrainError
from posttrain.server.auth import require
from posttrain.server.responses import JSONResponse

router = APIRouter(prefix="/v1", tags=["gateway"], dependencies=[Depends(require("gateway"))])

INTERACTION_HEADER = "X-Posttrain-Interaction-Id"


async def _body(request: Request) -> Any:
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}", field="body") from None


@router.post("/chat/completions", include_in_schema=False)
async def chat_completions(request: Request) -> Any:
    """Answer a chat completion (OpenAI format, streaming too) and log it as an interaction."""
    chat = gateway.parse_request(await _body(request))
    who = {"user": request.headers.get("x-posttrain-user"), "cohort": request.headers.get("x-posttrain-cohort")}
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
