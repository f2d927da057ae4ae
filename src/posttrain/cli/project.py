"""``posttrain init`` and ``posttrain sql``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
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
    warehouse: Annotated[
        str | None,
        typer.Option(
            "--warehouse",
            help="postgresql://user@host:5432/db: keep the records in this PostgreSQL database, which any number "
            "of servers share (written to posttrain.toml as [warehouse] url); default: the project's DuckDB file.",
        ),
    ] = None,
    json: JsonOption = False,
) -> None:
    """Create a project: posttrain.toml, the warehouse, artifacts/, and an admin key (shown once).

    With --warehouse naming a PostgreSQL database that already holds an admin key (a second server
    joining the team's warehouse), no new key is made: the team's keys work on every server.
    """
    created = init_project(resolve_root(directory or project), warehouse_url=warehouse)
    joined = warehouse is not None and keys.has_admin(created)
    admin = None if joined else keys.create_key(created, "admin", name="admin (posttrain init)")
    created.close()
    if json:
        render.as_json({"project": str(created.root), "admin_key": admin.key if admin else None})
        return
    typer.echo(f"created posttrain project at {created.root}")
    if admin is None:
        typer.echo(f"joined the warehouse at {created.warehouse_name}; its API keys work here")
    else:
        typer.echo(f"admin API key (shown once, keep it safe): {admin.key}")


def sql(
    query: Annotated[str, typer.Argument(help="One read-only statement: SELECT (SHOW, DESCRIBE) or EXPLAIN SELECT.")],
    limit: Annotated[
        int | None, typer.Option("--limit", help="Most rows to return (at most the setting sql.max_rows).")
    ] = None,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Run read-only SQL over the warehouse; statements that write are refused.

    JSON columns (messages, metadata) print as JSON; a note on stderr says when the row limit cut the result.
    """
    proj = load(project)
    max_rows = sandbox.row_limit(limit, proj.settings.sql.max_rows)
    remote = remote_for(proj)
    if remote is not None:
        body = {"sql": query} if limit is None else {"sql": query, "limit": limit}
        result = SqlResult(**remote.call("POST", "/api/sql", json=body))
    elif proj.is_postgres:
        from posttrain.warehouse.pg_reader import ReaderCursor

        seconds = proj.settings.sql.admin_timeout_seconds
        reader = ReaderCursor(proj.settings.warehouse.url, proj.cursor(), timeout_seconds=seconds)  # type: ignore[arg-type]
        try:
            result = sandbox.run_read_only(reader, query, admin=True, max_rows=max_rows)
        finally:
            proj.close()
    else:
        con = connect(proj.warehouse_path, read_only=True, busy_hint="wait for it to finish")
        try:
            con.execute("SET enable_external_access = false")  # the same walls as the server's
            result = sandbox.run_read_only(con, query, admin=True, max_rows=max_rows)
        finally:
            con.close()
    if json:
        render.as_json([dict(zip(result.columns, row, strict=True)) for row in result.rows])
    else:
        render.table(result.columns, [[_cell(v) for v in row] for row in result.rows])
    if result.truncated:
        why = "--limit" if limit is not None else "setting sql.max_rows"
        typer.echo(f"note: stopped at {len(result.rows):,} rows ({why}); there are more", err=True)


def _cell(value: object) -> object:
    """Show a JSON value (a decoded JSON column) as JSON in a table, not as Python's repr."""
    return orjson.dumps(value).decode() if isinstance(value, dict | list) else value


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command()(init)
    app.command()(sql)
