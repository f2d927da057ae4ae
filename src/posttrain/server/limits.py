"""Bound the requests in flight and their bodies, so memory stays bounded however hard clients push."""

from __future__ import annotations

from typing import Any

import orjson

from posttrain.errors import PayloadTooLarge

Scope = dict[str, Any]


class ConcurrencyLimit:
    """ASGI middleware: past ``limit`` requests in flight, answer 503 with Retry-After at once."""

    def __init__(self, app: Any, limit: int, retry_after: float = 1.0) -> None:
        self.app = app
        self.limit = limit
        self.retry_after = str(max(1, round(retry_after)))
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            await self._refuse(send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _refuse(self, send: Any) -> None:
        message = f"{self.limit} requests in flight (server.max_requests_in_flight); retry after the Retry-After delay"
        body = orjson.dumps({"error": {"type": "Unavailable", "message": message, "field": None}})
        headers = [(b"content-type", b"application/json"), (b"retry-after", self.retry_after.encode())]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


# Routes that bound their own bodies, by the larger capture.max_body_bytes, while they read them.
_OWN_LIMIT = ("/api/capture/", "/v1/")


class BodyLimit:
    """ASGI middleware: refuse a body over ``limit`` bytes (413) before it is buffered, on every other route.

    A declared ``Content-Length`` over the limit is answered at once; a chunked body is counted as
    it arrives and stops with ``PayloadTooLarge``, which the app renders as its 413.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_OWN_LIMIT):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _answer_413(
                send, f"body is {int(declared):,} bytes; the limit is {self.limit:,} (server.max_body_bytes)"
            )
            return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise PayloadTooLarge(f"body exceeds the limit of {self.limit:,} bytes (server.max_body_bytes)")
            return message

        await self.app(scope, counted, send)


async def _answer_413(send: Any, message: str) -> None:
    body = orjson.dumps({"error": {"type": "PayloadTooLarge", "message": message, "field": "body"}})
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
