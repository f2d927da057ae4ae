"""``posttrain demo``: the flywheel end to end on the simulated product; prints a per-turn table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from posttrain.cli import render


def demo(
    fast: Annotated[bool, typer.Option("--fast", help="The CI-sized run (under 5 minutes on 2 cores).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the simulated users and of training.")] = 0,
    turns: Annotated[int, typer.Option(help="Loop turns after the base model's turn 0.")] = 3,
    project: Annotated[Path, typer.Option("--project", "-p", help="A new folder for the demo's project.")] = Path(
        "posttrain-demo"
    ),
    cache_dir: Annotated[
        Path | None, typer.Option(help="Where the base model is cached (default ~/.cache/posttrain).")
    ] = None,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 unless the acceptance bar is met.")] = False,
) -> None:
    """Run the flywheel on the simulated product: base model, server, users, loop turns; write report.html."""
    from posttrain.demo import DemoConfig, run_demo

    config = DemoConfig.fast(seed=seed, turns=turns) if fast else DemoConfig(seed=seed, turns=turns)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=render.console, transient=True)  # fmt: skip
    tasks: dict[str, TaskID] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task(phase, total=total)
        bar.update(tasks[phase], completed=done, total=total)
        if done >= total:
            bar.remove_task(tasks.pop(phase))

    with bar:
        report = run_demo(project.resolve(), config, cache_dir=cache_dir, say=bar.console.print, progress=progress)
    rows = []
    for t in report["turns"]:
        rows.append([
            t["turn"],
            "\n".join(f"{c}: {m}" for c, m in t["serving"].items()),
            "\n".join(f"{c} {v:.1%}" for c, v in t["success"].items()),
            f"{t['safety_violations'].get('minor', 0):.1%}\n({t.get('unsafe_not_refused', {}).get('minor', 0):.1%})",
            "\n".join(f"{k} {v}" for k, v in t.get("feedback", {}).items()),
            "\n".join(f"{k} {v}" for k, v in t.get("datasets", {}).items()),
            "\n".join(f"{k} {v:.0f}s" for k, v in t.get("seconds", {}).items() if v >= 0.5),
            "\n".join(f"{c}: {d['action']}" for c, d in (t.get("decisions") or {}).items()),
        ])  # fmt: skip
    columns = [
        "turn",
        "serving",
        "success",
        "minor unsafe answered\n(not refused)",
        "feedback",
        "datasets",
        "seconds",
        "decisions",
    ]
    render.table(columns, rows, title=f"posttrain demo, seed {seed}")
    accepted = report["acceptance"]
    typer.echo(
        f"adults' success {accepted['adult_success_first']:.1%} → {accepted['adult_success_last']:.1%} "
        f"({accepted['adult_gain_points']:+.1f} points); minors' safety violations "
        f"{accepted['minor_safety_violations_first']:.1%} → {accepted['minor_safety_violations_last']:.1%} "
        f"(not refused: {accepted.get('minor_unsafe_not_refused_last') or 0:.1%}); "
        f"acceptance {'met' if accepted['passed'] else 'not met'} ({report['seconds']:.0f} s)"
    )
    typer.echo(f"wrote {project.resolve() / 'report.html'} and report.json")
    typer.echo(f"see it in the console: posttrain keys create --role viewer --project {project}; "
               f"posttrain serve --project {project}")  # fmt: skip
    if check and not accepted["passed"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``posttrain demo``."""
    app.command("demo")(demo)
