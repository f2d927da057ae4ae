"""POST /api/train/{method}: start a training run in the server; 202 with the job id at once.

While ``posttrain serve`` runs it owns the warehouse, so training that must record into it runs
here, in a worker thread; follow it with ``GET /api/jobs/{id}``. One run at a time per server.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from posttrain.errors import Conflict, PosttrainError
from posttrain.server.auth import require
from posttrain.server.schemas import ERRORS
from posttrain.train.methods import METHODS
from posttrain.train.runner import parse_config

router = APIRouter(prefix="/api/train", tags=["train"], responses=ERRORS, dependencies=[Depends(require("train"))])
_RUNNING = threading.Lock()  # one heavy run (training, a loop turn, an eval) per server


def claim() -> None:
    """Take the heavy-run lock or refuse at once (409); the caller (or its worker thread) releases it."""
    if not _RUNNING.acquire(blocking=False):
        raise Conflict("a training run, loop or eval is in progress on this server; wait for it (GET /api/jobs)")


Method = Literal["sft", "reward", "dpo", "grpo", "rloo", "distill"]


class JobStarted(BaseModel):
    job_id: str
    status_url: str


@router.post("/{method}", response_model=JobStarted, status_code=202)
async def start_training(request: Request, method: Method, body: dict[str, Any]) -> JobStarted:
    """Validate the config (the method's fields), start the run in a worker thread, answer with its job id."""
    config_cls, train = METHODS[method]
    config = parse_config(config_cls, body)
    claim()
    started: dict[str, Any] = {}
    ready = threading.Event()

    def on_job(job_id: str) -> None:
        started["job_id"] = job_id
        ready.set()

    def work() -> None:
        try:
            train(request.app.state.project, config, on_job=on_job)
        except PosttrainError as exc:  # before the job exists: the caller gets it; after: the job has it
            started.setdefault("error", exc)
        except Exception as exc:  # not swallowed: raised to the caller below, or already in the job's log
            started.setdefault("error", PosttrainError(f"training could not start: {type(exc).__name__}: {exc}"))
        finally:
            _RUNNING.release()
            ready.set()

    threading.Thread(target=work, name=f"posttrain-train-{method}", daemon=True).start()
    await asyncio.to_thread(ready.wait)
    if "job_id" not in started:
        raise started["error"]
    return JobStarted(job_id=started["job_id"], status_url=f"/api/jobs/{started['job_id']}")
