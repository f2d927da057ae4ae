"""The upstream backend: forward requests to any OpenAI-compatible server (vLLM, a hosted API, …).

It uses aiohttp: measured against a stub upstream on 2 cores, httpx's async client spent
0.6–1.3 ms of CPU per call (its connection pool scans every connection on every request),
aiohttp 0.07–0.11 ms — the difference between a gateway that serves a few hundred requests a
second and one that serves over a thousand (``benchmarks/gateway.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from posttrain.errors import UpstreamFailed
from posttrain.gateway.wire import ChatRequest, Completion
from posttrain.settings import GatewaySettings

_RETRIED = (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError)  # failed before an answer


class UpstreamBackend:
    """Forward requests to an OpenAI-compatible server (one retry when the connection fails)."""

    def __init__(self, settings: GatewaySettings, *, api_key: str | None = None) -> None:
        self._url = f"{(settings.upstream_url or '').rstrip('/')}/chat/completions"
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(total=settings.upstream_timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on first use, inside the server's event loop
            connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, headers=self._headers)
        return self._session

    async def _post(self, body: dict[str, Any]) -> aiohttp.ClientResponse:
        data = orjson.dumps(body)
        for attempt in (1, 2):
            try:
                return await self._client().post(self._url, data=data)
            except _RETRIED as exc:
                if attempt == 2:
                    raise UpstreamFailed(f"upstream {self._url} failed: {type(exc).__name__}: {exc}",
                                         field="model") from None  # fmt: skip
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise UpstreamFailed(f"upstream {self._url} failed: {type(exc).__name__}: {exc}",
                                     field="model") from None  # fmt: skip
        raise AssertionError("unreachable")

    async def _refuse(self, reply: aiohttp.ClientResponse) -> UpstreamFailed:
        try:
            text = (await reply.read()).decode(errors="replace")
        finally:
            reply.release()
        return UpstreamFailed(f"upstream {self._url} answered {reply.status}: {_message(text, reply)}", field="model")

    async def complete(self, request: ChatRequest) -> Completion:
        """Call the upstream's /chat/completions (never streaming) and read its first choice."""
        body = request.model_dump(exclude_none=True) | {"stream": False}
        body.pop("stream_options", None)
        reply = await self._post(body)
        if reply.status >= 400:
            raise await self._refuse(reply)
        try:
            raw = await reply.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamFailed(
                f"upstream {self._url} broke off: {type(exc).__name__}: {exc}", field="model"
            ) from None
        finally:
            reply.release()
        return _read_upstream(self._url, raw)

    async def stream(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        """Open a streaming call (usage included) and return its chunks; raise UpstreamFailed if it fails."""
        body = request.model_dump(exclude_none=True) | {"stream": True, "stream_options": {"include_usage": True}}
        reply = await self._post(body)
        if reply.status >= 400:
            raise await self._refuse(reply)
        return _sse_events(self._url, reply)

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            await asyncio.sleep(0)  # let the connector's transports close


async def _sse_events(url: str, reply: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """Yield the JSON objects of an upstream's ``data:`` lines until ``[DONE]``; closing it closes the call."""
    try:
        async for raw in reply.content:
            line = raw.decode(errors="replace").strip()
            data = line.removeprefix("data:").strip()
            if not line.startswith("data:") or not data:
                continue
            if data == "[DONE]":
                return
            try:
                yield orjson.loads(data)
            except orjson.JSONDecodeError:
                raise UpstreamFailed(f"upstream {url} sent a chunk that is not JSON: {data[:200]}") from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UpstreamFailed(f"upstream {url} broke off the stream: {type(exc).__name__}: {exc}") from None
    finally:
        reply.close()  # a client that went away must not leave the upstream generating


def _message(text: str, reply: aiohttp.ClientResponse) -> str:
    try:
        error = orjson.loads(text).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return text[:500] or (reply.reason or "")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return str(error or text[:500])


def _read_upstream(url: str, raw: bytes) -> Completion:
    """Read an upstream's chat completion; its choices are kept as sent (tool calls, refusal, logprobs)."""
    try:
        data = orjson.loads(raw)
        choices = data["choices"]
        message = choices[0]["message"]
        text = message.get("content") or ""
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        raise UpstreamFailed(f"upstream {url} sent no chat completion: {raw[:300]!r}", field="model") from None
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
    return Completion(
        text=text if isinstance(text, str) else "",
        pieces=[text] if isinstance(text, str) and text else [],
        finish_reason=str(choices[0].get("finish_reason") or "stop"),
        prompt_tokens=(usage or {}).get("prompt_tokens"),
        completion_tokens=(usage or {}).get("completion_tokens"),
        choices=choices,
        usage=usage,
    )
