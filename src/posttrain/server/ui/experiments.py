"""The console's experiments: the list, an experiment's page, and start/stop/promote/roll back with a confirmation.

GET /ui/experiments lists them (state, cohorts and routes, arms, users per arm, last decision);
GET /ui/experiments/{name} shows the arms with their intervals, the primary metric over time with
the always-valid confidence sequence, the SRM check, per-cohort results, guardrails, the decision and
its reasons, and side-by-side results. Admins get the buttons valid in the current state, each to
GET .../confirm/{action} (what will happen, in words), whose form POSTs .../{action}: the same library
functions the API calls, then the gateway re-reads its routing at once. Pages never write: the
analysis is not kept and "if decided now" is judged without recording a decision.
"""

from __future__ import annotations

from typing import Any, get_args
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from posttrain import experiments as ex
from posttrain import routing
from posttrain.errors import Conflict, InvalidInput, NotFound
from posttrain.experiments.decisions import _judge
from posttrain.experiments.records import _LOWER_IS_BETTER, _PROPORTIONS, State
from posttrain.experiments.report import interval_chart, timeline_charts
from posttrain.project import Project
from posttrain.server.ui.console import (
    admin_form,
    call,
    decode_cursor,
    encode_cursor,
    int_param,
    render_page,
    text_param,
    view,
)
from posttrain.server.ui.formats import num, pct
from posttrain.server.ui.nav import READ, allowed
from posttrain.server.ui.pages import field, page

router = APIRouter(prefix="/experiments")

DECIDE = "experiments.decide"
STATES: tuple[str, ...] = get_args(State)
# each action and the states it may start from (the library's own rule; it checks again)
ACTIONS: dict[str, tuple[str, ...]] = {
    "start": ("draft",),
    "stop": ("running",),
    "promote": ("running", "stopped"),
    "rollback": ("running", "stopped"),
}
LABELS = {"start": "Start", "stop": "Stop", "promote": "Promote", "rollback": "Roll back"}
DONE = {
    "start": "Started: the gateway assigns users to its variants from now on.",
    "stop": "Stopped: no more users are assigned; its data stays for analysis.",
    "promote": "Promoted: the chosen variant's model is serving.",
    "rollback": "Rolled back: the control keeps serving.",
}


# --- looking things up -------------------------------------------------------------------------


async def _experiment(request: Request, name: str) -> ex.Experiment:
    """Return the experiment ``name``; raise NotFound (a 404 page) for one that does not exist."""
    if not name or len(name) > 256 or any(ord(c) < 32 for c in name):
        raise NotFound("there is no such experiment; pick one from the list of experiments")
    try:
        return await call(ex.get_experiment, request.app.state.project, name)
    except NotFound:
        raise NotFound(f"there is no experiment {name[:64]!r}; pick one from the list of experiments") from None


def _action(action: str) -> str:
    """Return ``action`` if the console knows it; raise NotFound."""
    if action not in ACTIONS:
        known = ", ".join(ACTIONS)
        raise NotFound(f"there is no action {action[:32]!r} for an experiment; one of {known}")
    return action


def _check_state(experiment: ex.Experiment, action: str) -> None:
    """Raise Conflict (a 409 page) saying why ``action`` cannot be done in the experiment's state."""
    allowed_from = ACTIONS[action]
    if experiment.state not in allowed_from:
        raise Conflict(
            f"cannot {LABELS[action].lower()} experiment {experiment.name!r}: it is {experiment.state}, "
            f"and only a {' or '.join(allowed_from)} experiment can be {_past(action)}"
        )


def _past(action: str) -> str:
    return {"start": "started", "stop": "stopped", "promote": "promoted", "rollback": "rolled back"}[action]


def valid_actions(state: str) -> list[str]:
    """Return the actions valid from ``state``, in the order the buttons show."""
    return [a for a, states in ACTIONS.items() if state in states]


def _routes(project: Project, name: str) -> list[routing.RouteRule]:
    """Return the routes that send requests to the experiment ``name`` (warehouse, then posttrain.toml)."""
    return [r for r in routing.table(project).routes if r.experiment == name]


def _users(project: Project, names: list[str]) -> dict[str, dict[str, int]]:
    """Return distinct users served per experiment and variant (side-by-side pairs aside, as in the analysis)."""
    if not names:
        return {}
    marks = ", ".join("?" for _ in names)
    rows = (
        project.cursor()
        .execute(
            "SELECT experiment, variant, count(DISTINCT coalesce(user_id, 'interaction:' || id)) FROM interactions "
            f"WHERE experiment IN ({marks}) AND metadata ->> '$.pair_id' IS NULL GROUP BY experiment, variant",
            names,
        )
        .fetchall()
    )
    out: dict[str, dict[str, int]] = {}
    for experiment, variant, users in rows:
        out.setdefault(experiment, {})[variant or "(none)"] = int(users)
    return out


# --- formatting --------------------------------------------------------------------------------


def value(metric: str, x: float | None) -> str:
    """Format a value of ``metric``: a percentage for rates, else 4 significant digits; '–' for None."""
    return pct(x) if metric in _PROPORTIONS else num(x, 4)


def interval(metric: str, low: float | None, high: float | None) -> str:
    """Format an interval of ``metric`` as ``[low, high]``; '–' when it has none."""
    if low is None or high is None:
        return "–"
    return f"[{value(metric, low)}, {value(metric, high)}]"


def difference(metric: str, x: float | None) -> str:
    """Format a difference in ``metric``: percentage points for rates, else signed 4 significant digits."""
    if x is None:
        return "–"
    return f"{x * 100:+.1f} pp" if metric in _PROPORTIONS else f"{x:+.4g}"


def difference_interval(metric: str, low: float | None, high: float | None) -> str:
    """Format an interval of a difference in ``metric`` as ``[low, high]``; '–' when it has none."""
    if low is None or high is None:
        return "–"
    if metric in _PROPORTIONS:
        return f"[{low * 100:+.1f}, {high * 100:+.1f}] pp"
    return f"[{low:+.4g}, {high:+.4g}]"


def _who(route: routing.RouteRule) -> str:
    cohort = f"cohort {route.cohort}" if route.cohort else "every cohort"
    asked = f"requests for {route.requested!r}" if route.requested else "requests for any model"
    return f"{asked} from {cohort}"


def _cohorts(experiment: ex.Experiment) -> str:
    cohorts = experiment.config.cohorts
    return f"cohort {', '.join(cohorts)}" if cohorts else "every cohort"


def _arm_rows(experiment: ex.Experiment, rows: list[ex.VariantStats], metric: str) -> list[dict[str, Any]]:
    """Return what the arms table shows per variant (and cohort): the estimate, its CI, the test."""
    variants = {v.name: v for v in experiment.config.variants}
    out = []
    for row in rows:
        stats = row.metrics[metric]
        comparison = row.comparisons.get(metric)
        test = comparison.test if comparison else None
        control = row.variant == experiment.config.control.name
        verdict = "control" if control else "–"
        if comparison is not None:
            verdict = "better" if comparison.better else "worse" if comparison.worse else "no significant difference"
            if test is None:
                verdict = comparison.reason or "untested"
        variant = variants.get(row.variant)
        out.append({
            "variant": row.variant,
            "cohort": row.cohort,
            "model": variant.model if variant else "",
            "share": pct(variant.share) if variant else "–",
            "users": row.users,
            "interactions": row.interactions,
            "n": stats.n,
            "mean": value(metric, stats.mean),
            "ci": interval(metric, stats.ci_low, stats.ci_high),
            "control": control,
            "effect": difference(metric, test.effect) if test else "–",
            "effect_ci": difference_interval(metric, test.ci_low, test.ci_high) if test else "–",
            "lift": pct(test.relative_lift) if test and test.relative_lift is not None else "–",
            "p": num(test.p_value, 3) if test else "–",
            "always_valid_p": num(comparison.always_valid_p, 3) if comparison else "–",
            "always_valid_ci": difference_interval(
                metric, comparison.always_valid_ci_low, comparison.always_valid_ci_high) if comparison else "–",
            "chance_to_win": pct(comparison.chance_to_win) if comparison else "–",
            "verdict": verdict,
        })  # fmt: skip
    return out


def _srm(experiment: ex.Experiment, analysis: ex.Analysis) -> dict[str, Any] | None:
    """Return the SRM check: users per variant observed against the planned shares, its p-value, verdict."""
    if analysis.srm is None:
        return None
    users = {r.variant: r.users for r in analysis.variants}
    total = sum(users.get(v.name, 0) for v in experiment.config.variants)
    rows = [
        {"variant": v.name, "share": pct(v.share), "observed": users.get(v.name, 0),
         "observed_share": pct(users.get(v.name, 0) / total) if total else "–", "expected": num(v.share * total, 4)}
        for v in experiment.config.variants
    ]  # fmt: skip
    srm = analysis.srm
    verdict = "mismatch: no decision until its cause is found" if srm.mismatch else "the split fits the plan"
    return {"rows": rows, "total": total, "chi2": num(srm.chi2, 3), "df": srm.df, "p": num(srm.p_value, 3),
            "threshold": num(srm.threshold), "mismatch": srm.mismatch, "verdict": verdict}  # fmt: skip


def _guardrails(experiment: ex.Experiment, analysis: ex.Analysis) -> list[dict[str, Any]]:
    """Return each treatment × guardrail overall: the difference, its always-valid CI, the margin, the status."""
    config = experiment.config
    control = next((r for r in analysis.variants if r.variant == config.control.name), None)
    out = []
    for row in analysis.variants:
        if control is None or row.variant == config.control.name:
            continue
        for guard in config.guardrails:
            metric = guard.metric
            margin = guard.margin_for(control.metrics[metric].mean)
            comparison = row.comparisons.get(metric)
            low = comparison.always_valid_ci_low if comparison else None
            high = comparison.always_valid_ci_high if comparison else None
            sign = -1 if metric in _LOWER_IS_BETTER else 1
            if low is None or high is None:
                status = "untested" + (f": {comparison.reason}" if comparison and comparison.reason else "")
            elif max(sign * low, sign * high) < -margin:
                status = "breached"
            elif min(sign * low, sign * high) > -margin:
                status = "within margin"
            else:
                status = "not yet shown"
            worse = "higher" if sign < 0 else "lower"
            out.append({
                "variant": row.variant,
                "metric": metric,
                "control": value(metric, control.metrics[metric].mean),
                "value": value(metric, row.metrics[metric].mean),
                "effect": difference(metric, comparison.test.effect) if comparison and comparison.test else "–",
                "ci": difference_interval(metric, low, high),
                "threshold": f"no more than {difference(metric, margin).lstrip('+')} {worse}",
                "status": status,
                "breached": status == "breached",
            })  # fmt: skip
    return out


def _pairwise(analysis: ex.Analysis) -> dict[str, Any] | None:
    if analysis.pairwise is None:
        return None
    pairs = [
        {"a": p.a, "b": p.b, "cohort": p.cohort or "(all)", "n": p.win_rate.n, "wins": p.win_rate.wins,
         "losses": p.win_rate.losses, "ties": p.win_rate.ties, "rate": pct(p.win_rate.rate),
         "ci": interval("win_rate", p.win_rate.ci_low, p.win_rate.ci_high)}
        for p in analysis.pairwise.pairs
    ]  # fmt: skip
    ratings = [
        {"variant": name, "rating": num(r.rating, 4), "ci": f"[{r.ci_low:.0f}, {r.ci_high:.0f}]", "battles": r.battles}
        for name, r in analysis.pairwise.ratings.items()
    ]
    return {"pairs": pairs, "ratings": ratings}


def _latest_difference(timeline: ex.Timeline) -> list[dict[str, Any]]:
    """Return each treatment's last point of the difference over time, with its confidence sequence."""
    out = []
    for variant, points in timeline.differences.items():
        if points:
            last = points[-1]
            out.append({"variant": variant, "at": last.at, "users": last.n,
                        "effect": difference(timeline.metric, last.effect),
                        "cs": difference_interval(timeline.metric, last.cs_low, last.cs_high)})  # fmt: skip
    return out


def consequences(
    experiment: ex.Experiment, action: str, routes: list[routing.RouteRule], variant: ex.Variant | None = None
) -> list[str]:
    """Say in words what ``action`` will do: the experiment's new state, what each route will serve, whom."""
    config, name = experiment.config, experiment.name
    control = config.control
    if action == "start":
        arms = ", ".join(f"{v.name} → model {v.model} ({pct(v.share)} of users)" for v in config.variants)
        lines = [f"Experiment {name} goes from draft to running: the gateway assigns users of {_cohorts(experiment)} "
                 f"to its variants by a sticky hash of the user: {arms}."]  # fmt: skip
        lines += [f"Route {r.name} will split {_who(r)} between these variants." for r in routes]
        if not routes:
            lines.append(f"No route names it: it covers requests that ask for {name} or for the control's model "
                         f"{control.model}, from {_cohorts(experiment)}.")  # fmt: skip
        return lines
    if action == "stop":
        lines = [f"Experiment {name} goes from running to stopped: no more users are assigned to its variants; "
                 "the data collected so far stays for analysis, and it can still be promoted or rolled "
                 "back."]  # fmt: skip
        lines += [f"Route {r.name} will serve model {control.model} (the control, {control.name}) for {_who(r)}."
                  for r in routes]  # fmt: skip
        if not routes:
            lines.append(f"Requests for {control.model} from {_cohorts(experiment)} are no longer split: "
                         f"they get {control.model}.")  # fmt: skip
        return lines
    if action == "promote":
        assert variant is not None
        lines = [f"Experiment {name} ends promoted with variant {variant.name}: model {variant.model} is marked "
                 "serving in the registry, and the decision is recorded with the analysis as of now."]  # fmt: skip
        lines += [f"Route {r.name} will serve model {variant.model} for {_who(r)}." for r in routes]
        if not routes:
            lines.append(f"No route names this experiment, so no requests move to {variant.model} by this alone; "
                         f"requests for {control.model} get {control.model} until a route serves "
                         f"{variant.model}.")  # fmt: skip
        return lines
    lines = [f"Experiment {name} ends rolled back: nothing is shipped; model {control.model} (the control, "
             f"{control.name}) is marked serving, and the decision is recorded with the analysis as of "
             "now."]  # fmt: skip
    lines += [f"Route {r.name} will serve model {control.model} for {_who(r)}." for r in routes]
    if not routes:
        lines.append(f"Requests for {control.model} from {_cohorts(experiment)} are no longer split: "
                     f"they get {control.model}.")  # fmt: skip
    return lines


def _promote_variant(experiment: ex.Experiment, chosen: str) -> ex.Variant | None:
    """Return the variant to promote: ``chosen``, else the decided winner or the only treatment (None: ask)."""
    variants = {v.name: v for v in experiment.config.variants}
    if chosen:
        if chosen not in variants:
            names = ", ".join(variants)
            raise InvalidInput(f"variant: experiment {experiment.name!r} has no variant {chosen!r}; one of {names}",
                               field="variant")  # fmt: skip
        return variants[chosen]
    decision = experiment.decision
    if decision is not None and decision.action == "promote" and decision.variant in variants:
        return variants[decision.variant]
    treatments = experiment.config.variants[1:]
    return treatments[0] if len(treatments) == 1 else None


# --- pages -------------------------------------------------------------------------------------


@router.get("")
@page
async def experiments_list(
    request: Request, state: str | None = None, limit: str | None = None, cursor: str | None = None
) -> Response:
    """List experiments newest first: state, cohorts and routes, arms, users per arm, last decision."""
    session = view(request, READ)
    wanted = text_param(state, "state", 20)
    if wanted and wanted not in STATES:
        raise InvalidInput(f"state: one of {', '.join(STATES)}, got {wanted[:20]!r}", field="state")
    size = int_param(limit, "limit", default=50, low=1, high=200)
    after = decode_cursor(cursor)
    project = request.app.state.project
    listed = await call(ex.list_experiments, project, state=wanted or None, with_analyses=False)  # type: ignore[arg-type]
    if after is not None:
        position = next((i for i, e in enumerate(listed) if e.id == after.get("id")), None)
        if position is None:
            raise InvalidInput("cursor: not a cursor this page made; follow the page's own links", field="cursor")
        listed = listed[position + 1 :]
    shown, more = listed[:size], len(listed) > size
    users = await call(_users, project, [e.name for e in shown])
    table = await call(routing.table, project)
    rows = []
    for experiment in shown:
        mine = users.get(experiment.name, {})
        decision = experiment.decision
        rows.append({
            "experiment": experiment,
            "routes": [r for r in table.routes if r.experiment == experiment.name],
            "arms": [{"name": v.name, "model": v.model, "share": pct(v.share), "users": mine.get(v.name, 0)}
                     for v in experiment.config.variants],
            "users": sum(mine.values()),
            "decision": decision,
        })  # fmt: skip
    query = f"&state={quote(wanted)}" if wanted else ""
    query += f"&limit={size}" if limit else ""
    next_url = f"/ui/experiments?cursor={encode_cursor({'id': shown[-1].id})}{query}" if more and shown else None
    first_url = f"/ui/experiments?{query.lstrip('&')}" if after is not None else None
    return render_page(request, session, "ui/console/experiments.html", active="experiments", title="Experiments",
                       rows=rows, state=wanted, states=STATES, next_url=next_url, first_url=first_url)  # fmt: skip


@router.get("/{name}")
@page
async def experiment_page(request: Request, name: str, done: str | None = None) -> Response:
    """Show one experiment: arms with intervals, the metric over time, SRM, cohorts, guardrails, the decision."""
    session = view(request, READ)
    notice = text_param(done, "done", 20)
    if notice and notice not in ACTIONS:
        raise InvalidInput(f"done: one of {', '.join(ACTIONS)}, got {notice[:20]!r}", field="done")
    experiment = await _experiment(request, name)
    project = request.app.state.project
    analysis = await call(ex.analyse, project, experiment.name, keep=False)
    timeline = await call(ex.timeline, project, experiment.name)
    routes = await call(_routes, project, experiment.name)
    metric = analysis.metric
    over_time, difference = timeline_charts(timeline)
    preview = None
    if experiment.state in ("running", "stopped"):
        judged, winner, reasons = _judge(analysis, experiment.config)
        preview = {"action": judged, "variant": winner, "reasons": reasons}
    can_decide = allowed(session.role, DECIDE)
    buttons: list[dict[str, str | None]] = []
    if can_decide:
        for action in valid_actions(experiment.state):
            if action == "promote":
                buttons += [{"action": action, "label": f"Promote {v.name}", "variant": v.name}
                            for v in experiment.config.variants[1:]]  # fmt: skip
            else:
                buttons.append({"action": action, "label": LABELS[action], "variant": None})
    return render_page(
        request, session, "ui/console/experiment.html", active="experiments", title=experiment.name,
        experiment=experiment, analysis=analysis, metric=metric, routes=routes,
        arms=_arm_rows(experiment, analysis.variants, metric), cohorts=_arm_rows(experiment, analysis.cohorts, metric),
        intervals_svg=interval_chart(analysis), over_time_svg=over_time, difference_svg=difference,
        latest=_latest_difference(timeline), srm=_srm(experiment, analysis),
        guardrails=_guardrails(experiment, analysis), pairwise=_pairwise(analysis), preview=preview,
        decision=experiment.decision, buttons=buttons, notice=DONE.get(notice), cohorts_text=_cohorts(experiment),
    )  # fmt: skip


@router.get("/{name}/confirm/{action}")
@page
async def confirm(request: Request, name: str, action: str, variant: str | None = None) -> Response:
    """Say exactly what ``action`` will do to the experiment, with the form (CSRF) that does it, and Cancel."""
    session = view(request, DECIDE)
    chosen_name = text_param(variant, "variant", 128)
    _action(action)
    experiment = await _experiment(request, name)
    _check_state(experiment, action)
    chosen = _promote_variant(experiment, chosen_name) if action == "promote" else None
    routes = await call(_routes, request.app.state.project, experiment.name)
    choices = experiment.config.variants[1:] if action == "promote" else []
    lines = consequences(experiment, action, routes, chosen) if action != "promote" or chosen else []
    return render_page(
        request, session, "ui/console/experiment_confirm.html", active="experiments",
        title=f"{LABELS[action]} {experiment.name}?", experiment=experiment, action=action, label=LABELS[action],
        chosen=chosen, choices=choices, lines=lines,
    )  # fmt: skip


@router.post("/{name}/{action}")
@page
async def act(request: Request, name: str, action: str) -> Response:
    """Start, stop, promote or roll back the experiment (admins, confirmed), then back to its page."""
    _session, form = await admin_form(request, DECIDE)
    _action(action)
    experiment = await _experiment(request, name)
    if field(form, "confirm", 10) != "yes":
        raise InvalidInput("confirm: send the confirmation page's form (confirm=yes)", field="confirm")
    _check_state(experiment, action)
    project = request.app.state.project
    if action == "start":
        await call(ex.start, project, experiment.name)
    elif action == "stop":
        await call(ex.stop, project, experiment.name)
    elif action == "promote":
        chosen = field(form, "variant", 128).strip()
        await call(ex.promote, project, experiment.name, chosen or None)
    else:
        await call(ex.rollback, project, experiment.name)
    gateway = getattr(request.app.state, "gateway", None)
    if gateway is not None:
        gateway.refresh()  # the gateway sees the change at once, as after the API's call
    return RedirectResponse(f"/ui/experiments/{quote(experiment.name)}?done={action}", status_code=303)
