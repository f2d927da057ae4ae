"""The upstream backend: forward requests to any OpenAI-compatible server (vLLM, a hosted API, …)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from posttrain.errors import UpstreamFailed
from posttrain.gateway.wire import ChatRequest, Completion
from posttrain.settings import GatewaySettings


class UpstreamBackend:
    """Forward requests to an OpenAI-compatible server (one retry on connection errors)."""

    def __init__(self, settings: GatewaySettings, *, api_key: str | None = None) -> None:
        self._url = (settings.upstream_url or "").rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            timeout=settings.upstream_timeout_seconds,
            headers=headers,
            transport=httpx.AsyncHTTPTransport(retries=1),  # retries connection failures only
        )

    async def complete(self, request: ChatRequest) -> Completion:
        """Call the upstream's /chat/completions (never streaming) and read its first choice."""
        body = request.model_dump(exclude_none=True) | {"stream": False}
        body.pop("stream_options", None)
        url = f"{self._url}/chat/completions"
        try:
            reply = await self._client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise UpstreamFailed(f"upstream {url} failed: {type(exc).__name__}: {exc}", field="model") from None
        if reply.status_code >= 400:
            message = _upstream_message(reply)
            raise UpstreamFailed(f"upstream {url} answered {reply.status_code}: {message}", field="model")
        return _read_upstream(url, reply)

    async def stream(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        """Open a streaming call (usage included) and return its chunks; raise UpstreamFailed if it fails."""
        body = request.model_dump(exclude_none=True) | {"stream": True, "stream_options": {"include_usage": True}}
        url = f"{self._url}/chat/completions"
        try:
            reply = await self._client.send(self._client.build_request("POST", url, json=body), stream=True)
        except httpx.HTTPError as exc:
            raise UpstreamFailed(f"upstream {url} failed: {type(exc).__name__}: {exc}", field="model") from None
        if reply.status_code >= 400:
            await reply.aread()
            await reply.aclose()
            raise UpstreamFailed(
                f"upstream {url} answered {reply.status_code}: {_upstream_message(reply)}", field="model"
            )
        return _sse_events(url, reply)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


async def _sse_events(url: str, reply: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Yield the JSON objects of an upstream's ``data:`` lines until ``[DONE]``."""
    try:
        async for line in reply.aiter_lines():
            data = line.removeprefix("data:").strip()
            if not line.startswith("data:") or not data:
                continue
            if data == "[DONE]":
                return
            try:
                yield orjson.loads(data)
            except orjson.JSONDecodeError:
                raise UpstreamFailed(f"upstream {url} sent a chunk that is not JSON: {data[:200]}") from None
    except httpx.HTTPError as exc:
        raise UpstreamFailed(f"upstream {url} broke off the stream: {type(exc).__name__}: {exc}") from None
    finally:
        await reply.aclose()


def _upstream_message(reply: httpx.Response) -> str:
    try:
        error = reply.json().get("error")
    except ValueError:
        return reply.text[:500] or reply.reason_phrase
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return str(error or reply.text[:500])


def _read_upstream(url: str, reply: httpx.Response) -> Completion:
    try:
        data = reply.json()
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise UpstreamFailed(f"upstream {url} sent no chat completion: {reply.text[:300]}", field="model") from None
    usage = data.get("usage") or {}
    finish = "length" if choice.get("finish_reason") == "length" else "stop"
    return Completion(
        text=text,
        pieces=[text] if text else [],
        finish_reason=finish,
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
    )
