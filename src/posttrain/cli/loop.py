"""``posttrain loop run|status``: turn the flywheel and see what each turn did."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from posttrain import loop
from posttrain.cli import render
from posttrain.cli.options import JsonOption, ProjectOption, load, remote_for, through_server

app = typer.Typer(help="The flywheel loop: collect → datasets → train → gate → experiment → promote.",
                  no_args_is_help=True)  # fmt: skip
RecipeOption = Annotated[Path | None, typer.Option("--recipe", "-r", help="A recipe YAML (default: the built-in one).")]


@app.command()
def run(
    turns: Annotated[int, typer.Option(help="Turns to run (an unfinished turn is resumed first).")] = 1,
    recipe: RecipeOption = None,
    base: Annotated[str | None, typer.Option(help="The model serving every cohort before the first turn.")] = None,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Run turns of the loop; each step is recorded, so a killed run resumes where it stopped."""
    config = loop.load_recipe(recipe)
    if turns < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--turns")
    proj = load(project)
    remote = remote_for(proj)

    def say(step: str, message: str) -> None:
        render.console.print(f"[bold]{step:>10}[/bold]  {message}")

    if remote is None:
        with proj:
            done = [t.model_dump(mode="json") for t in loop.run(proj, config, turns, base=base, on_event=say)]
    else:  # the server owns the warehouse: the loop runs there; its job log has a line per step
        body = {"turns": turns, "recipe": config.model_dump(mode="json"), "base": base}
        started = remote.call("POST", "/api/loop/run", json=body)
        job = remote.follow_job(started, on_line=lambda line: say(*line.partition(": ")[::2]))
        done = (job.result or {}).get("turns", [])
    if json:
        render.as_json(done)
        return
    for turn in done:
        typer.echo(f"turn {turn['turn']}: {turn['state']}; serving {(turn.get('result') or {}).get('serving')}")


@app.command()
def status(
    loop_name: Annotated[str | None, typer.Option("--loop", help="Only this loop (a recipe's name).")] = None,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Show every turn: its state, window, serving models, steps with their times, and decisions."""
    turns = through_server(
        project,
        lambda proj: loop.status(proj, loop_name),
        lambda api: [loop.TurnRecord(**t) for t in api.call("GET", "/api/loop/turns",
                                                              params={"loop_name": loop_name} if loop_name else {})],
    )  # fmt: skip
    if json:
        render.as_json(turns)
        return
    rows: list[list[Any]] = []
    for t in turns:
        steps = " ".join(f"{s.step}:{s.state[0]}{'' if s.seconds is None else f'({s.seconds:.0f}s)'}" for s in t.steps)
        after = (t.result or {}).get("serving", {})
        rows.append([t.loop, t.turn, t.state, _fmt(t.serving), _fmt(after), steps, t.error or ""])
    render.table(["loop", "turn", "state", "serving before", "serving after", "steps", "error"], rows, title="loop")


def _fmt(mapping: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in mapping.items())
