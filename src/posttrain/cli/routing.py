"""``posttrain routes list|add|cohort|remove``: what the gateway serves to whom."""

from __future__ import annotations

from typing import Annotated

import typer

from posttrain import routing
from posttrain.cli import render
from posttrain.cli.options import JsonOption, ProjectOption, through_server

app = typer.Typer(
    help="Routes: send cohorts (minors, a region, a plan) to a model or an experiment; cohort rules.",
    no_args_is_help=True,
)
ReplaceOption = Annotated[bool, typer.Option("--replace", help="Replace a rule of the same name, keeping its place.")]


@app.command("list")
def list_(project: ProjectOption = None, json: JsonOption = False) -> None:
    """List cohort rules and routes in the order the gateway tries them."""
    table = through_server(project, routing.table, lambda api: routing.RoutingTable(**api.call("GET", "/api/routes")))
    if json:
        render.as_json(table)
        return
    render.table(["name", "cohort", "when"], [[r.name, r.cohort, r.condition] for r in table.cohort_rules],
                 title="cohort rules")  # fmt: skip
    rows = [[r.name, r.cohort or "(any)", r.requested or "(any)", r.model or "", r.experiment or ""]
            for r in table.routes]  # fmt: skip
    render.table(["name", "cohort", "requested", "model", "experiment"], rows, title="routes")


@app.command()
def add(
    name: Annotated[str, typer.Argument(help="A name for the route.")],
    model: Annotated[str | None, typer.Option(help="Serve these requests with this model.")] = None,
    experiment: Annotated[str | None, typer.Option(help="... or with this experiment.")] = None,
    cohort: Annotated[str | None, typer.Option(help="Only requests from this cohort (default: every cohort).")] = None,
    requested: Annotated[
        str | None, typer.Option(help="Only requests asking for this model name (default: any; may be an alias).")
    ] = None,
    replace: ReplaceOption = False,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Add a route, e.g. 'posttrain routes add minors --cohort minor --model safe-model'."""
    route = routing.RouteRule(name=name, cohort=cohort, requested=requested, model=model, experiment=experiment)
    stored = through_server(
        project,
        lambda proj: routing.add_route(proj, route, replace=replace),
        lambda api: routing.RouteRule(
            **api.call("POST", "/api/routes", params={"replace": replace}, json=route.model_dump(mode="json"))
        ),
    )
    if json:
        render.as_json(stored)
    else:
        typer.echo(f"route {stored.name}: {stored.describe()}")


@app.command()
def cohort(
    name: Annotated[str, typer.Argument(help="A name for the rule.")],
    cohort: Annotated[str, typer.Option(help="The cohort requests matching the rule belong to.")],
    when: Annotated[str, typer.Option(help='A condition on request metadata, e.g. "age < 18".')],
    replace: ReplaceOption = False,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Add a cohort rule: requests whose metadata satisfy --when (and name no cohort) join --cohort."""
    rule = routing.CohortRule(name=name, cohort=cohort, condition=when)
    stored = through_server(
        project,
        lambda proj: routing.add_cohort_rule(proj, rule, replace=replace),
        lambda api: routing.CohortRule(
            **api.call("POST", "/api/routes/cohorts", params={"replace": replace}, json=rule.model_dump(mode="json"))
        ),
    )
    if json:
        render.as_json(stored)
    else:
        typer.echo(f"cohort rule {stored.name}: {stored.condition} → cohort {stored.cohort}")


@app.command()
def remove(
    name: Annotated[str, typer.Argument(help="The route or cohort rule to remove.")],
    project: ProjectOption = None,
) -> None:
    """Remove a route or a cohort rule."""
    kind = through_server(
        project, lambda proj: routing.remove(proj, name), lambda api: api.call("DELETE", f"/api/routes/{name}")["kind"]
    )
    typer.echo(f"removed {kind} {name}")
