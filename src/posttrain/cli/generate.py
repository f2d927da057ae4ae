"""``posttrain generate``: sample completions for a prompts dataset and store them as interactions."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import Progress

from posttrain.cli import render
from posttrain.cli.options import JsonOption, ProjectOption, load


def generate(
    model: Annotated[str, typer.Option("--model", "-m", help="A registered causal-lm (see 'posttrain models list').")],
    prompts: Annotated[str, typer.Option(help="A prompts or eval dataset: NAME (latest) or NAME@VERSION.")],
    output: Annotated[str, typer.Option(help="Name of this output; interactions are tagged output:NAME.")],
    samples: Annotated[int, typer.Option("--samples", "-k", help="Completions per prompt (K).")],
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens per completion.")] = 32,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Sequences (prompts × samples) per generate call.")] = 64,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Sample completions from a local model for every prompt and store them as interactions."""
    from posttrain.models.generation import generate as run

    with load(project) as proj, Progress(console=render.console, transient=True, disable=json) as bar:
        task = bar.add_task("generating", total=None)
        report = run(
            proj, model=model, prompts=prompts, samples=samples, output=output, max_new_tokens=max_new_tokens,
            temperature=temperature, seed=seed, batch_size=batch_size,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )  # fmt: skip
    if json:
        render.as_json(report)
    else:
        typer.echo(
            f"stored {report.interactions} interactions ({report.prompts} prompts × {report.samples}) "
            f"from {report.model} on {report.dataset} as {report.tag} in {report.seconds:.1f} s (job {report.job_id})"
        )


def register(app: typer.Typer) -> None:
    """Add this module's command to the root app."""
    app.command()(generate)
