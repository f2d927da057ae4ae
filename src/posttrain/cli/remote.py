"""Reach a running ``posttrain serve`` when it owns the warehouse (DuckDB has one writer)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from posttrain import errors
from posttrain.records import Job


class Remote:
    """A thin HTTP client for the CLI, authenticated with the server's local control token."""

    def __init__(self, url: str, token: str, *, timeout: float = 60.0) -> None:
        self.url = url
        self._http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request; raise the posttrain error the server reported."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise errors.Unavailable(f"cannot reach posttrain serve at {self.url}: {exc}") from None
        if response.status_code >= 400:
            raise _error(response)
        return None if response.status_code == 204 else response.json()

    def text(self, path: str, **kwargs: Any) -> str:
        """GET a page (HTML, text); raise the posttrain error the server reported."""
        try:
            response = self._http.request("GET", path, **kwargs)
        except httpx.HTTPError as exc:
            raise errors.Unavailable(f"cannot reach posttrain serve at {self.url}: {exc}") from None
        if response.status_code >= 400:
            raise _error(response)
        return response.text

    def follow_job(
        self,
        started: dict[str, Any],
        *,
        on_progress: Callable[[float], None] | None = None,
        on_line: Callable[[str], None] | None = None,
        poll_seconds: float = 0.5,
    ) -> Job:
        """Follow a job the server started (its 202 body) until it ends; raise JobFailed unless it succeeded.

        ``on_progress(fraction)`` sees its progress, ``on_line(line)`` each new line of its log.
        """
        shown = 0
        while True:
            job = Job(**self.call("GET", started["status_url"]))
            lines = job.log.splitlines()
            for line in lines[shown:]:
                if on_line is not None:
                    on_line(line)
            shown = len(lines)
            if on_progress is not None:
                on_progress(job.progress)
            if job.state not in ("queued", "running"):
                break
            time.sleep(poll_seconds)
        if job.state != "succeeded":
            raise errors.JobFailed(f"{job.kind} job {job.id} {job.state}: {job.error} (the job keeps its log)")
        return job

    def stream_lines(self, path: str, **params: Any) -> Any:
        """Return a streaming response context for a JSON-lines endpoint."""
        return self._http.stream("GET", path, params=params)


def _error(response: httpx.Response) -> errors.PosttrainError:
    try:
        detail = response.json()["error"]
        message, field = detail["message"], detail.get("field")
    except (ValueError, KeyError, TypeError):
        message, field = response.text[:200], None
    retry = response.headers.get("retry-after")
    retry_after = float(retry) if retry and retry.replace(".", "", 1).isdigit() else None
    return errors.for_status(response.status_code, message, field=field, retry_after=retry_after)
