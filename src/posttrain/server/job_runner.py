"""The server's heavy work (training, loop turns, evals): one at a time, in a worker thread, as a job.

``create_app`` builds one ``JobRunner``; the train, loop and evals routes hand it a function that
does the work and reports its job's id through ``on_job`` as soon as the job row exists. The route
answers 202 with that id; errors before it (a bad config, an unknown model) are the route's 4xx.
A second run while one is in progress is refused (409), or, with ``wait``, waits for the slot and
then starts (the request is answered once it has its job id).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from posttrain.errors import Conflict, PosttrainError

OnJob = Callable[[str], None]


class JobStarted(BaseModel):
    job_id: str
    status_url: str


class JobRunner:
    """Admits one heavy run per server; a second is refused at once (409) or waits its turn."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def claim(self) -> None:
        """Take the run slot or raise Conflict; ``release`` gives it back."""
        if not self._lock.acquire(blocking=False):
            raise Conflict("a training run, loop or eval is in progress on this server; wait for it (GET /api/jobs)")

    def release(self) -> None:
        """Give the run slot back."""
        self._lock.release()

    async def claim_waiting(self) -> None:
        """Wait for the run slot; a request that goes away meanwhile gives it back once taken."""
        taken = asyncio.ensure_future(asyncio.to_thread(self._lock.acquire))
        try:
            await asyncio.shield(taken)
        except asyncio.CancelledError:
            taken.add_done_callback(lambda _: self.release())
            raise

    async def start(self, name: str, work: Callable[[OnJob], Any], *, wait: bool = False) -> JobStarted:
        """Run ``work(on_job)`` in a worker thread; return once it names its job, or raise what stopped it first.

        With ``wait`` a run in progress is waited for instead of refused.
        """
        if wait:
            await self.claim_waiting()
        else:
            self.claim()
        started: dict[str, Any] = {}
        ready = threading.Event()

        def on_job(job_id: str) -> None:
            started["job_id"] = job_id
            ready.set()

        def run() -> None:
            try:
                work(on_job)
            except PosttrainError as exc:  # before the job exists: the caller gets it; after: the job has it
                started.setdefault("error", exc)
            except Exception as exc:  # not swallowed: raised to the caller below, or already in the job's log
                started.setdefault("error", PosttrainError(f"{name} could not start: {type(exc).__name__}: {exc}"))
            finally:
                self.release()
                ready.set()

        threading.Thread(target=run, name=f"posttrain-{name}", daemon=True).start()
        await asyncio.to_thread(ready.wait)
        if "job_id" not in started:
            raise started["error"]
        return JobStarted(job_id=started["job_id"], status_url=f"/api/jobs/{started['job_id']}")
