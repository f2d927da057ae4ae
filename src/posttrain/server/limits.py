"""Bound the requests in flight, so memory stays bounded however hard clients push."""

from __future__ import annotations

from typing import Any

import orjson

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
