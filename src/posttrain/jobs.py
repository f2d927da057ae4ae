"""Jobs: long work as a warehouse row (state, progress, metrics history, log, checkpoint, output).

The CLI runs a job inline with a progress bar; the server answers 202 with its id. Both call the
same stage function, which records its progress through a ``JobHandle``.

A job records its owner (pid, host) and a heartbeat (every write to its row); opening the project
marks a job failed whose owner died (``posttrain.warehouse.recovery``). ``cancel_job`` stops a job:
one whose owner is gone at once, a running one at its next progress report (``JobCancelled``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel

from posttrain.clock import utc_now
from posttrain.errors import Conflict, JobFailed, NotFound
from posttrain.ids import new_id
from posttrain.project import Project
from posttrain.records import Job
from posttrain.stored_paths import load_path, store_path
from posttrain.warehouse.recovery import owner, pid_alive
from posttrain.warehouse.rows import fetch_all, fetch_one

_JSON = ("config", "metrics", "result")
_DONE = ("succeeded", "failed", "cancelled")


class JobCancelled(JobFailed):
    """The job was cancelled (``posttrain jobs cancel``); raised at its next progress report."""


def get_job(project: Project, job_id: str) -> Job:
    """Return one job; raise NotFound with the fix."""
    data = fetch_one(project.cursor(), "SELECT * FROM jobs WHERE id = ?", [job_id], json=_JSON)
    if data is None:
        raise NotFound(f"no job {job_id!r}; run 'posttrain jobs list'", field="job")
    return _job(project, data)


def _job(project: Project, data: dict[str, Any]) -> Job:
    if data.get("checkpoint"):
        data["checkpoint"] = load_path(project.root, data["checkpoint"])
    return Job(**data)


def list_jobs(project: Project, *, kind: str | None = None, limit: int = 100) -> list[Job]:
    """Return jobs newest first, optionally of one kind (``train.sft``, ``datasets.build`` ...)."""
    where, params = ("WHERE kind = ?", [kind]) if kind else ("", [])
    sql = f"SELECT * FROM jobs {where} ORDER BY created_at DESC LIMIT ?"
    return [_job(project, r) for r in fetch_all(project.cursor(), sql, [*params, limit], json=_JSON)]


def cancel_job(project: Project, job_id: str) -> Job:
    """Cancel a job: at once if its process is gone, else at its next progress report; return it."""
    job = get_job(project, job_id)
    if job.state in _DONE:
        raise Conflict(f"job {job_id} is already {job.state}; only a queued or running job can be cancelled")
    if job.state == "running" and not _owner_gone(job):
        project.cursor().execute("UPDATE jobs SET cancel_requested = true WHERE id = ?", [job_id])
    else:
        project.cursor().execute(
            "UPDATE jobs SET state = 'cancelled', cancel_requested = true, error = 'cancelled', finished_at = ? "
            "WHERE id = ?",
            [utc_now(), job_id],
        )
    return get_job(project, job_id)


def _owner_gone(job: Job) -> bool:
    """Return whether the job's process is known to be gone (on this host, by its pid)."""
    _, host = owner()
    return job.owner_host == host and (job.owner_pid is None or not pid_alive(job.owner_pid))


class JobHandle:
    """Record a running job's progress; every call writes through to the warehouse row."""

    def __init__(self, project: Project, job: Job) -> None:
        self.project = project
        self.job = job

    @property
    def id(self) -> str:
        return self.job.id

    def _update(self, **fields: Any) -> None:
        fields["heartbeat_at"] = utc_now()
        for name, value in fields.items():
            setattr(self.job, name, value)
        sets = ", ".join(f"{name} = ?" for name in fields)
        values = [orjson.dumps(v).decode() if name in _JSON and v is not None else v for name, v in fields.items()]
        self.project.cursor().execute(f"UPDATE jobs SET {sets} WHERE id = ?", [*values, self.job.id])

    def progress(self, fraction: float) -> None:
        """Set progress (0..1); raise JobCancelled if the job was cancelled meanwhile."""
        self._update(progress=max(0.0, min(1.0, fraction)))
        self.check_cancelled()

    def check_cancelled(self) -> None:
        """Raise JobCancelled if ``cancel_job`` was called for this job."""
        row = self.project.cursor().execute("SELECT cancel_requested FROM jobs WHERE id = ?", [self.id]).fetchone()
        if row and row[0]:
            raise JobCancelled(f"job {self.id} was cancelled; its last checkpoint stays for --resume")

    def metric(self, step: int, **values: float) -> None:
        """Append one point to the metrics history."""
        self._update(metrics=[*self.job.metrics, {"step": step, **values}])

    def log(self, line: str) -> None:
        """Append a line to the job's log."""
        self._update(log=self.job.log + line.rstrip("\n") + "\n")

    def checkpoint(self, path: str) -> None:
        """Record the latest checkpoint folder (what ``--resume`` starts from), relative to the project."""
        self._update(checkpoint=store_path(self.project.root, path))
        self.job.checkpoint = path

    def succeed(self, *, output: str | None = None, result: dict[str, Any] | None = None) -> Job:
        """Mark the job done."""
        self._update(state="succeeded", progress=1.0, output=output, result=result, finished_at=utc_now())
        return self.job

    def fail(self, error: str) -> Job:
        """Mark the job failed, keeping its log."""
        self._update(state="failed", error=error, finished_at=utc_now())
        return self.job

    def cancelled(self, reason: str = "cancelled") -> Job:
        """Mark the job cancelled (it stopped cleanly after ``cancel_job``), keeping its log."""
        self._update(state="cancelled", error=reason, finished_at=utc_now())
        return self.job


JobFn = Callable[[str], None]
Record = TypeVar("Record", bound=BaseModel)


def run_as_job(
    project: Project,
    kind: str,
    config: dict[str, Any],
    work: Callable[[JobHandle], Record],
    *,
    on_job: JobFn | None = None,
) -> Record:
    """Run ``work(job)`` as a job row: ``on_job(id)`` once it exists, the record it returns as the job's result."""
    job = start_job(project, kind, config)
    if on_job is not None:
        on_job(job.id)
    try:
        record = work(job)
    except JobCancelled as exc:
        job.cancelled(exc.message)
        raise
    except BaseException as exc:
        job.fail(getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")
        raise
    job.succeed(output=getattr(record, "id", None), result=record.model_dump(mode="json"))
    return record


def start_job(project: Project, kind: str, config: dict[str, Any]) -> JobHandle:
    """Create a running job row and return its handle."""
    now, (pid, host) = utc_now(), owner()
    job = Job(
        id=new_id(), kind=kind, config=config, state="running", created_at=now, started_at=now,
        owner_pid=pid, owner_host=host, heartbeat_at=now,
    )  # fmt: skip
    project.cursor().execute(
        "INSERT INTO jobs (id, kind, config, state, progress, metrics, log, created_at, started_at, "
        "owner_pid, owner_host, heartbeat_at) VALUES (?, ?, ?, 'running', 0, '[]', '', ?, ?, ?, ?, ?)",
        [job.id, kind, orjson.dumps(config).decode(), now, now, pid, host, now],
    )
    return JobHandle(project, job)
