"""The console's models pages: GET /ui/models (the registry, where each model serves) and
/ui/models/{name} (its facts, its lineage as a graph and as linked columns, its training curves).

The lineage is ``posttrain.models.lineage`` (model ← run ← dataset versions ← feedback and labels
← the base chain) plus the experiments whose variants served the model and their decisions; the
feedback behind each dataset version is counted by kind and source (this module's one query). The
curves are the run's metrics history from its job row (``jobs.get_job``), else the
``trainer_state.json`` of the run's last checkpoint. The graph is drawn with matplotlib through
``posttrain.plots`` (layered boxes, left to right, with arrows).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
from fastapi import APIRouter, Request
from starlette.responses import Response

from posttrain import jobs, plots, routing
from posttrain.errors import NotFound
from posttrain.experiments.records import Experiment
from posttrain.experiments.store import list_experiments
from posttrain.models.lineage import Lineage, lineage
from posttrain.models.registry import get_model, list_models
from posttrain.project import Project
from posttrain.records import ModelRecord
from posttrain.server.ui.console import call, decode_cursor, encode_cursor, render_page, view
from posttrain.server.ui.nav import READ
from posttrain.server.ui.pages import page

router = APIRouter(prefix="/models")

PAGE = 50
MAX_CURVES = 6  # charts of logged metrics besides the loss
# summary values the trainer logs once at the end: not curves
_NOT_CURVES = {"step", "epoch", "train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos",
               "train_loss"}  # fmt: skip
_LOSS = ("loss", "eval_loss")


# --- GET /ui/models ---------------------------------------------------------------------------


def _serving(project: Project, experiments: list[Experiment]) -> dict[str, list[str]]:
    """Return, per model name, where it serves: each route naming it, or naming an experiment it is an arm of."""
    arms = {e.name: [v.model for v in e.config.variants] for e in experiments if e.state == "running"}
    where: dict[str, list[str]] = {}
    for route in routing.list_routes(project):
        scope = f"{route.cohort or 'every cohort'} · {route.requested or 'any model'} ({route.name})"
        if route.model:
            where.setdefault(route.model, []).append(scope)
        for model in arms.get(route.experiment or "", []):
            where.setdefault(model, []).append(f"{scope} via experiment {route.experiment}")
    return where


def _registry(project: Project) -> tuple[list[ModelRecord], dict[str, list[str]]]:
    models = list_models(project)
    return models, _serving(project, list_experiments(project, with_analyses=False))


@router.get("")
@page
async def models_list(request: Request, cursor: str | None = None) -> Response:
    """List the registry: name, kind, status, base, created, where each model serves."""
    session = view(request, READ)
    after = decode_cursor(cursor)
    start = after.get("o", 0) if after else 0
    start = start if isinstance(start, int) and 0 <= start <= 1_000_000 else 0
    models, serving = await call(_registry, request.app.state.project)
    shown = models[start : start + PAGE]
    more = start + PAGE < len(models)
    next_url = f"/ui/models?cursor={encode_cursor({'o': start + PAGE})}" if more else None
    return render_page(
        request, session, "ui/console/models.html", active="models", title="Models", models=shown,
        serving=serving, total=len(models), next_url=next_url, first_url="/ui/models" if start else None,
    )  # fmt: skip


# --- GET /ui/models/{name} ---------------------------------------------------------------------

_FEEDBACK = """
SELECT f.kind, f.source, count(*) AS n FROM feedback f
WHERE list_contains($ids, f.id) GROUP BY ALL ORDER BY n DESC, f.kind, f.source"""


def _feedback_counts(project: Project, sources_file: str | None) -> list[dict[str, Any]]:
    """Return the feedback a dataset version was built from, counted by kind and source."""
    if not sources_file or not Path(sources_file).is_file():
        return []
    table = pq.read_table(sources_file, columns=["kind", "id"])
    ids = table.filter(pc.equal(table.column("kind"), "feedback")).column("id").to_pylist()
    if not ids:
        return []
    rows = project.cursor().execute(_FEEDBACK, {"ids": ids}).fetchall()
    return [{"kind": kind, "source": source, "n": n} for kind, source, n in rows]


def _history(project: Project, run_id: str) -> tuple[list[dict[str, Any]], str]:
    """Return a run's logged metrics (one dict per log line, with ``step``) and where they came from."""
    try:
        job = jobs.get_job(project, run_id)
    except NotFound:
        job = None
    if job is not None and job.metrics:
        return job.metrics, "the job's metrics history"
    folder = project.artifacts / "runs" / run_id
    states = sorted(folder.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[-1]))
    if states:
        try:
            history = json.loads(states[-1].read_text(encoding="utf-8")).get("log_history", [])
        except (OSError, ValueError):
            history = []
        return [h for h in history if isinstance(h, dict)], f"{states[-1].relative_to(project.root)}"
    return [], ""


def _curves(history: list[dict[str, Any]], name: str) -> list[dict[str, str]]:
    """Return the loss chart and one chart per other logged metric (numbers by step)."""

    def series(key: str) -> plots.Series | None:
        points = [(h.get("step", i + 1), h[key]) for i, h in enumerate(history)
                  if isinstance(h.get(key), int | float) and not isinstance(h.get(key), bool)]  # fmt: skip
        if not points:
            return None
        return plots.Series(key, [p[0] for p in points], [float(p[1]) for p in points])

    charts = []
    losses = [s for s in (series(k) for k in _LOSS) if s is not None]
    if losses:
        svg = plots.lines(losses, title=f"Loss of {name}'s run", x_label="step", y_label="loss", height=2.4, width=4.6)
        charts.append({"svg": svg, "alt": f"Training loss per step of {name}'s run"})
    keys = list(dict.fromkeys(k for h in history for k in h if k not in _NOT_CURVES and k not in _LOSS))
    for key in keys[:MAX_CURVES]:
        found = series(key)
        if found is not None:
            svg = plots.lines([found], title=key, x_label="step", height=2.4, width=4.6)
            charts.append({"svg": svg, "alt": f"{key} per step"})
    return charts


def _experiments_of(model: ModelRecord, experiments: list[Experiment]) -> list[dict[str, Any]]:
    """Return the experiments with an arm serving ``model``: the arm, the state, the decision."""
    out = []
    for experiment in experiments:
        arms = [v.name for v in experiment.config.variants if v.model in (model.name, model.id)]
        if arms:
            decision = experiment.decision
            won = decision is not None and decision.action == "promote" and decision.variant in arms
            out.append({"e": experiment, "arms": arms, "decision": decision, "won": won})
    return out


def _graph(lin: Lineage, feedback: dict[str, list[dict[str, Any]]], experiments: list[dict[str, Any]]) -> str:
    """Draw the lineage as layered boxes left to right with arrows: what made the model, then what it was in."""
    step = lin.chain[0]
    layers: list[list[str]] = [[] for _ in range(6)]  # node ids per layer
    labels: dict[str, str] = {}
    edges: list[tuple[str, str]] = []

    def node(layer: int, key: str, text: str) -> str:
        layers[layer].append(key)
        labels[key] = text
        return key

    inputs: list[str] = []
    for i, ds in enumerate(step.datasets):
        kinds = ", ".join(f"{r['kind']} {r['n']}" for r in feedback.get(ds.ref, [])[:2]) or "no feedback"
        source = node(0, f"f{i}", f"{ds.counts.get('interactions', 0)} interactions\n{kinds}")
        target = node(1, f"d{i}", f"dataset\n{ds.ref}")
        edges.append((source, target))
        for j, queue in enumerate(ds.labels[:2]):
            edges.append((node(0, f"q{i}.{j}", f"queue {queue.queue}\n{queue.labels} labels"), target))
        inputs.append(target)
    ancestors = lin.chain[1:]
    if ancestors:
        older = [node(0, f"a{k}", f"{s.via or 'base'}\n{s.model.name}") for k, s in enumerate(reversed(ancestors[1:]))]
        parent = node(1, "parent", f"{ancestors[0].via or 'base'}\n{ancestors[0].model.name}")
        edges.extend(zip(older, [*older[1:], parent][: len(older)], strict=True))
        inputs.append(parent)
    if step.model.run_id:
        run = node(2, "run", f"{step.run.kind}\n{step.run.id[:12]}…" if step.run else "run missing")
        edges.extend((i, run) for i in inputs)
        inputs = [run]
    model = node(3, "model", step.model.name)
    edges.extend((i, model) for i in inputs)
    for k, x in enumerate(experiments):
        experiment = node(4, f"e{k}", f"{x['e'].name}\n{x['e'].state}")
        decision = x["decision"]
        text = f"{decision.action}\n{decision.variant or ''}" if decision else "no decision"
        edges.append((model, experiment))
        edges.append((experiment, node(5, f"c{k}", text)))
    titles = ["feedback · labels", "datasets · parent", "training run", "model", "experiments", "decisions"]
    shown = [(t, ids) for t, ids in zip(titles, layers, strict=True) if ids]
    key = ("lineage-graph", [(t, [labels[i] for i in ids]) for t, ids in shown], edges)
    return plots.cached(key, lambda: _draw_graph(shown, labels, edges))


def _draw_graph(shown: list[tuple[str, list[str]]], labels: dict[str, str], edges: list[tuple[str, str]]) -> str:
    from matplotlib.patches import FancyBboxPatch

    tallest = max(len(ids) for _, ids in shown)
    fig, axes = plots.figure(max(4.0, 1.8 * len(shown)), max(1.7, 0.8 * tallest + 0.7))
    axes.set_xlim(-0.55, len(shown) - 0.45)
    axes.set_ylim(-tallest + 0.35, 0.95)
    axes.axis("off")
    half_w, half_h = 0.43, 0.3
    where: dict[str, tuple[float, float]] = {}
    for x, (title, ids) in enumerate(shown):
        axes.text(x, 0.75, title, ha="center", va="center", fontsize=7.5, color="#868e96", fontweight="bold")
        top = -(tallest - len(ids)) / 2
        for i, key in enumerate(ids):
            y = top - i
            where[key] = (x, y)
            main = key == "model"
            axes.add_patch(FancyBboxPatch((x - half_w, y - half_h), 2 * half_w, 2 * half_h, boxstyle="round,pad=0.02",
                                          facecolor="#eef2ff" if main else "white",
                                          edgecolor=plots.PALETTE[x % len(plots.PALETTE)],
                                          linewidth=1.4 if main else 0.9))  # fmt: skip
            text = "\n".join(line if len(line) <= 24 else line[:23] + "…" for line in labels[key].split("\n")[:2])
            axes.text(x, y, text, ha="center", va="center", fontsize=7, fontweight="bold" if main else "normal")
    arrow = {"arrowstyle": "-|>", "color": "#868e96", "linewidth": 0.8, "shrinkA": 0, "shrinkB": 0}
    for source, target in edges:
        (x1, y1), (x2, y2) = where[source], where[target]
        if x1 == x2:  # within a layer (the base chain): top to bottom
            start, end = (x1, y1 - half_h), (x2, y2 + half_h)
        else:
            start, end = (x1 + half_w, y1), (x2 - half_w, y2)
        axes.annotate("", xy=end, xytext=start, arrowprops=arrow)
    return plots.to_svg(fig)


def _model_page(project: Project, model: ModelRecord) -> dict[str, Any]:
    lin = lineage(project, model.name)
    step = lin.chain[0]
    feedback = {ds.ref: _feedback_counts(project, _sources_file(project, ds.ref)) for ds in step.datasets}
    every = list_experiments(project, with_analyses=False)
    experiments = _experiments_of(model, every)
    history, history_from = _history(project, model.run_id) if model.run_id else ([], "")
    serving = _serving(project, every).get(model.name, [])
    evals = model.metrics.get("evals") if isinstance(model.metrics.get("evals"), dict) else {}
    final = {k: v for k, v in model.metrics.items() if k != "evals"}
    children = [m for m in list_models(project) if m.parent_id == model.id]
    return {
        "model": model, "lineage": lin, "step": step, "feedback": feedback, "experiments": experiments,
        "graph": _graph(lin, feedback, experiments), "curves": _curves(history, model.name),
        "history_points": len(history), "history_from": history_from, "serving": serving, "evals": evals,
        "final": final, "children": children,
        "recipe": json.dumps(model.recipe, indent=2, ensure_ascii=False, default=str) if model.recipe else "",
    }  # fmt: skip


def _sources_file(project: Project, ref: str) -> str | None:
    from posttrain import versions

    try:
        file = versions.resolve(project, ref).source_ids.get("file")
    except NotFound:
        return None
    return file if isinstance(file, str) else None


@router.get("/{name}")
@page
async def model(request: Request, name: str) -> Response:
    """Show a model: its facts, its lineage as a graph and as linked columns, its run's training curves."""
    session = view(request, READ)
    if len(name) > 512:
        raise NotFound("there is no such model; pick one from the registry")
    project = request.app.state.project
    try:
        found = await call(get_model, project, name)
    except NotFound:
        raise NotFound(f"there is no model {name[:64]!r}; pick one from the registry") from None
    context = await call(_model_page, project, found)
    return render_page(
        request, session, "ui/console/models_detail.html", active="models", title=f"Model {name}", **context
    )
