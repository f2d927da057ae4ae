"""``posttrain compute status``: where the heavy stages run, and the Ray cluster's nodes."""

from __future__ import annotations

import typer

from posttrain.cli import render
from posttrain.cli.options import JsonOption, ProjectOption, load
from posttrain.compute.status import status as compute_status

app = typer.Typer(help="Compute: where builds, curation, evals and training run (local or a Ray cluster).",
                  no_args_is_help=True)  # fmt: skip


@app.command()
def status(project: ProjectOption = None, json: JsonOption = False) -> None:
    """Show the compute backend; on Ray, connect and list the cluster's nodes, CPUs and GPUs."""
    found = compute_status(load(project))
    if json:
        render.as_json(found)
        return
    typer.echo(f"backend: {found.backend}" + (f" at {found.address}" if found.address else " (this process)"))
    typer.echo(f"storage: {found.storage}")
    if found.backend == "ray":
        alive = [n for n in found.nodes if n.alive]
        typer.echo(f"cluster: {len(alive)} node(s) alive, {found.cpus:g} CPUs, {found.gpus:g} GPUs; "
                   f"stages use {found.workers} worker(s) by default")  # fmt: skip
        render.records(found.nodes, ["node_id", "address", "alive", "head", "cpus", "gpus"], title="nodes")
