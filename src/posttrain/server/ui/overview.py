"""The console's overview (GET /ui/overview): what each cohort is served and why, how the flywheel is doing.

Tiles (interactions, feedback, models, running experiments), each cohort's route and the loop turn
or experiment that put its model there, figures over time, the loop's last turns with their
decisions, and the jobs running now. Traffic figures are aggregate SQL over the warehouse (one
query per figure, grouped by day), never rows loaded into Python, so the page stays fast on a
million interactions; charts are cached by their data (``posttrain.plots.cached``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from posttrain import experiments, loop, plots, routing
from posttrain.clock import utc_now
from posttrain.errors import NotFound
from posttrain.loop.names import route_name
from posttrain.loop.turns import TurnRecord
from posttrain.models.registry import list_models
from posttrain.project import Project
from posttrain.records import RouteRule
from posttrain.server.ui.console import call, render_page, view
from posttrain.server.ui.nav import READ
from posttrain.server.ui.pages import page

router = APIRouter(prefix="/overview")

DAYS = 30  # the window of the per-day figures
LAST_TURNS = 8  # loop turns listed
CHART_TURNS = 30  # loop turns drawn in the per-turn figures
RUNNING_JOBS = 20


@dataclass
class Served:
    """One route of a cohort: what requests for ``requested`` get, and why."""

    cohort: str | None
    requested: str | None
    route: str
    model: str | None
    experiment: str | None = None
    experiment_state: str | None = None
    why: str = ""
    turn: TurnRecord | None = None
    decided_by: str | None = None  # the experiment whose decision put the model there


@dataclass
class CohortView:
    """A cohort and its routes (none: each request gets the model it names)."""

    name: str
    routes: list[Served] = field(default_factory=list)


def _tiles(project: Project, now: datetime) -> dict[str, int]:
    """Return the counts of the tiles: one aggregate query over interactions and feedback."""
    row = (
        project.cursor()
        .execute(
            "SELECT (SELECT count(*) FROM interactions), "
            "(SELECT count(*) FROM interactions WHERE timestamp >= ?), (SELECT count(*) FROM feedback)",
            [now - timedelta(hours=24)],
        )
        .fetchone()
    )
    total, recent, feedback = row if row else (0, 0, 0)
    return {"interactions": int(total), "interactions_24h": int(recent), "feedback": int(feedback)}


def _days(now: datetime) -> list[datetime]:
    first = datetime(now.year, now.month, now.day) - timedelta(days=DAYS - 1)
    return [first + timedelta(days=i) for i in range(DAYS)]


def _feedback_per_day(project: Project, since: datetime) -> list[tuple[datetime, str, int, int]]:
    """Return (day, kind, events, thumbs up) of the feedback since ``since``: one grouped query."""
    rows = (
        project.cursor()
        .execute(
            "SELECT date_trunc('day', timestamp) AS day, kind, count(*), "
            "count(*) FILTER (WHERE kind = 'thumb' AND score > 0) "
            "FROM feedback WHERE timestamp >= ? GROUP BY 1, 2 ORDER BY 1, 2",
            [since],
        )
        .fetchall()
    )
    return [(_day(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]


def _interactions_per_day(project: Project, since: datetime) -> dict[datetime, int]:
    """Return interactions per day since ``since``: one grouped query."""
    rows = (
        project.cursor()
        .execute(
            "SELECT date_trunc('day', timestamp) AS day, count(*) FROM interactions WHERE timestamp >= ? GROUP BY 1",
            [since],
        )
        .fetchall()
    )
    return {_day(r[0]): int(r[1]) for r in rows}


def _day(value: Any) -> datetime:
    """Return the midnight of ``value`` (a date or a datetime) as a naive datetime."""
    return datetime(value.year, value.month, value.day)


def _daily_shares(days: list[datetime], series: list[plots.Series], *, title: str) -> str:
    """Draw shares per day over the whole window (``plots.lines`` would zoom to the days that have data)."""

    def draw() -> str:
        from matplotlib.dates import DateFormatter
        from matplotlib.ticker import PercentFormatter

        fig, axes = plots.figure(7.0, 3.0)
        axes.grid(True, color="#e9ecef", linewidth=0.8)
        axes.set_axisbelow(True)
        for side in ("top", "right"):
            axes.spines[side].set_visible(False)
        axes.set_title(title, fontsize=10, fontweight="bold", loc="left")
        for i, s in enumerate(series):
            ys = [float("nan") if v is None else v for v in s.y]
            axes.plot(list(s.x), ys, label=s.name, color=plots.PALETTE[i], marker="o", markersize=3, linewidth=1.6)
        axes.set_xlim(days[0] - timedelta(hours=12), days[-1] + timedelta(hours=12))
        axes.set_ylim(0, max([1e-9, *(v for s in series for v in s.y if v is not None)]) * 1.1)
        axes.xaxis.set_major_formatter(DateFormatter("%m-%d"))
        axes.yaxis.set_major_formatter(PercentFormatter(1.0))
        axes.set_ylabel("share")
        fig.autofmt_xdate()
        if series:
            axes.legend(fontsize=8, loc="best", frameon=False)
        else:
            axes.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axes.transAxes, color="#868e96")
        return plots.to_svg(fig)

    return plots.cached(("overview-daily", days, [(s.name, list(s.y)) for s in series], title), draw)


def _traffic_charts(project: Project, now: datetime) -> dict[str, Any]:
    """Return the per-day figures: feedback volume per kind (bars), thumbs-up share and flag share (lines)."""
    days = _days(now)
    feedback = _feedback_per_day(project, days[0])
    served = _interactions_per_day(project, days[0])
    kinds = sorted({kind for _, kind, _, _ in feedback})
    counts = {(day, kind): n for day, kind, n, _ in feedback}
    stacks: dict[str, Sequence[float]] = {kind: [float(counts.get((day, kind), 0)) for day in days] for kind in kinds}
    labels = [day.strftime("%m-%d") for day in days]
    volume = plots.bars(
        labels,
        stacks,
        title=f"Feedback events per day, by kind (last {DAYS} days)",
        y_label="events",
        width=7.0,
        height=3.0,
    )
    thumbs = {day: n for day, kind, n, _ in feedback if kind == "thumb"}
    ups = {day: up for day, kind, _, up in feedback if kind == "thumb"}
    flags = {day: n for day, kind, n, _ in feedback if kind == "flag"}
    series = []  # every day of the window on the axis; a day without traffic is a gap
    if thumbs:
        up_share = [ups.get(d, 0) / thumbs[d] if thumbs.get(d) else None for d in days]
        series.append(plots.Series("thumbs-up share of thumbs", days, up_share))
    if served:
        flagged = [flags.get(d, 0) / served[d] if served.get(d) else None for d in days]
        series.append(plots.Series("flagged share of interactions", days, flagged))
    quality = _daily_shares(days, series, title="Live traffic per day: success (thumbs up) and safety (flags)")
    totals = {kind: sum(int(v) for v in values) for kind, values in stacks.items()}
    return {"volume_svg": volume, "quality_svg": quality, "feedback_totals": totals, "days": DAYS}


def _decision_of(turn: TurnRecord) -> dict[str, Any]:
    """Return cohort → the decide step's decision (as a dict) of ``turn``, from its result or its step."""
    found = (turn.result or {}).get("decisions")
    if isinstance(found, dict):
        return found
    step = turn.step("decide")
    if step is not None and step.result is not None:
        return {c: d.model_dump() for c, d in getattr(step.result, "decisions", {}).items()}
    return {}


def _turn_charts(turns: list[TurnRecord]) -> dict[str, Any]:
    """Return the per-turn figures: each cohort's decision (served arm's metric, CI) and its eval gate scores."""
    drawn = turns[-CHART_TURNS:]
    loops = {t.loop for t in drawn}
    arms: dict[str, list[tuple[str, float, float | None, float | None]]] = {}
    metric = None
    gates: dict[str, list[tuple[str, float]]] = {}
    gate_metric = None
    for turn in drawn:
        prefix = "" if len(loops) == 1 else f"{turn.loop} · "
        x = f"turn {turn.turn}" if len(loops) == 1 else f"{turn.loop} {turn.turn}"  # categories: whole turns
        for cohort, decision in _decision_of(turn).items():
            served = decision.get("model")
            chosen = next((a for a in (decision.get("arms") or {}).values() if a.get("model") == served), None)
            if chosen and chosen.get("mean") is not None:
                metric = metric or decision.get("metric")
                arms.setdefault(prefix + cohort, []).append(
                    (x, chosen["mean"], chosen.get("ci_low"), chosen.get("ci_high"))
                )
        step = turn.step("evaluate")
        pairs = list(getattr(step.result, "gates", []) if step is not None and step.result is not None else [])
        special = turn.step("specialise")
        candidates = dict(getattr(special.result, "candidates", {}) if special is not None and special.result else {})
        for pair in pairs:
            gate_metric = gate_metric or pair.metric
            for check in pair.checks:
                if check.candidate is None:
                    continue
                if check.cohort is None and len(pairs) > 1:
                    continue  # several candidates (a model per cohort): each is drawn on its own cohort's slice
                if check.cohort is not None and candidates.get(check.cohort, pair.candidate) != pair.candidate:
                    continue  # this cohort's slice of another cohort's candidate
                name = f"{prefix}{'overall' if check.cohort is None else check.cohort}"
                gates.setdefault(name, []).append((x, float(check.candidate)))
    decided = [
        plots.Series(
            name, [p[0] for p in points], [p[1] for p in points], [p[2] for p in points], [p[3] for p in points]
        )
        for name, points in arms.items()
    ]
    success = plots.lines(
        decided,
        title=f"Served model's {metric or 'metric'} at each turn's A/B decision (95% CI)",
        x_label="loop turn",
        y_label=metric or "",
        percent=True,
        width=7.0,
        height=3.0,
    )
    scored = [plots.Series(name, [p[0] for p in pts], [p[1] for p in pts]) for name, pts in gates.items()]
    evals = plots.lines(
        scored,
        title=f"Each cohort's candidate at its turn's gate: eval suite score ({gate_metric or 'metric'})",
        x_label="loop turn",
        y_label=gate_metric or "",
        width=7.0,
        height=3.0,
    )
    return {"success_svg": success, "evals_svg": evals, "decision_metric": metric, "gate_metric": gate_metric}


def _why(route: RouteRule, served: Served, turns: list[TurnRecord], decided: dict[str, experiments.Experiment]) -> None:
    """Fill in why ``route`` serves what it serves: the loop turn or the experiment decision behind it."""
    for turn in reversed(turns):  # newest first: the turn whose route this is and whose result serves this model
        if route.cohort is None or route.name != route_name(turn.loop, route.cohort):
            continue
        after = (turn.result or {}).get("serving") or {}
        if after.get(route.cohort) != served.model:
            continue
        decision = _decision_of(turn).get(route.cohort) or {}
        served.turn = turn
        served.decided_by = decision.get("experiment")
        action = decision.get("action")
        reasons = "; ".join(decision.get("reasons") or [])
        if action == "promote":
            served.why = f"loop {turn.loop} turn {turn.turn} promoted it" + (f": {reasons}" if reasons else "")
        elif action == "keep":
            served.why = f"loop {turn.loop} turn {turn.turn} kept it" + (f": {reasons}" if reasons else "")
        else:
            served.why = f"loop {turn.loop} turn {turn.turn} ended serving it ({turn.state})"
        return
    for experiment in decided.values():  # newest first: a promotion whose winner is this model, for this cohort
        decision = experiment.decision
        if experiment.state != "promoted" or decision is None or decision.variant is None:
            continue
        winner = next((v.model for v in experiment.config.variants if v.name == decision.variant), None)
        if winner == served.model and (not experiment.config.cohorts or route.cohort in experiment.config.cohorts):
            served.decided_by = experiment.name
            served.why = f"experiment {experiment.name} promoted it: " + "; ".join(decision.reasons)
            return
    served.why = f"set by route {route.name}" + (f" on {route.created_at:%Y-%m-%d}" if route.created_at else "")


def _served(
    project: Project, route: RouteRule, turns: list[TurnRecord], decided: dict[str, experiments.Experiment]
) -> Served:
    """Return what ``route`` serves (an experiment resolved as the gateway does) and why."""
    served = Served(route.cohort, route.requested, route.name, route.model, experiment=route.experiment)
    if route.experiment is None:
        _why(route, served, turns, decided)
        return served
    found = decided.get(route.experiment)
    if found is None:
        try:
            found = experiments.get_experiment(project, route.experiment)
        except NotFound:
            served.why = f"route {route.name} names experiment {route.experiment}, which does not exist"
            return served
    config = found.config
    served.experiment_state = found.state
    served.decided_by = found.name
    targeted = not config.cohorts or route.cohort in config.cohorts
    if found.state == "running" and targeted:
        served.model = config.control.model
        arms = ", ".join(f"{v.name}: {v.model} ({v.share:.0%})" for v in config.variants)
        served.why = f"A/B test {found.name} is running: {arms}"
        return served
    winner = found.decision.variant if found.state == "promoted" and found.decision else None
    models = {v.name: v.model for v in config.variants}
    served.model = models.get(winner or "", config.control.model)
    reasons = "; ".join(found.decision.reasons) if found.decision else ""
    served.why = (
        f"experiment {found.name} promoted {winner}" + (f": {reasons}" if reasons else "")
        if winner
        else f"experiment {found.name} is {found.state}: its control serves"
    )
    return served


def _cohorts(project: Project, turns: list[TurnRecord]) -> list[CohortView]:
    """Return every cohort (from routes, cohort rules and loop recipes) with its routes resolved."""
    table = routing.table(project)
    names: dict[str, None] = {}
    for route in table.routes:
        if route.cohort is not None:
            names.setdefault(route.cohort)
    for rule in table.cohort_rules:
        names.setdefault(rule.cohort)
    for turn in turns:
        for cohort in turn.recipe.get("cohorts") or []:
            names.setdefault(str(cohort))
    decided = {e.name: e for e in experiments.list_experiments(project, with_analyses=False)}
    views = {name: CohortView(name) for name in names}
    anyone = CohortView("(every cohort)")
    for route in table.routes:
        served = _served(project, route, turns, decided)
        (views[route.cohort] if route.cohort is not None else anyone).routes.append(served)
    return list(views.values()) + ([anyone] if anyone.routes else [])


def _running_jobs(project: Project) -> list[dict[str, Any]]:
    """Return the queued and running jobs, newest first (no library function filters jobs by state)."""
    rows = (
        project.cursor()
        .execute(
            "SELECT id, kind, state, progress, created_at, started_at, heartbeat_at FROM jobs "
            "WHERE state IN ('queued', 'running') ORDER BY created_at DESC LIMIT ?",
            [RUNNING_JOBS],
        )
        .fetchall()
    )
    keys = ("id", "kind", "state", "progress", "created_at", "started_at", "heartbeat_at")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def gather(project: Project) -> dict[str, Any]:
    """Return everything the overview shows (run in a worker thread)."""
    now = utc_now()
    turns = sorted(loop.status(project), key=lambda t: (t.started_at, t.turn))
    running = experiments.list_experiments(project, state="running", with_analyses=False)
    last = list(reversed(turns[-LAST_TURNS:]))
    return {
        "now": now,
        "tiles": _tiles(project, now) | {"models": len(list_models(project)), "experiments": len(running)},
        "running_experiments": running,
        "cohorts": _cohorts(project, turns),
        "turns": [(t, _decision_of(t)) for t in last],
        "jobs": _running_jobs(project),
        **_traffic_charts(project, now),
        **_turn_charts(turns),
    }


@router.get("")
@page
async def overview(request: Request) -> Response:
    """Show the overview: tiles, each cohort's served model and why, figures, last loop turns, running jobs."""
    session = view(request, READ)
    data = await call(gather, request.app.state.project)
    return render_page(request, session, "ui/console/overview.html", active="overview", title="Overview", **data)
