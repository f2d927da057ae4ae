"""``posttrain curate train-safety|classifiers``: the safety classifiers dataset builds filter with."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from posttrain.cli import render
from posttrain.cli.options import JsonOption, ProjectOption, through_server
from posttrain.datasets import check_where
from posttrain.errors import InvalidInput

app = typer.Typer(
    help="Curation: train the safety classifier that the datasets' safety filter uses "
    "(the other stages are set per build: 'posttrain datasets build --curate').",
    no_args_is_help=True,
)


@app.command("train-safety")
def train_safety(
    name: Annotated[str, typer.Argument(help="The classifier's name.")],
    where: Annotated[
        str | None, typer.Option(help="One SQL condition over interactions 'i' limiting the examples.")
    ] = None,
    min_examples: Annotated[int, typer.Option(help="Examples each class (safe, unsafe) needs.")] = 20,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Train a safety classifier on flagged and labelled answers (flags, annotation labels 'unsafe'/'safe')."""
    from posttrain.curation import safety

    try:
        condition = check_where(where)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="where") from None
    body = {"name": name, "where": condition, "min_examples": min_examples}
    found: dict[str, Any] = through_server(
        project,
        lambda proj: safety.train_classifier(proj, name, where=condition, min_examples=min_examples).model_dump(
            mode="json"
        ),
        lambda api: api.call("POST", "/api/curate/safety", json=body),
    )
    if json:
        render.as_json(found)
        return
    metrics = ", ".join(f"{k} {v}" for k, v in (found.get("metrics") or {}).items())
    typer.echo(f"trained safety classifier {found['name']}: {found.get('examples')} ({metrics})")


@app.command()
def classifiers(project: ProjectOption = None, json: JsonOption = False) -> None:
    """List the trained safety classifiers, newest first."""
    from posttrain.curation import safety

    found: list[dict[str, Any]] = through_server(
        project,
        lambda proj: [c.model_dump(mode="json") for c in safety.list_classifiers(proj)],
        lambda api: api.call("GET", "/api/curate/safety"),
    )
    if json:
        render.as_json(found)
        return
    rows = [[c["name"], str(c.get("trained_at", ""))[:16], c.get("examples"), c.get("metrics")] for c in found]
    render.table(["name", "trained (UTC)", "examples", "metrics"], rows, title="Safety classifiers")
