"""The console's training jobs: GET /ui/jobs (newest first, paged, by state and kind), GET /ui/jobs/{job_id}
(parameters, progress, loss and metric curves, log tail, the DPO guard's trips, what it produced) and
GET /ui/jobs/{job_id}/live (the moving part of that page as a fragment, which static/jobs.js polls every
two seconds while the job runs and swaps in; without the script the page is a snapshot with a reload link).

A job is read with ``posttrain.jobs.get_job``. The list pages the ``jobs`` table itself (``list_jobs``
has neither a state filter nor a cursor), selecting only the columns the table shows.

The guard (``posttrain.train.guards.CollapseGuard``) records a trip as a metrics point
``{step, guard_tripped: 1, guard_restored_step}`` and the log line ``guard tripped at step N: REASON``;
a finished DPO job's result holds its whole report under ``metrics.guard``. The page reads all three.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from posttrain import jobs, plots
from posttrain.clock import utc_now
from posttrain.errors import InvalidInput, NotFound
from posttrain.project import Project
from posttrain.records import Job
from posttrain.server.ui.console import (
    call,
    decode_cursor,
    encode_cursor,
    int_param,
    render_page,
    text_param,
    view,
)
from posttrain.server.ui.nav import READ
from posttrain.server.ui.pages import page
from posttrain.server.ui.render import render

router = APIRouter(prefix="/jobs")

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
DONE = ("succeeded", "failed", "cancelled")
PAGE_SIZE = 50
LOG_TAIL = 200  # lines of the log a page shows (the ``tail`` parameter, up to MAX_TAIL)
MAX_TAIL = 2000
LOG_CHARS = 200_000
MAX_CHARTS = 6
_KIND = re.compile(r"^[a-z0-9_.-]{1,64}$")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TRIP = re.compile(r"^guard tripped at step (\d+): (.*)$")
_RESTORED = re.compile(r"^guard: restored the weights of step (\d+)$")
# summary values a trainer logs once at the end: not curves
_NOT_CURVES = {"step", "epoch", "train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos",
               "train_loss", "num_tokens", "guard_tripped", "guard_restored_step"}  # fmt: skip


@dataclass
class Trip:
    """One trip of the DPO collapse guard: the step it stopped at, why, and the step whose weights it kept."""

    step: int | None
    reason: str
    restored_step: int | None


def _job_id(value: str) -> str:
    """Return a job id from the path, or raise NotFound for one that cannot exist."""
    if not _ID.match(value):
        raise NotFound("there is no such job; pick one from the list of jobs", field="job")
    return value


async def _get_job(request: Request, job_id: str) -> Job:
    try:
        return await call(jobs.get_job, request.app.state.project, _job_id(job_id))
    except NotFound:
        raise NotFound(f"there is no job {job_id!r}; pick one from the list of jobs", field="job") from None


# --- the list --------------------------------------------------------------------------------------


def _list_page(
    project: Project, state: str | None, kind: str | None, after: tuple[str, str] | None, limit: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """Return one page of jobs (newest first, one more than ``limit`` if there is more) and the kinds there are."""
    clauses, params = ["TRUE"], []
    if state:
        clauses.append("state = ?")
        params.append(state)
    if kind:
        clauses.append("kind = ?")
        params.append(kind)
    if after is not None:
        clauses.append("(created_at < CAST(? AS TIMESTAMP) OR (created_at = CAST(? AS TIMESTAMP) AND id < ?))")
        params += [after[0], after[0], after[1]]
    sql = (
        "SELECT id, kind, state, progress, config, output, error, created_at, started_at, finished_at FROM jobs "
        f"WHERE {' AND '.join(clauses)} ORDER BY created_at DESC, id DESC LIMIT ?"
    )
    cur = project.cursor()
    result = cur.execute(sql, [*params, limit + 1])
    columns = [d[0] for d in result.description]
    rows = []
    for values in result.fetchall():
        row = dict(zip(columns, values, strict=True))
        row["config"] = orjson.loads(row["config"]) if isinstance(row["config"], str) else (row["config"] or {})
        row.update(_subject(row["kind"], row["config"]))
        row["seconds"] = _seconds(row["started_at"], row["finished_at"], row["state"])
        rows.append(row)
    kinds = [r[0] for r in project.cursor().execute("SELECT DISTINCT kind FROM jobs ORDER BY kind").fetchall()]
    return rows, kinds


def _subject(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """Return what a job is about: its model (or candidate vs baseline), its dataset, its output."""
    pair = f"{config.get('candidate')} vs {config.get('baseline')}"
    model = pair if "candidate" in config else config.get("model")
    return {"model": model, "dataset": config.get("dataset"), "target": config.get("output")}


def _seconds(started: datetime | None, finished: datetime | None, state: str) -> float | None:
    """Return how long a job ran (so far, while it runs)."""
    if started is None:
        return None
    if finished is None:
        if state in DONE:
            return None
        now = utc_now()
        finished = now if started.tzinfo is not None else now.replace(tzinfo=None)
    return max(0.0, (finished - started).total_seconds())


def duration(seconds: float | None) -> str:
    """Format seconds as ``1h 02m``, ``3m 04s`` or ``5.2s``."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


@router.get("")
@page
async def job_list(
    request: Request, state: str | None = None, kind: str | None = None, cursor: str | None = None
) -> Response:
    """List jobs newest first (kind, state, model/dataset, progress, started, duration), paged, by state and kind."""
    session = view(request, READ)
    state_value = text_param(state, "state", 20)
    if state_value and state_value not in STATES:
        raise InvalidInput(f"state: one of {', '.join(STATES)}", field="state")
    kind_value = text_param(kind, "kind", 64)
    if kind_value and not _KIND.match(kind_value):
        raise InvalidInput("kind: a job kind such as train.sft or evals.run", field="kind")
    after = _after(decode_cursor(cursor))
    rows, kinds = await call(_list_page, request.app.state.project, state_value, kind_value, after, PAGE_SIZE)
    next_url = None
    if len(rows) > PAGE_SIZE:
        rows = rows[:PAGE_SIZE]
        last = rows[-1]
        query = {"state": state_value, "kind": kind_value}
        token = encode_cursor({"t": last["created_at"].isoformat(), "id": last["id"]})
        next_url = _url("/ui/jobs", **query, cursor=token)
    first_url = _url("/ui/jobs", state=state_value, kind=kind_value) if after else None
    return render_page(
        request, session, "ui/console/jobs.html", active="jobs", title="Jobs", rows=rows, states=STATES,
        kinds=kinds, state=state_value, kind=kind_value, next_url=next_url, first_url=first_url, duration=duration,
    )  # fmt: skip


def _after(values: dict[str, Any] | None) -> tuple[str, str] | None:
    """Return the (created_at, id) a cursor continues after."""
    if values is None:
        return None
    stamp, last = values.get("t"), values.get("id")
    if not isinstance(stamp, str) or not isinstance(last, str) or not _ID.match(last):
        raise InvalidInput("cursor: not a cursor this page made; follow the page's own links", field="cursor")
    try:
        datetime.fromisoformat(stamp)
    except ValueError:
        raise InvalidInput("cursor: not a cursor this page made; follow the page's own links", field="cursor") from None
    return stamp, last


def _url(path: str, **query: str | None) -> str:
    from urllib.parse import urlencode

    kept = {k: v for k, v in query.items() if v}
    return f"{path}?{urlencode(kept)}" if kept else path


# --- one job ---------------------------------------------------------------------------------------


def trips(job: Job) -> list[Trip]:
    """Return the DPO guard's trips recorded in ``job`` (its metrics, log and result), oldest first."""
    reasons = {int(m.group(1)): m.group(2) for m in map(_TRIP.match, job.log.splitlines()) if m}
    found: list[Trip] = []
    for point in job.metrics:
        if point.get("guard_tripped"):
            step = _int(point.get("step"))
            restored = _int(point.get("guard_restored_step"))
            found.append(
                Trip(step=step, reason=reasons.get(step, "") if step is not None else "", restored_step=restored)
            )
    report = ((job.result or {}).get("metrics") or {}).get("guard")
    if isinstance(report, dict) and report.get("tripped"):
        step = _int(report.get("step"))
        same = next((t for t in found if t.step == step), None)
        if same is None:
            found.append(Trip(step=step, reason=str(report.get("reason") or ""), restored_step=None))
            same = found[-1]
        same.reason = str(report.get("reason") or same.reason)
        same.restored_step = _int(report.get("restored_step"), same.restored_step)
    if not found:  # only the log saw it (metrics trimmed): still show it
        kept = [int(m.group(1)) for m in map(_RESTORED.match, job.log.splitlines()) if m]
        for step, reason in reasons.items():
            found.append(Trip(step=step, reason=reason, restored_step=kept[-1] if kept else None))
    return found


def _int(value: Any, default: int | None = None) -> int | None:
    if isinstance(value, bool) or value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def curves(job: Job) -> list[tuple[str, str]]:
    """Return (svg, alt) charts of a job's recorded metrics: the loss first, then each other metric over steps."""
    points = [p for p in job.metrics if isinstance(p.get("step"), int | float)]
    names: list[str] = []
    for point in points:
        for name, value in point.items():
            if name not in _NOT_CURVES and name not in names and isinstance(value, int | float):
                names.append(name)

    def series(name: str) -> plots.Series:
        pairs = [(p["step"], float(p[name])) for p in points if isinstance(p.get(name), int | float)]
        return plots.Series(name, [s for s, _ in pairs], [v for _, v in pairs])

    charts: list[tuple[str, str]] = []
    losses = [n for n in names if n == "loss" or n.endswith("_loss") or n.endswith("/loss")]
    if losses:
        svg = plots.lines([series(n) for n in losses], title="Loss", x_label="step", y_label="loss", height=2.6)
        charts.append((svg, f"Loss by step: {', '.join(losses)}"))
    for name in [n for n in names if n not in losses][: MAX_CHARTS - len(charts)]:
        svg = plots.lines([series(name)], title=name, x_label="step", width=4.2, height=2.4)
        charts.append((svg, f"{name} by step"))
    return charts


def log_tail(log: str, lines: int) -> tuple[str, int]:
    """Return the last ``lines`` lines of a log (at most LOG_CHARS characters) and how many lines were left out."""
    every = log[-LOG_CHARS:].splitlines()
    total = log.count("\n") + (0 if log.endswith("\n") or not log else 1)
    kept = every[-lines:]
    return "\n".join(kept), max(0, total - len(kept))


def _live_context(job: Job, tail: int) -> dict[str, Any]:
    text, dropped = log_tail(job.log, tail)
    return {
        "job": job, "finished": job.state in DONE, "charts": curves(job), "trips": trips(job), "log_text": text,
        "log_dropped": dropped, "tail": tail,
        "seconds": _seconds(job.started_at, job.finished_at, job.state), "duration": duration,
    }  # fmt: skip


def _produced(job: Job) -> dict[str, Any]:
    """Return links to what the job produced: the registered model, an eval run, a gate's verdict."""
    result = job.result or {}
    out: dict[str, Any] = {}
    if job.kind.startswith("train.") and isinstance(result.get("model"), str):
        out["model"] = result["model"]
    if job.kind == "evals.run" and job.output:
        out["eval_run"] = job.output
    if "passed" in result and isinstance(result.get("reasons"), list):
        out["gate"] = {"passed": bool(result["passed"]), "reasons": [str(r) for r in result["reasons"]]}
    if "candidate" in job.config and "baseline" in job.config:
        out["compare"] = (str(job.config["baseline"]), str(job.config["candidate"]))
    return out


def _parameters(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Return a job's parameters as (name, text) rows, nested values as compact JSON."""
    rows = []
    for name, value in config.items():
        text = orjson.dumps(value).decode() if isinstance(value, dict | list) else "–" if value is None else str(value)
        rows.append((str(name), text[:2000]))
    return rows


@router.get("/{job_id}")
@page
async def job_page(request: Request, job_id: str, tail: str | None = None) -> Response:
    """Show a job: parameters, state, progress, curves, log tail, the guard's trips, what it produced."""
    session = view(request, READ)
    lines = int_param(tail, "tail", default=LOG_TAIL, low=1, high=MAX_TAIL)
    job = await _get_job(request, job_id)
    return render_page(
        request, session, "ui/console/jobs_job.html", active="jobs", title=f"Job {job.id}",
        parameters=_parameters(job.config), produced=_produced(job), **_live_context(job, lines),
    )  # fmt: skip


@router.get("/{job_id}/live")
@page
async def job_live(request: Request, job_id: str, tail: str | None = None) -> Response:
    """Answer the moving part of a job's page (progress, curves, log tail) as an HTML fragment."""
    session = view(request, READ)
    lines = int_param(tail, "tail", default=LOG_TAIL, low=1, high=MAX_TAIL)
    job = await _get_job(request, job_id)
    return render("ui/console/jobs_live.html", session=session, **_live_context(job, lines))
