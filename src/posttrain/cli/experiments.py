"""``posttrain experiments create|start|status|stop|promote|rollback|list``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from posttrain import experiments as lib
from posttrain.cli import render
from posttrain.cli.options import JsonOption, ProjectOption, load, through_server
from posttrain.cli.remote import Remote
from posttrain.errors import InvalidInput
from posttrain.project import Project

app = typer.Typer(
    help="Experiments: A/B test models on live traffic, analyse, promote or roll back.", no_args_is_help=True
)

NameArg = Annotated[str, typer.Argument(help="The experiment's name (see 'posttrain experiments list').")]


def _variant(text: str) -> lib.Variant:
    name, sep, rest = text.partition("=")
    model, sep2, share = rest.rpartition(":")
    if not (sep and sep2 and name and model):
        raise InvalidInput(f"--variant {text!r} is not NAME=MODEL:SHARE, e.g. control=base:0.5", field="variant")
    try:
        return lib.Variant(name=name, model=model, share=float(share))
    except ValueError as exc:
        raise InvalidInput(f"--variant {text!r}: SHARE must be a number in (0, 1]", field="variant") from exc


def _guardrail(text: str) -> lib.Guardrail:
    metric, _, margin = text.partition(":")
    if metric not in lib.METRICS:
        raise InvalidInput(f"--guardrail {text!r}: metric must be one of {', '.join(lib.METRICS)}", field="guardrail")
    try:
        return lib.Guardrail(metric=metric, margin=float(margin) if margin else None)  # type: ignore[arg-type]
    except ValueError as exc:
        raise InvalidInput(f"--guardrail {text!r}: MARGIN must be a number >= 0", field="guardrail") from exc


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="A name for the experiment.")],
    variant: Annotated[list[str], typer.Option(help="NAME=MODEL:SHARE; repeat; the first is the control.")],
    cohort: Annotated[list[str] | None, typer.Option(help="A targeted cohort; repeat; none means everyone.")] = None,
    metric: Annotated[lib.Metric, typer.Option(help="The primary metric.")] = "thumbs_up_rate",
    guardrail: Annotated[
        list[str] | None,
        typer.Option(help="METRIC[:MARGIN]: no worse by more than MARGIN (default 10% of the control's mean); repeat."),
    ] = None,
    min_samples: Annotated[int, typer.Option(help="Users per variant measured before a winner can be called.")] = 100,
    alpha: Annotated[float, typer.Option(help="Significance level.")] = 0.05,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Create a draft experiment from variants, cohorts, a primary metric and guardrails."""
    config = lib.ExperimentConfig(
        name=name,
        variants=[_variant(v) for v in variant],
        cohorts=cohort or [],
        metric=metric,
        guardrails=[_guardrail(g) for g in guardrail or []],
        min_samples=min_samples,
        alpha=alpha,
    )
    found = through_server(
        project,
        lambda proj: lib.create_experiment(proj, config),
        lambda api: lib.Experiment(**api.call("POST", "/api/experiments", json=config.model_dump(mode="json"))),
    )
    _echo(found, json, "created")


@app.command()
def start(name: NameArg, project: ProjectOption = None, json: JsonOption = False) -> None:
    """Start a draft experiment: users may now be assigned to it."""
    _echo(_act(project, name, "start", lib.start), json, "started")


@app.command()
def stop(name: NameArg, project: ProjectOption = None, json: JsonOption = False) -> None:
    """Stop assigning users to a running experiment."""
    _echo(_act(project, name, "stop", lib.stop), json, "stopped")


@app.command()
def status(name: NameArg, project: ProjectOption = None, json: JsonOption = False) -> None:
    """Analyse an experiment per variant and cohort; also write artifacts/experiments/NAME/status.html."""

    def local(proj: Project) -> tuple[lib.Analysis, Path]:
        analysis = lib.analyse(proj, name)
        return analysis, lib.write_status_page(proj, analysis, lib.timeline(proj, name))

    def remote(api: Remote) -> tuple[lib.Analysis, Path]:
        analysis = lib.Analysis(**api.call("GET", f"/api/experiments/{name}/analysis"))
        timeline = lib.Timeline(**api.call("GET", f"/api/experiments/{name}/timeline"))
        return analysis, lib.write_status_page(load(project), analysis, timeline)

    analysis, page = through_server(project, local, remote)
    if json:
        render.as_json(analysis)
        return
    rows = [_row(analysis, r) for r in analysis.variants + analysis.cohorts]
    columns = ["variant", "cohort", "users", analysis.metric, "95% CI", "effect", "p", "P(win)", "always-valid p"]
    render.table(columns, rows, title=f"{name}: {analysis.metric} ({analysis.direction} is better)")
    if analysis.srm is not None:
        flag = "MISMATCH" if analysis.srm.mismatch else "ok"
        typer.echo(f"sample ratio: {flag} (p = {analysis.srm.p_value:.3g})")
    typer.echo(f"wrote {page}")


@app.command()
def promote(
    name: NameArg,
    variant: Annotated[str | None, typer.Option(help="The variant to ship (default: the decided winner).")] = None,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Ship a variant: mark its model serving and the experiment promoted."""
    found = through_server(
        project,
        lambda proj: lib.promote(proj, name, variant),
        lambda api: lib.Experiment(**api.call("POST", f"/api/experiments/{name}/promote", json={"variant": variant})),
    )
    _echo(found, json, "promoted")


@app.command()
def decide(
    name: NameArg,
    apply: Annotated[bool, typer.Option("--apply", help="Carry out a promote or rollback decision.")] = False,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Analyse and decide: promote (wins, no guardrail worse in any cohort), roll back, or continue."""
    decision = through_server(
        project,
        lambda proj: lib.decide(proj, name, apply=apply),
        lambda api: lib.Decision(**api.call("POST", f"/api/experiments/{name}/decide", params={"apply": apply})),
    )
    if json:
        render.as_json(decision)
        return
    winner = f" {decision.variant}" if decision.variant else ""
    typer.echo(f"{name}: {decision.action}{winner}{' (applied)' if decision.applied else ''}")
    for reason in decision.reasons:
        typer.echo(f"  {reason}")


@app.command()
def rollback(name: NameArg, project: ProjectOption = None, json: JsonOption = False) -> None:
    """End an experiment without shipping; the control keeps serving."""
    _echo(_act(project, name, "rollback", lib.rollback), json, "rolled back")


@app.command("list")
def list_(project: ProjectOption = None, json: JsonOption = False) -> None:
    """List experiments, newest first."""
    found = through_server(
        project,
        lib.list_experiments,
        lambda api: [lib.Experiment(**e) for e in api.call("GET", "/api/experiments")],
    )
    if json:
        render.as_json(found)
        return
    rows = [[e.name, e.state, e.config.metric, ", ".join(v.name for v in e.config.variants), e.created_at]
            for e in found]  # fmt: skip
    render.table(["name", "state", "metric", "variants", "created_at"], rows, title="experiments")


def _row(analysis: lib.Analysis, row: lib.VariantStats) -> list[object]:
    s = row.metrics[analysis.metric]
    c = row.comparisons.get(analysis.metric)
    test = c.test if c else None
    ci = f"[{s.ci_low:.4g}, {s.ci_high:.4g}]" if s.ci_low is not None and s.ci_high is not None else ""
    return [
        row.variant,
        row.cohort or "(all)",
        row.users,  # the unit randomised, which the statistics are over (interactions: in --json)
        "" if s.mean is None else f"{s.mean:.4g}",
        ci,
        "" if test is None else f"{test.effect:+.4g}",
        "" if test is None else f"{test.p_value:.3g}",
        "" if c is None or c.chance_to_win is None else f"{c.chance_to_win:.2f}",
        "" if c is None or c.always_valid_p is None else f"{c.always_valid_p:.3g}",
    ]


def _act(
    project: Path | None, name: str, action: str, local: Callable[[Project, str], lib.Experiment]
) -> lib.Experiment:
    return through_server(
        project,
        lambda proj: local(proj, name),
        lambda api: lib.Experiment(**api.call("POST", f"/api/experiments/{name}/{action}")),
    )


def _echo(experiment: lib.Experiment, json: bool, verb: str) -> None:
    if json:
        render.as_json(experiment)
    else:
        typer.echo(f"{verb} experiment {experiment.name} ({experiment.id}): {experiment.state}")
