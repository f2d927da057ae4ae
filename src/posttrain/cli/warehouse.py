"""``posttrain warehouse copy --to postgresql://…``: move a project's warehouse to PostgreSQL, checked."""

from __future__ import annotations

from typing import Annotated

import typer

from posttrain.cli import render
from posttrain.cli.options import JsonOption, ProjectOption, load
from posttrain.warehouse import postgres
from posttrain.warehouse.copy import copy_to_postgres

app = typer.Typer(help="Warehouse: move a project's warehouse to PostgreSQL (many servers on one database).",
                  no_args_is_help=True)  # fmt: skip


@app.command()
def copy(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="The PostgreSQL database, e.g. postgresql://user@host:5432/db (its password from PGPASSWORD "
            "or ~/.pgpass, so it stays out of the shell's history).",
        ),
    ],
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Copy every table into an empty PostgreSQL database, then compare each table's rows and checksum."""
    postgres.check_url(to, field="to")
    with load(project) as proj, render.stage_bars(json) as on_table:
        results = copy_to_postgres(proj, to, progress=on_table)
    if json:
        render.as_json(results)
        return
    render.records(results, ["table", "rows", "copied", "checksum", "matches"], title="copied")
    rows = sum(r.rows for r in results)
    typer.echo(f"copied {len(results)} tables, {rows} rows to {postgres.redacted(to)}; "
               "row counts and checksums match")  # fmt: skip
