"""POST /api/train/{method}: start a training run in the server; 202 with the job id at once.

While ``posttrain serve`` runs it owns the warehouse, so training that must record into it runs
here, in a worker thread (``server.job_runner``); follow it with ``GET /api/jobs/{id}``.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request

from posttrain.server.auth import require
from posttrain.server.job_runner import JobStarted, OnJob
from posttrain.server.schemas import ERRORS
from posttrain.train.methods import METHODS
from posttrain.train.runner import parse_config

router = APIRouter(prefix="/api/train", tags=["train"], responses=ERRORS, dependencies=[Depends(require("train"))])

Method = Literal["sft", "reward", "dpo", "grpo", "rloo", "distill"]


@router.post("/{method}", response_model=JobStarted, status_code=202)
async def start_training(request: Request, method: Method, body: dict[str, Any], wait: bool = False) -> JobStarted:
    """Validate the config (the method's fields), start the run in a worker thread, answer with its job id.

    While another run is in progress: 409, or with ``?wait=true`` wait for it to end, then start.
    """
    config_cls, train = METHODS[method]
    config = parse_config(config_cls, body)
    project = request.app.state.project

    def work(on_job: OnJob) -> Any:
        return train(project, config, on_job=on_job)

    return await request.app.state.runner.start(f"train-{method}", work, wait=wait)  # type: ignore[no-any-return]
