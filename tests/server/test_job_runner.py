"""The server's run slot: a second heavy run is refused (409), or with wait queued until the first ends."""

from __future__ import annotations

import asyncio
import threading

import pytest

from posttrain.errors import Conflict
from posttrain.server.job_runner import JobRunner, OnJob

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")


def _work(job_id: str, release: threading.Event) -> object:
    def work(on_job: OnJob) -> None:
        on_job(job_id)
        release.wait(10)

    return work


def test_a_second_run_is_refused_without_wait() -> None:
    async def scenario() -> None:
        runner, release = JobRunner(), threading.Event()
        await runner.start("first", _work("j1", release))  # type: ignore[arg-type]
        with pytest.raises(Conflict, match="in progress"):
            await runner.start("second", _work("j2", release))  # type: ignore[arg-type]
        release.set()

    asyncio.run(scenario())


def test_a_second_run_with_wait_starts_when_the_first_ends() -> None:
    async def scenario() -> None:
        runner, first_done, second_done = JobRunner(), threading.Event(), threading.Event()
        await runner.start("first", _work("j1", first_done))  # type: ignore[arg-type]
        second = asyncio.ensure_future(runner.start("second", _work("j2", second_done), wait=True))  # type: ignore[arg-type]
        await asyncio.sleep(0.2)
        assert not second.done()  # queued behind the first
        first_done.set()
        started = await asyncio.wait_for(second, 5)
        assert started.job_id == "j2"
        second_done.set()

    asyncio.run(scenario())
