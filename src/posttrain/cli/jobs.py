"""``posttrain jobs list|show|cancel``: long work (training, builds, evals) and its state."""

from __future__ import annotations

from typing import Annotated

import typer

from posttrain import jobs as library
from posttrain.cli import render
from posttrain.cli.options import JsonOption, ProjectOption, through_server
from posttrain.records import Job

app = typer.Typer(help="Jobs: list, show and cancel long work (training runs, builds, evals).", no_args_is_help=True)
JobArg = Annotated[str, typer.Argument(help="The job's id (see 'posttrain jobs list').")]
_COLUMNS = ["id", "kind", "state", "progress", "created_at", "error"]


@app.command("list")
def list_(
    kind: Annotated[str | None, typer.Option(help="Only jobs of this kind (train.sft, evals.run ...).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many, newest first.")] = 100,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """List jobs newest first (a job whose process died shows as failed)."""
    params = {"limit": limit, **({"kind": kind} if kind else {})}
    found = through_server(
        project,
        lambda proj: library.list_jobs(proj, kind=kind, limit=limit),
        lambda api: [Job(**j) for j in api.call("GET", "/api/jobs", params=params)],
    )
    if json:
        render.as_json(found)
    else:
        render.records(found, _COLUMNS, title="jobs")


@app.command()
def show(job_id: JobArg, project: ProjectOption = None, json: JsonOption = False) -> None:
    """Show one job: state, progress, owner, checkpoint, metrics and log."""
    job = through_server(
        project, lambda proj: library.get_job(proj, job_id), lambda api: Job(**api.call("GET", f"/api/jobs/{job_id}"))
    )
    if json:
        render.as_json(job)
        return
    fields = job.model_dump(mode="json", exclude={"log", "metrics"})
    render.table(["field", "value"], [[k, v] for k, v in fields.items()], title=f"job {job.id}")
    typer.echo(job.log, nl=False)


@app.command()
def cancel(job_id: JobArg, project: ProjectOption = None, json: JsonOption = False) -> None:
    """Cancel a queued or running job; a running one stops at its next progress report."""
    job = through_server(
        project,
        lambda proj: library.cancel_job(proj, job_id),
        lambda api: Job(**api.call("POST", f"/api/jobs/{job_id}/cancel")),
    )
    if json:
        render.as_json(job)
    elif job.state == "cancelled":
        typer.echo(f"job {job.id} cancelled")
    else:
        typer.echo(f"job {job.id} will stop at its next progress report ('posttrain jobs show {job.id}')")
