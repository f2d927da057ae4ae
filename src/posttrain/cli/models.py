"""``posttrain models init-tiny|register|list|show|lineage``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.tree import Tree

from posttrain.cli import render
from posttrain.cli.options import JsonOption, ProjectOption, load, through_server
from posttrain.models import registry
from posttrain.models.lineage import Lineage, ModelLineage
from posttrain.models.lineage import lineage as build_lineage
from posttrain.records import ModelRecord

app = typer.Typer(
    help="Models: build a tiny one, register a folder, list, show and trace lineage.", no_args_is_help=True
)
_COLUMNS = ["name", "kind", "status", "base", "created_at", "content_hash"]

NameArg = Annotated[str, typer.Argument(help="The model's name (see 'posttrain models list').")]


@app.command("init-tiny")
def init_tiny(
    name: Annotated[str, typer.Argument(help="A name for the new model.")],
    arch: Annotated[Literal["qwen2", "llama"], typer.Option(help="Architecture.")] = "qwen2",
    hidden: Annotated[int, typer.Option(help="Hidden size (a multiple of --heads).")] = 128,
    layers: Annotated[int, typer.Option(help="Transformer layers.")] = 4,
    heads: Annotated[int, typer.Option(help="Attention heads.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Build a random tiny chat model from scratch into artifacts/models/NAME and register it."""
    from posttrain.models.tiny import init_tiny as build

    with load(project) as proj:
        record = build(proj, name, arch=arch, hidden=hidden, layers=layers, heads=heads, seed=seed)
    _echo_record(record, json, verb="created")


@app.command()
def register(
    name: NameArg,
    path: Annotated[Path, typer.Argument(help="A local Hugging Face model folder (with config.json).")],
    kind: Annotated[Literal["causal-lm", "reward-model"], typer.Option(help="What the model is.")] = "causal-lm",
    base: Annotated[str | None, typer.Option(help="What it was fine-tuned from (a model name or hub id).")] = None,
    parent: Annotated[str | None, typer.Option(help="The registered model it was trained from.")] = None,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Register a local model folder under NAME (its content hash is recorded)."""
    with load(project) as proj:
        record = registry.register_model(proj, name, path, kind=kind, base=base, parent=parent)
    _echo_record(record, json, verb="registered")


@app.command("list")
def list_(project: ProjectOption = None, json: JsonOption = False) -> None:
    """List registered models, newest first."""
    found = through_server(
        project, registry.list_models, lambda api: [ModelRecord(**m) for m in api.call("GET", "/api/models")]
    )
    if json:
        render.as_json(found)
    else:
        rows = [[m.name, m.kind, m.status, m.base, f"{m.created_at:%Y-%m-%d %H:%M:%S}", (m.content_hash or "")[:12]]
                for m in found]  # fmt: skip
        render.table(_COLUMNS, rows, title="models")


@app.command()
def show(name: NameArg, project: ProjectOption = None, json: JsonOption = False) -> None:
    """Show one model's record: path, recipe, data, metrics."""
    record = through_server(
        project,
        lambda proj: registry.get_model(proj, name),
        lambda api: ModelRecord(**api.call("GET", f"/api/models/{name}")),
    )
    if json:
        render.as_json(record)
    else:
        render.table(["field", "value"], [[k, v] for k, v in record.model_dump(mode="json").items()], title=name)


@app.command()
def lineage(name: NameArg, project: ProjectOption = None, json: JsonOption = False) -> None:
    """Trace a model back: parents, the runs that made them, their datasets and source records."""
    found = through_server(
        project,
        lambda proj: build_lineage(proj, name),
        lambda api: Lineage(**api.call("GET", f"/api/models/{name}/lineage")),
    )
    if json:
        render.as_json(found)
    else:
        render.console.print(_tree(found))


def _echo_record(record: ModelRecord, json: bool, *, verb: str) -> None:
    if json:
        render.as_json(record)
    else:
        typer.echo(f"{verb} model {record.name} ({record.id}) at {record.path}, hash {record.content_hash}")


def _tree(found: Lineage) -> Tree:
    root = Tree(f"[bold]{found.name}[/bold]")
    node = root
    for i, step in enumerate(found.chain):
        node = node if i == 0 else node.add(f"[bold]{step.model.name}[/bold] ({step.via})")
        _add_step(node, step)
    if found.base and found.base != found.chain[-1].model.name:
        node.add(f"base: {found.base}")
    return root


def _add_step(node: Tree, step: ModelLineage) -> None:
    model = step.model
    node.add(f"{model.kind}, {model.status}, hash {(model.content_hash or '')[:12]}, {model.path}")
    if step.run is not None:
        run = step.run
        metrics = ", ".join(f"{k}={v}" for k, v in run.metrics.items()) or "no metrics"
        node.add(f"run {run.id}: {run.kind} {run.state} ({run.steps} points; {metrics})")
    elif step.run_missing:
        node.add(f"run: {step.run_missing}")
    for data in step.datasets:
        if data.missing and data.kind is None:
            node.add(f"dataset {data.ref}: {data.missing}")
            continue
        branch = node.add(f"dataset {data.ref}: {data.kind}, {data.row_count} rows")
        if data.missing:
            branch.add(data.missing)
        for kind, count in data.counts.items():
            more = " …" if count > len(data.sample_ids[kind]) else ""
            branch.add(f"{count} {kind}: {', '.join(data.sample_ids[kind])}{more}")
        for queue in data.labels:
            who = ", ".join(queue.annotators[:5]) + (" …" if len(queue.annotators) > 5 else "")
            branch.add(f"annotation queue {queue.queue}: {queue.feedback} consensus labels from {queue.labels} "
                       f"labels by {who or 'nobody'}")  # fmt: skip
