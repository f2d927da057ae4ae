"""``posttrain init`` and ``posttrain sql``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from posttrain import keys
from posttrain.cli import render
from posttrain.cli.options import JsonOption, ProjectOption, load, remote_for
from posttrain.project import init_project, resolve_root
from posttrain.records import SqlResult
from posttrain.warehouse import connect, sandbox


def init(
    directory: Annotated[
        Path | None, typer.Argument(help="Folder for the project (default: --project or cwd).")
    ] = None,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Create a project: posttrain.toml, the warehouse, artifacts/, and an admin key (shown once)."""
    created = init_project(resolve_root(directory or project))
    admin = keys.create_key(created, "admin", name="admin (posttrain init)")
    created.close()
    if json:
        render.as_json({"project": str(created.root), "admin_key": admin.key})
        return
    typer.echo(f"created posttrain project at {created.root}")
    typer.echo(f"admin API key (shown once, keep it safe): {admin.key}")


def sql(
    query: Annotated[str, typer.Argument(help="One read-only statement: SELECT (SHOW, DESCRIBE) or EXPLAIN SELECT.")],
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Run read-only SQL over the warehouse; statements that write are refused."""
    proj = load(project)
    remote = remote_for(proj)
    if remote is not None:
        result = SqlResult(**remote.call("POST", "/api/sql", json={"sql": query}))
    else:
        con = connect(proj.warehouse_path, read_only=True, busy_hint="wait for it to finish")
        try:
            con.execute("SET enable_external_access = false")  # the same walls as the server's
            result = sandbox.run_read_only(con, query, admin=True, max_rows=proj.settings.sql.max_rows)
        finally:
            con.close()
    if json:
        render.as_json([dict(zip(result.columns, row, strict=True)) for row in result.rows])
    else:
        render.table(result.columns, result.rows)
    if result.truncated:
        typer.echo(f"note: stopped at {len(result.rows):,} rows (setting sql.max_rows)", err=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command()(init)
    app.command()(sql)
