"""The console's evals: GET /ui/evals (runs with their cohort and family breakdown, a chart of score per
model per cohort, a form to compare two models), GET /ui/evals/{run_id} (one run: per cohort and family
scores with intervals, its items, its scorers) and GET /ui/evals/compare?a=MODEL&b=MODEL[&suite=NAME]
(the two side by side: overall, per cohort and family with intervals of the paired difference b − a,
the items where they differ, and the gate's verdicts on the pair).

Runs are read with ``posttrain.evals`` (``get_run``, ``list_runs``, ``read_scores``, ``read_suite_rows``);
differences are paired per prompt as ``posttrain.evals.compare`` pairs them (``per_prompt``,
``prompt_keys``, ``slice_values``). Stored comparisons and their gate verdicts (``eval_comparisons``)
and the list's page of run ids have no library reader, so they are selected here, parameters bound.
The loop's own gate decisions come from ``posttrain.loop.status``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson
import pyarrow as pa
from fastapi import APIRouter, Request
from starlette.responses import Response

from posttrain import loop, plots
from posttrain.errors import InvalidInput, NotFound, PosttrainError
from posttrain.evals import EvalResult, Slices, get_run, list_runs, read_scores
from posttrain.evals.intervals import Estimate, slice_values
from posttrain.evals.suite import per_prompt, prompt_keys, read_suite_rows
from posttrain.loop.results import EvaluateResult, GateStepResult, SpecialiseResult
from posttrain.models.registry import get_model
from posttrain.project import Project
from posttrain.records import ModelRecord
from posttrain.server.ui.console import call, decode_cursor, encode_cursor, int_param, render_page, text_param, view
from posttrain.server.ui.nav import READ
from posttrain.server.ui.pages import page

router = APIRouter(prefix="/evals")

PAGE_SIZE = 30
ITEMS = 25  # items per page on a run's page and the compare page (the ``limit`` parameter, up to MAX_ITEMS)
MAX_ITEMS = 100
MAX_CHART_MODELS = 12
TEXT = 2000  # characters of a prompt or an answer shown per item
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SUITE = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}(@[0-9]{1,9})?$")


# --- shared pieces ----------------------------------------------------------------------------------


def _model(project: Project, name: str) -> ModelRecord:
    """Return a registered model, or raise NotFound naming it."""
    try:
        return get_model(project, name)
    except NotFound:
        raise NotFound(f"there is no model {name!r}; pick one from the list", field="model") from None


def _text(content: Any) -> str:
    """Return a message's text (a string or a list of text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _prompt_text(row: dict[str, Any] | None) -> str:
    """Return a suite row's prompt: its last user message (the whole prompt's text when there is none)."""
    if row is None:
        return ""
    prompt = row.get("prompt") or []
    users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    return _text((users or prompt or [{}])[-1].get("content"))[:TEXT]


def _suite_rows(project: Project, ref: str) -> list[dict[str, Any]]:
    """Return a suite's rows, or none when its dataset version cannot be read any more."""
    try:
        return read_suite_rows(project, ref)[1]
    except PosttrainError:
        return []


def _scores(run: EvalResult) -> pa.Table | None:
    try:
        return read_scores(run)
    except PosttrainError:
        return None


def _interval(est: Estimate | None) -> str:
    if est is None:
        return "–"
    if est.ci_low is None or est.ci_high is None:
        return f"{est.mean:.3f}"
    return f"{est.mean:.3f} [{est.ci_low:.3f}, {est.ci_high:.3f}]"


def _slice_rows(slices: Slices) -> list[tuple[str, str, Estimate]]:
    """Return (kind, name, estimate) rows: overall, each cohort, each family."""
    rows = [("overall", "all prompts", slices.overall)]
    rows += [("cohort", name, est) for name, est in slices.cohorts.items()]
    rows += [("family", name, est) for name, est in slices.families.items()]
    return rows


def _offset(cursor: str | None) -> int:
    values = decode_cursor(cursor)
    if values is None:
        return 0
    offset = values.get("o")
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= 10_000_000:
        raise InvalidInput("cursor: not a cursor this page made; follow the page's own links", field="cursor")
    return offset


def _url(path: str, **query: Any) -> str:
    kept = {k: v for k, v in query.items() if v not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path


def _suite_param(value: str | None) -> str:
    suite = text_param(value, "suite", 128)
    if suite and not _SUITE.match(suite):
        raise InvalidInput("suite: a dataset NAME or NAME@VERSION", field="suite")
    return suite


def _on_suite(run: EvalResult, suite: str) -> bool:
    return not suite or run.dataset == suite or run.dataset.split("@")[0] == suite


# --- the list ---------------------------------------------------------------------------------------


@dataclass
class ListPage:
    """One page of eval runs, the chart's runs, and what the compare form offers."""

    runs: list[EvalResult]
    more: bool
    chart_suite: str | None
    chart_runs: list[EvalResult]
    models: list[str]
    suites: list[str]


def _list_page(project: Project, model: ModelRecord | None, suite: str, offset: int, limit: int) -> ListPage:
    clauses, params = ["TRUE"], []
    if model is not None:
        clauses.append("model_id = ?")
        params.append(model.id)
    if suite:
        clauses.append("(dataset = ? OR split_part(dataset, '@', 1) = ?)")
        params += [suite, suite]
    sql = f"SELECT id FROM eval_runs WHERE {' AND '.join(clauses)} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
    ids = [r[0] for r in project.cursor().execute(sql, [*params, limit + 1, offset]).fetchall()]
    runs = [get_run(project, run_id) for run_id in ids[:limit]]
    cur = project.cursor()
    models = [r[0] for r in cur.execute("SELECT DISTINCT model FROM eval_runs ORDER BY 1 LIMIT 500").fetchall()]
    suites = [r[0] for r in cur.execute("SELECT DISTINCT dataset FROM eval_runs ORDER BY 1 LIMIT 500").fetchall()]
    chart_suite = next((r.dataset for r in runs), None) if not suite or "@" not in suite else suite
    chart_runs: list[EvalResult] = []
    if chart_suite is not None:
        latest: dict[str, EvalResult] = {}
        for run in list_runs(project, dataset=chart_suite):  # newest first: keep each model's latest
            latest.setdefault(run.model, run)
        chart_runs = list(latest.values())[:MAX_CHART_MODELS]
    return ListPage(runs, len(ids) > limit, chart_suite, chart_runs, models, suites)


def score_chart(runs: list[EvalResult], suite: str) -> tuple[str, str] | None:
    """Return (svg, alt) of each model's first scorer on ``suite``, overall and per cohort, with intervals."""
    if not runs:
        return None
    scorer = runs[0].config.scorers[0]
    rows: list[plots.Interval] = []
    for run in runs:
        slices = run.scores.get(scorer)
        if slices is None:
            continue
        parts = [("overall", slices.overall), *slices.cohorts.items()]
        for name, est in parts:
            rows.append(plots.Interval(f"{run.model} · {name}", est.mean, est.ci_low, est.ci_high, group=name))
    svg = plots.intervals(rows, title=f"{scorer} on {suite}, per model and cohort (95% intervals)", x_label=scorer)
    return svg, f"{scorer} on {suite} per model, overall and per cohort, with 95% intervals"


@router.get("")
@page
async def run_list(
    request: Request, model: str | None = None, suite: str | None = None, cursor: str | None = None
) -> Response:
    """List eval runs (model, suite, cohort/family breakdown, score with interval, when) with a chart and a form."""
    session = view(request, READ)
    project = request.app.state.project
    model_name = text_param(model, "model", 128)
    suite_name = _suite_param(suite)
    offset = _offset(cursor)
    record = await call(_model, project, model_name) if model_name else None
    found = await call(_list_page, project, record, suite_name, offset, PAGE_SIZE)
    chart = score_chart(found.chart_runs, found.chart_suite) if found.chart_suite else None
    query = {"model": model_name, "suite": suite_name}
    next_url = _url("/ui/evals", **query, cursor=encode_cursor({"o": offset + PAGE_SIZE})) if found.more else None
    first_url = _url("/ui/evals", **query) if offset else None
    return render_page(
        request, session, "ui/console/evals.html", active="evals", title="Evals", page=found, chart=chart,
        model=model_name, suite=suite_name, next_url=next_url, first_url=first_url, interval=_interval,
    )  # fmt: skip


# --- compare (declared before /{run_id}, which would take "compare" as an id) --------------------------


@dataclass
class Verdict:
    """A gate's verdict on the pair: from a stored comparison or a loop turn's gate step."""

    source: str
    candidate: str
    baseline: str
    passed: bool
    reasons: list[str]
    when: Any = None
    metric: str | None = None
    margin: float | None = None
    rule: str | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    cohorts: dict[str, bool] = field(default_factory=dict)


@dataclass
class Comparison:
    """Two models' runs on one suite side by side."""

    run_a: EvalResult
    run_b: EvalResult
    scorers: list[str]
    differences: dict[str, Slices]
    items: list[dict[str, Any]]
    differing: int
    total: int
    win_rate: dict[str, Any] | None = None  # the stored comparison's judge: candidate's win rate
    note: str | None = None


def _comparisons(project: Project, runs_a: list[str], runs_b: list[str]) -> list[dict[str, Any]]:
    """Return stored comparisons of a run of a with a run of b (either way round), newest first."""
    if not runs_a or not runs_b:
        return []
    qa, qb = ", ".join("?" * len(runs_a)), ", ".join("?" * len(runs_b))
    sql = (
        "SELECT id, candidate_run_id, baseline_run_id, judge, results, gate, created_at FROM eval_comparisons "
        f"WHERE (candidate_run_id IN ({qa}) AND baseline_run_id IN ({qb})) "
        f"OR (candidate_run_id IN ({qb}) AND baseline_run_id IN ({qa})) ORDER BY created_at DESC, id DESC LIMIT 50"
    )
    result = project.cursor().execute(sql, [*runs_a, *runs_b, *runs_b, *runs_a])
    columns = [d[0] for d in result.description]
    rows = []
    for values in result.fetchall():
        row = dict(zip(columns, values, strict=True))
        for key in ("results", "gate"):
            row[key] = orjson.loads(row[key]) if isinstance(row[key], str) else row[key]
        rows.append(row)
    return rows


def _loop_verdicts(project: Project, a: str, b: str) -> list[Verdict]:
    """Return the loop turns' gate decisions on this pair (a candidate gated against the other)."""
    out = []
    for turn in loop.status(project):
        evaluate, gate_step, chosen = turn.step("evaluate"), turn.step("gate"), turn.step("specialise")
        if evaluate is None or not isinstance(evaluate.result, EvaluateResult):
            continue
        for pair in evaluate.result.gates:
            if {pair.candidate, pair.baseline} != {a, b}:
                continue
            cohorts: dict[str, bool] = {}
            if gate_step is not None and isinstance(gate_step.result, GateStepResult):
                candidates = chosen.result.candidates if chosen and isinstance(chosen.result, SpecialiseResult) else {}
                for cohort, passed in gate_step.result.passed.items():
                    if candidates.get(cohort, pair.candidate) == pair.candidate:
                        cohorts[cohort] = passed
            out.append(Verdict(
                source=f"loop {turn.loop}, turn {turn.turn}", candidate=pair.candidate, baseline=pair.baseline,
                passed=all(c.passed for c in pair.checks), reasons=pair.reasons, when=turn.started_at,
                metric=pair.metric, checks=[c.model_dump(mode="json") for c in pair.checks], cohorts=cohorts,
            ))  # fmt: skip
    return out


def _pick(runs_a: list[EvalResult], runs_b: list[EvalResult], stored: list[dict[str, Any]]) -> tuple[Any, Any, Any]:
    """Return the runs to put side by side (a stored comparison's first, else the latest on a shared suite)."""
    by_id = {r.id: r for r in [*runs_a, *runs_b]}
    ids_a = {r.id for r in runs_a}
    for row in stored:
        cand, base = by_id.get(row["candidate_run_id"]), by_id.get(row["baseline_run_id"])
        if cand is not None and base is not None:
            return (cand, base, row) if cand.id in ids_a else (base, cand, row)
    for run in runs_a:  # newest first
        match = next((r for r in runs_b if r.dataset == run.dataset and r.prompts == run.prompts), None)
        if match is not None:
            return run, match, None
    return None, None, None


def _item_rows(
    project: Project, run_a: EvalResult, run_b: EvalResult, scorers: list[str], ta: pa.Table, tb: pa.Table
) -> list[dict[str, Any]]:
    """Return every (prompt, sample) of both runs: prompt, reference answer, each answer and score, differ or not."""
    rows = _suite_rows(project, run_a.dataset)
    left = {(r["prompt_index"], r["sample"]): r for r in ta.to_pylist()}
    out = []
    for right in tb.to_pylist():
        key = (right["prompt_index"], right["sample"])
        found = left.get(key)
        if found is None:
            continue
        row = rows[key[0]] if 0 <= key[0] < len(rows) else None
        scores_a = {s: found.get(s) for s in scorers}
        scores_b = {s: right.get(s) for s in scorers}
        out.append({
            "index": key[0], "sample": key[1], "cohort": found.get("cohort"), "family": found.get("family"),
            "prompt": _prompt_text(row), "reference": "" if row is None else _text(row.get("answer"))[:TEXT],
            "answer_a": str(found.get("completion") or "")[:TEXT],
            "answer_b": str(right.get("completion") or "")[:TEXT],
            "scores_a": scores_a, "scores_b": scores_b,
            "differ": found.get("completion") != right.get("completion") or scores_a != scores_b,
        })  # fmt: skip
    return out


def _compare(project: Project, a: ModelRecord, b: ModelRecord, suite: str) -> tuple[Comparison | None, list[Verdict]]:
    runs_a = [r for r in list_runs(project, model=a.id) if _on_suite(r, suite)]
    runs_b = [r for r in list_runs(project, model=b.id) if _on_suite(r, suite)]
    stored = _comparisons(project, [r.id for r in runs_a], [r.id for r in runs_b])
    by_id = {r.id: r for r in [*runs_a, *runs_b]}
    verdicts = [
        Verdict(
            source=f"eval comparison {row['id']}", candidate=by_id[row["candidate_run_id"]].model,
            baseline=by_id[row["baseline_run_id"]].model, passed=bool(row["gate"].get("passed")),
            reasons=[str(r) for r in row["gate"].get("reasons") or []], when=row["created_at"],
            metric=row["gate"].get("metric"), margin=row["gate"].get("margin"), rule=row["gate"].get("rule"),
            checks=list(row["gate"].get("checks") or []),
        )
        for row in stored
        if isinstance(row.get("gate"), dict)
    ]  # fmt: skip
    verdicts += _loop_verdicts(project, a.name, b.name)
    run_a, run_b, row = _pick(runs_a, runs_b, stored)
    if run_a is None or run_b is None:
        return None, verdicts
    ta, tb = _scores(run_a), _scores(run_b)
    scorers = [s for s in run_a.config.scorers if s in run_b.config.scorers]
    if ta is None or tb is None:
        note = "the per-item scores of one of the runs are missing, so only the stored summaries are shown"
        return Comparison(run_a, run_b, scorers, {}, [], 0, 0, note=note), verdicts
    differences: dict[str, Slices] = {}
    if (
        ta.num_rows
        and per_prompt(ta, scorers[0])
        and len(per_prompt(ta, scorers[0])) == len(per_prompt(tb, scorers[0]))
    ):
        cohorts, families = prompt_keys(ta, "cohort"), prompt_keys(ta, "family")
        for name in scorers:
            diffs = [y - x for x, y in zip(per_prompt(ta, name), per_prompt(tb, name), strict=True)]
            differences[name] = slice_values(diffs, cohorts, families, kind="diff")
    items = _item_rows(project, run_a, run_b, scorers, ta, tb)
    win = None
    if row is not None and isinstance(row.get("results"), dict) and row["results"].get("win_rate"):
        cand = by_id[row["candidate_run_id"]].model
        overall = Slices.model_validate(row["results"]["win_rate"])
        win = {"candidate": cand, "judge": row["judge"], "estimate": overall.overall}
    differing = sum(1 for i in items if i["differ"])
    return Comparison(run_a, run_b, scorers, differences, items, differing, len(items), win_rate=win), verdicts


def compare_charts(found: Comparison, a: str, b: str) -> list[tuple[str, str]]:
    """Return (svg, alt) charts: each scorer's paired difference b − a per slice, and both models' scores."""
    charts = []
    for name, slices in list(found.differences.items())[:3]:
        rows = [plots.Interval(f"{kind} {label}" if kind != "overall" else "overall", est.mean, est.ci_low,
                               est.ci_high, group=kind) for kind, label, est in _slice_rows(slices)]  # fmt: skip
        svg = plots.intervals(rows, title=f"{name}: {b} − {a}, paired per prompt (95% CI)", x_label="difference",
                              vline=0.0)  # fmt: skip
        charts.append((svg, f"Difference in {name}, {b} minus {a}, overall, per cohort and family"))
    for name in found.scorers[:3]:
        sa, sb = found.run_a.scores.get(name), found.run_b.scores.get(name)
        if sa is None or sb is None:
            continue
        rows = []
        for kind, label, est in _slice_rows(sa):
            other = _slice_of(sb, kind, label)
            title = "overall" if kind == "overall" else f"{kind} {label}"
            rows.append(plots.Interval(f"{title} · {a}", est.mean, est.ci_low, est.ci_high, group=a))
            if other is not None:
                rows.append(plots.Interval(f"{title} · {b}", other.mean, other.ci_low, other.ci_high, group=b))
        svg = plots.intervals(rows, title=f"{name} of each model (95% intervals)", x_label=name)
        charts.append((svg, f"{name} of {a} and {b}, overall, per cohort and family"))
    return charts


def _slice_of(slices: Slices | None, kind: str, label: str) -> Estimate | None:
    """Return the estimate of one slice (overall, a cohort, a family) of ``slices``."""
    if slices is None:
        return None
    if kind == "overall":
        return slices.overall
    return (slices.cohorts if kind == "cohort" else slices.families).get(label)


def _side_by_side(found: Comparison) -> list[dict[str, Any]]:
    """Return one row per scorer and slice: a's score, b's score, the difference b − a with its interval."""
    out = []
    for name in found.scorers:
        sa, sb, diff = found.run_a.scores.get(name), found.run_b.scores.get(name), found.differences.get(name)
        if sa is None:
            continue
        for kind, label, est in _slice_rows(sa):
            out.append({"scorer": name, "kind": kind, "label": label, "a": est, "b": _slice_of(sb, kind, label),
                        "diff": _slice_of(diff, kind, label)})  # fmt: skip
    return out


@router.get("/compare")
@page
async def compare_page(
    request: Request,
    a: str | None = None,
    b: str | None = None,
    suite: str | None = None,
    show: str | None = None,
    cursor: str | None = None,
    limit: str | None = None,
) -> Response:
    """Show two models side by side: scores, paired differences with intervals, differing items, gate verdicts."""
    session = view(request, READ)
    project = request.app.state.project
    name_a, name_b = text_param(a, "a", 128), text_param(b, "b", 128)
    suite_name = _suite_param(suite)
    shown = text_param(show, "show", 10) or "differ"
    if shown not in ("differ", "all"):
        raise InvalidInput("show: differ or all", field="show")
    per_page = int_param(limit, "limit", default=ITEMS, low=1, high=MAX_ITEMS)
    offset = _offset(cursor)
    models = [r[0] for r in await call(_evaluated_models, project)]
    context: dict[str, Any] = {"a": name_a, "b": name_b, "suite": suite_name, "models": models, "show": shown}
    if not name_a and not name_b:
        return render_page(request, session, "ui/console/evals_compare.html", active="evals", found=None, **context)
    if not name_a or not name_b:
        missing = "a" if not name_a else "b"
        raise InvalidInput(f"{missing}: name the {'first' if missing == 'a' else 'second'} model to compare",
                           field=missing)  # fmt: skip
    record_a, record_b = await call(_model, project, name_a), await call(_model, project, name_b)
    if record_a.id == record_b.id:
        raise InvalidInput(f"b: {name_b!r} is the same model as a; pick two models", field="b")
    found, verdicts = await call(_compare, project, record_a, record_b, suite_name)
    items, next_url, first_url = [], None, None
    if found is not None:
        pool = found.items if shown == "all" else [i for i in found.items if i["differ"]]
        items = pool[offset : offset + per_page]
        query = {"a": name_a, "b": name_b, "suite": suite_name, "show": shown if shown != "differ" else None,
                 "limit": per_page if per_page != ITEMS else None}  # fmt: skip
        if offset + per_page < len(pool):
            next_url = _url("/ui/evals/compare", **query, cursor=encode_cursor({"o": offset + per_page}))
        first_url = _url("/ui/evals/compare", **query) if offset else None
    charts = compare_charts(found, record_a.name, record_b.name) if found is not None else []
    return render_page(
        request, session, "ui/console/evals_compare.html", active="evals", found=found, verdicts=verdicts,
        rows=_side_by_side(found) if found else [], items=items, charts=charts, next_url=next_url,
        first_url=first_url, interval=_interval, model_a=record_a, model_b=record_b, **context,
    )  # fmt: skip


def _evaluated_models(project: Project) -> list[tuple[str]]:
    return project.cursor().execute("SELECT DISTINCT model FROM eval_runs ORDER BY 1 LIMIT 500").fetchall()


# --- one run ----------------------------------------------------------------------------------------


def _run_items(project: Project, run: EvalResult, offset: int, limit: int) -> tuple[list[dict[str, Any]], int, bool]:
    """Return one page of a run's items (prompt, reference, completion, scores), the total, and whether scores exist."""
    table = _scores(run)
    if table is None:
        return [], 0, False
    rows = _suite_rows(project, run.dataset)
    part = table.slice(offset, limit).to_pylist()
    items = []
    for item in part:
        row = rows[item["prompt_index"]] if 0 <= item["prompt_index"] < len(rows) else None
        items.append({
            "index": item["prompt_index"], "sample": item["sample"], "cohort": item.get("cohort"),
            "family": item.get("family"), "prompt": _prompt_text(row),
            "reference": "" if row is None else _text(row.get("answer"))[:TEXT],
            "completion": str(item.get("completion") or "")[:TEXT],
            "scores": {s: item.get(s) for s in run.config.scorers},
        })  # fmt: skip
    return items, table.num_rows, True


@router.get("/{run_id}")
@page
async def run_page(request: Request, run_id: str, cursor: str | None = None, limit: str | None = None) -> Response:
    """Show one eval run: per cohort and family scores with intervals, its scorers, its items (paged)."""
    session = view(request, READ)
    project = request.app.state.project
    per_page = int_param(limit, "limit", default=ITEMS, low=1, high=MAX_ITEMS)
    offset = _offset(cursor)
    if not _ID.match(run_id):
        raise NotFound("there is no such eval run; pick one from the list", field="run")
    try:
        run = await call(get_run, project, run_id)
    except NotFound:
        raise NotFound(f"there is no eval run {run_id!r}; pick one from the list", field="run") from None
    items, total, has_scores = await call(_run_items, project, run, offset, per_page)
    charts = []
    for name, slices in list(run.scores.items())[:4]:
        rows = [plots.Interval("overall" if kind == "overall" else f"{kind} {label}", est.mean, est.ci_low,
                               est.ci_high, group=kind) for kind, label, est in _slice_rows(slices)]  # fmt: skip
        charts.append((plots.intervals(rows, title=f"{name} (95% intervals)", x_label=name),
                       f"{name} of {run.model} on {run.dataset}, overall, per cohort and family"))  # fmt: skip
    query = {"limit": per_page if per_page != ITEMS else None}
    path = f"/ui/evals/{run.id}"
    next_url = (
        _url(path, **query, cursor=encode_cursor({"o": offset + per_page})) if offset + per_page < total else None
    )
    first_url = _url(path, **query) if offset else None
    return render_page(
        request, session, "ui/console/evals_run.html", active="evals", run=run, items=items, total=total,
        has_scores=has_scores, charts=charts, slices={n: _slice_rows(s) for n, s in run.scores.items()},
        next_url=next_url, first_url=first_url, interval=_interval, offset=offset,
    )  # fmt: skip
