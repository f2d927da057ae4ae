"""``posttrain datasets build|list|show|report|export``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from posttrain import compute
from posttrain import datasets as library
from posttrain.cli import render
from posttrain.cli.options import JsonOption, ProjectOption, load, through_server
from posttrain.errors import InvalidInput
from posttrain.records import DatasetVersion

app = typer.Typer(
    help="Dataset versions: build them from the warehouse (sft, preference, prompts, eval), list, show, export.",
    no_args_is_help=True,
)
_COLUMNS = ["ref", "kind", "rows", "scrubbed", "hash", "created (UTC)"]
_KINDS = ("sft", "preference", "prompts", "eval")
_FORMATS = ("jsonl", "parquet", "hf")
RefArgument = Annotated[str, typer.Argument(help="NAME (the latest version) or NAME@VERSION.")]


def _kind(value: str) -> library.DatasetKind:
    if value not in _KINDS:
        raise InvalidInput(f"unknown dataset kind {value!r}; choose sft, preference, prompts or eval", field="kind")
    return value  # type: ignore[return-value]


@app.command()
def build(
    kind: Annotated[str, typer.Argument(help="sft, preference, prompts or eval.")],
    name: Annotated[str, typer.Argument(help="The dataset's name; each build adds a version.")],
    since: Annotated[datetime | None, typer.Option(help="Interactions at or after this time (UTC).")] = None,
    until: Annotated[datetime | None, typer.Option(help="Interactions before this time (UTC).")] = None,
    cohort: Annotated[list[str] | None, typer.Option(help="Only this cohort (repeatable).")] = None,
    model: Annotated[list[str] | None, typer.Option(help="Only responses of this model (repeatable).")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Interactions with any of these tags (repeatable).")] = None,
    source: Annotated[list[str] | None, typer.Option(help="Only feedback from user/annotator/judge/verifier.")] = None,
    where: Annotated[str | None, typer.Option(help="One SQL condition over interactions 'i'.")] = None,
    split: Annotated[str | None, typer.Option(help="'train': leave out the users an eval build holds out.")] = None,
    min_rating: Annotated[float | None, typer.Option(help="A rating at or above this accepts (default 4).")] = None,
    min_agreement: Annotated[
        float | None, typer.Option(help="Share of verdicts on identical answers that must agree (default 0.6; 0 off).")
    ] = None,
    include_edits: Annotated[bool, typer.Option(help="sft: edited responses become completions.")] = True,
    include: Annotated[list[str] | None, typer.Option(help="preference: choice, edit, accepted_vs_rejected.")] = None,
    max_pairs_per_prompt: Annotated[int | None, typer.Option(help="preference: pairs per prompt (default 2).")] = None,
    verifier: Annotated[str | None, typer.Option(help="prompts: the verifier name stored on each row.")] = None,
    answer_from: Annotated[
        str | None, typer.Option(help="'metadata.KEY' (default metadata.answer) or 'response'.")
    ] = None,
    fraction: Annotated[float | None, typer.Option(help="eval/split: share of users held out (default 0.1).")] = None,
    split_by: Annotated[str | None, typer.Option(help="eval/split: user_id or session_id.")] = None,
    seed: Annotated[int | None, typer.Option(help="eval/split: seed of the held-out hash.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="eval: drop prompts found in this version.")] = None,
    curate: Annotated[
        str | None,
        typer.Option(
            help="The curation recipe: a YAML/JSON file, or inline JSON such as "
            '\'{"dedup": {}, "select": {"fraction": 0.3}}\' '
            "(stages: pii, dedup, decontaminate, quality, safety, select)."
        ),
    ] = None,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Build the next version of a dataset from the warehouse, PII scrubbed and curated as --curate says."""
    config = library.BuildConfig.parse(
        since=since, until=until, cohort=cohort, model=model, tags=tag, source=source, where=where, split=split,
        min_rating=min_rating, min_agreement=min_agreement, include_edits=include_edits, include=include,
        max_pairs_per_prompt=max_pairs_per_prompt,
        verifier=verifier, answer_from=answer_from, fraction=fraction, split_by=split_by, seed=seed, exclude=exclude,
        curate=_curation_recipe(curate),
    )  # fmt: skip
    body = {"kind": _kind(kind), "name": name, "config": config.model_dump(mode="json", exclude_unset=True)}
    with render.stage_bars(json) as on_stage, compute.reporting(on_stage):
        version = through_server(
            project,
            lambda proj: library.build(proj, _kind(kind), name, config),
            lambda api: DatasetVersion(**api.call("POST", "/api/datasets/build", json=body)),
        )
    if json:
        render.as_json(version)
        return
    typer.echo(f"built {version.ref}: {version.row_count} rows, {version.scrubbed} PII values scrubbed")
    curation = version.stats.get("curation")
    if curation:
        removed = ", ".join(_stage_line(s) for s in curation["stages"])
        typer.echo(f"curation: {curation['rows_in']} rows in, {curation['rows_out']} kept ({removed or 'no stage'})")


def _stage_line(stage: dict[str, Any]) -> str:
    """Return ``dedup -25``, or ``pii 24 replaced`` for a stage that replaces values."""
    replaced = stage.get("details", {}).get("replaced")
    if isinstance(replaced, dict):
        return f"{stage['stage']} {sum(replaced.values())} replaced"
    return f"{stage['stage']} -{stage['removed']}"


def _curation_recipe(value: str | None) -> dict[str, Any] | None:
    """Return the curation recipe given inline (JSON) or as a YAML/JSON file; raise InvalidInput naming the fix."""
    if value is None:
        return None
    text = value
    if not value.lstrip().startswith("{"):
        try:
            text = Path(value).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"curate: cannot read {value}: {exc.strerror}", field="curate") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"curate: not valid YAML or JSON: {str(exc).splitlines()[0]}", field="curate") from None
    if not isinstance(loaded, dict):
        raise InvalidInput('curate: give a mapping of stages, e.g. {"dedup": {}}', field="curate")
    return loaded


@app.command("list")
def list_(project: ProjectOption = None, json: JsonOption = False) -> None:
    """List dataset versions, newest first."""
    found = through_server(
        project,
        library.list_versions,
        lambda api: [DatasetVersion(**v) for v in api.call("GET", "/api/datasets")],
    )
    if json:
        render.as_json(found)
    else:
        rows = [
            [v.ref, v.kind, v.row_count, v.scrubbed, v.content_hash[:12], f"{v.created_at:%Y-%m-%d %H:%M}"]
            for v in found
        ]
        render.table(_COLUMNS, rows, title="Dataset versions")


@app.command()
def show(
    ref: RefArgument,
    rows: Annotated[int, typer.Option("--rows", help="How many sample rows to show.")] = 5,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Show a version's manifest, stats and first rows."""
    found = through_server(
        project,
        lambda proj: library.preview(proj, ref, rows=rows),
        lambda api: library.DatasetPreview(**api.call("GET", f"/api/datasets/{ref}", params={"rows": rows})),
    )
    if json:
        render.as_json(found)
        return
    manifest = found.version.model_dump(mode="json", exclude={"name", "version"})
    manifest["stats"].pop("curation", None)  # shown as a table below
    render.as_json({"ref": found.version.ref, **manifest})
    for row in found.rows:
        render.as_json(row)
    _show_curation(found.version)


def _show_curation(version: DatasetVersion) -> None:
    """Print what each curation stage removed, with its examples."""
    curation = version.stats.get("curation")
    if not curation:
        return
    rows = [[s["stage"], s["rows_in"], s["removed"], f"{s['seconds']:.2f}", s.get("note") or ""]
            for s in curation["stages"]]  # fmt: skip
    strict = " (strict)" if curation.get("strict") else ""
    render.table(["stage", "rows in", "removed", "seconds", "note"], rows,
                 title=f"Curation{strict}: {curation['rows_in']} rows in, {curation['rows_out']} kept")  # fmt: skip
    for stage in curation["stages"]:
        for example in stage.get("examples", []):
            typer.echo(f"  {stage['stage']}: {example.get('reason') or ''} | {example.get('prompt', '')[:80]!r}")


@app.command()
def report(
    ref: RefArgument,
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")] = Path("curation.html"),
    project: ProjectOption = None,
) -> None:
    """Write a version's curation report (HTML with plots): removals per stage, embedding map, selection."""
    from posttrain.curation import report as reports

    page = through_server(
        project,
        lambda proj: reports.render(proj, ref),
        lambda api: api.text(f"/api/datasets/{ref}/report"),
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    typer.echo(f"wrote the curation report of {ref} to {output}")


@app.command()
def export(
    ref: RefArgument,
    output: Annotated[Path, typer.Option("--output", "-o", help="The file (jsonl, parquet) or folder (hf).")],
    format: Annotated[str, typer.Option("--format", "-f", help="jsonl, parquet or hf (save_to_disk).")] = "jsonl",
    project: ProjectOption = None,
) -> None:
    """Export a version as JSONL, Parquet or a Hugging Face dataset folder."""
    if format not in _FORMATS:
        raise InvalidInput(f"unknown format {format!r}; choose jsonl, parquet or hf", field="format")
    with load(project) as proj:
        path = library.export(proj, ref, format, output)  # type: ignore[arg-type]
    typer.echo(f"exported {ref} to {path}")
