"""``posttrain capture import|export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from posttrain import capture as library
from posttrain.cli import render
from posttrain.cli.options import JsonOption, ProjectOption, load, remote_for
from posttrain.cli.remote import Remote
from posttrain.errors import InvalidInput
from posttrain.records import ImportReport

app = typer.Typer(
    help="Bulk capture: import JSONL records or OpenAI chat logs, export JSONL/Parquet.", no_args_is_help=True
)
KindOption = Annotated[str, typer.Option("--kind", help="interactions or feedback.")]


def _kind(value: str) -> library.Kind:
    if value not in ("interactions", "feedback"):
        raise InvalidInput(f"unknown kind {value!r}; choose interactions or feedback", field="kind")
    return value  # type: ignore[return-value]


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
        console=render.console,
    )


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="A JSONL file: one record (or OpenAI chat log) a line.")],
    kind: KindOption = "interactions",
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Bulk-load a JSONL file; records already stored (same id) are skipped. Exits 2 if every line is rejected."""
    proj = load(project)
    remote = remote_for(proj)
    with _progress() as progress:
        task = progress.add_task(f"importing {file.name}", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        if remote is not None:
            report = library.import_through(
                remote_sender(remote, _kind(kind)), file, kind=_kind(kind), on_progress=on_progress
            )
        else:
            with proj:
                report = library.import_file(proj, file, kind=_kind(kind), on_progress=on_progress)
    _show_import(report, json)
    if report.rejected and not (report.created or report.duplicates):
        raise InvalidInput(f"every line of {file} was rejected ({report.rejected}); nothing was imported")


def remote_sender(remote: Remote, kind: library.Kind) -> library.Sender:
    """Return a function that posts one batch of events to the server's capture API."""

    def send(events: list[dict[str, object]]) -> list[str]:
        body = remote.call("POST", f"/api/capture/{kind}", json={kind: events})
        return [r["status"] for r in body["results"]]

    return send


def _show_import(report: ImportReport, json: bool) -> None:
    if json:
        render.as_json(report)
        return
    typer.echo(
        f"imported {report.path}: {report.created} created, {report.duplicates} duplicates, "
        f"{report.rejected} rejected, {report.rows} rows in {report.seconds:.2f}s"
    )
    for line in report.errors:
        typer.echo(f"  {line}")


@app.command("export")
def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    format: Annotated[str, typer.Option("--format", "-f", help="jsonl or parquet.")] = "jsonl",
    kind: KindOption = "interactions",
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Write every interaction (or feedback event) to JSONL or Parquet, oldest first."""
    if format not in ("jsonl", "parquet"):
        raise InvalidInput(f"unknown format {format!r}; choose jsonl or parquet", field="format")
    fmt: Literal["jsonl", "parquet"] = format  # type: ignore[assignment]
    proj = load(project)
    remote = remote_for(proj)
    if remote is not None:
        with remote.stream_lines("/api/capture/export", kind=_kind(kind)) as response:
            report = library.export_stream(response.iter_bytes(), output, fmt=fmt)
    else:
        with proj:
            report = library.export_file(proj, output, kind=_kind(kind), fmt=fmt)
    if json:
        render.as_json(report)
    else:
        typer.echo(f"wrote {report.rows} {kind} to {report.path} ({report.format})")
