"""Jobs: owner and heartbeat, stale jobs failed on open, cancellation, and their CLI and routes."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel
from typer.testing import CliRunner

from posttrain.cli import app
from posttrain.clock import utc_now
from posttrain.errors import Conflict
from posttrain.jobs import JobCancelled, cancel_job, get_job, list_jobs, run_as_job, start_job
from posttrain.project import Project, open_project
from posttrain.records import Job
from posttrain.warehouse.recovery import STALE_AFTER

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")


class _Done(BaseModel):
    id: str = "done"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _reopen(project: Project) -> Project:
    project.close()
    return open_project(project.root)


def test_start_job_records_its_owner_and_a_heartbeat(project: Project) -> None:
    job = start_job(project, "test", {})
    stored = get_job(project, job.id)
    assert stored.owner_pid is not None and stored.owner_host and stored.heartbeat_at is not None


def test_open_fails_a_job_whose_process_died(project: Project) -> None:
    job = start_job(project, "train.sft", {})
    project.cursor().execute("UPDATE jobs SET owner_pid = ? WHERE id = ?", [_dead_pid(), job.id])
    with _reopen(project) as reopened:
        stale = get_job(reopened, job.id)
    assert stale.state == "failed" and "ended without finishing" in (stale.error or "")
    assert "--resume" in (stale.error or "") and stale.finished_at is not None


def test_open_fails_a_job_without_a_recent_heartbeat(project: Project) -> None:
    job = start_job(project, "train.sft", {})
    old = utc_now() - STALE_AFTER - timedelta(minutes=1)
    project.cursor().execute("UPDATE jobs SET owner_pid = 1, owner_host = 'elsewhere', heartbeat_at = ? WHERE id = ?",
                             [old, job.id])  # fmt: skip
    with _reopen(project) as reopened:
        assert get_job(reopened, job.id).state == "failed"


def test_open_keeps_a_live_job(project: Project) -> None:
    job = start_job(project, "train.sft", {})
    with _reopen(project) as reopened:
        assert get_job(reopened, job.id).state == "running"


def test_cancel_job_stops_a_running_job_at_its_next_progress_report(project: Project) -> None:
    def work(job):  # type: ignore[no-untyped-def]
        job.progress(0.5)
        assert cancel_job(project, job.id).cancel_requested
        job.progress(0.6)
        return _Done()

    with pytest.raises(JobCancelled):
        run_as_job(project, "test", {}, work)
    [row] = project.cursor().execute("SELECT state, progress FROM jobs").fetchall()
    assert row == ("cancelled", 0.6)


def test_cancel_job_of_a_dead_process_cancels_it_at_once(project: Project) -> None:
    job = start_job(project, "test", {})
    project.cursor().execute("UPDATE jobs SET owner_pid = ? WHERE id = ?", [_dead_pid(), job.id])
    assert cancel_job(project, job.id).state == "cancelled"


def test_cancel_job_refuses_a_finished_job(project: Project) -> None:
    job = start_job(project, "test", {})
    job.succeed()
    with pytest.raises(Conflict, match="already succeeded"):
        cancel_job(project, job.id)


def test_jobs_cli_lists_shows_and_cancels(project: Project, cli: CliRunner) -> None:
    job = start_job(project, "train.sft", {})
    job.log("step 1: loss=1")
    project.close()
    root = ["--project", str(project.root)]
    listed = cli.invoke(app, ["jobs", "list", "--json", *root])
    assert listed.exit_code == 0 and job.id in listed.output
    shown = cli.invoke(app, ["jobs", "show", job.id, *root])
    assert shown.exit_code == 0 and "step 1: loss=1" in shown.output
    # the CLI's process owns the job (same pid): the cancellation waits for the job's next report
    cancelled = cli.invoke(app, ["jobs", "cancel", job.id, *root])
    assert cancelled.exit_code == 0 and "next progress report" in cancelled.output


def test_cancel_route_cancels_a_job(project: Project, client: TestClient) -> None:
    job = start_job(project, "test", {})
    project.cursor().execute("UPDATE jobs SET owner_pid = ? WHERE id = ?", [_dead_pid(), job.id])
    response = client.post(f"/api/jobs/{job.id}/cancel")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    assert client.post(f"/api/jobs/{job.id}/cancel").status_code == 409


def cancelled_run(project: Project, tiny_model: Path) -> tuple[Any, Job]:
    """Train a tiny SFT run that is cancelled at step 2 (after its checkpoint-2); return its config and job."""
    import pyarrow as pa

    from posttrain.datasets import write_version
    from posttrain.models.registry import register_model
    from posttrain.train.sft import SFTConfig, train_sft

    register_model(project, "base", tiny_model)
    rows = [{"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "yo"}]}] * 8
    write_version(project, "d", "sft", pa.Table.from_pylist(rows), recipe={}, sources={})
    config = SFTConfig(model="base", dataset="d", output="o", max_steps=6, batch_size=2, save_steps=2, device="cpu")

    def cancel_at_two(step: int, total: int) -> None:
        if step == 2:
            cancel_job(project, list_jobs(project, kind="train.sft")[0].id)

    with pytest.raises(JobCancelled):
        train_sft(project, config, on_progress=cancel_at_two)
    [job] = list_jobs(project, kind="train.sft")
    return config, job


def test_a_cancelled_training_run_stops_cleanly_and_resumes(project: Project, tiny_model: Path) -> None:
    pytest.importorskip("trl")
    from posttrain.models.registry import list_models
    from posttrain.train.sft import train_sft

    config, job = cancelled_run(project, tiny_model)

    assert job.state == "cancelled" and job.checkpoint and job.checkpoint.endswith("checkpoint-2")
    assert [m.name for m in list_models(project)] == ["base"]
    resumed = train_sft(project, config.model_copy(update={"resume": True}))
    assert resumed.metrics["step"] == 6
