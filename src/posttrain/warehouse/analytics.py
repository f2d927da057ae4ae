"""Analytical reads on DuckDB whichever the warehouse: a PostgreSQL warehouse's tables copied out.

Dataset builds, curation and annotation sampling are written as DuckDB SQL over whole tables
(Arrow registration, ``QUALIFY``, JSON and list functions). On the DuckDB warehouse they run on a
cursor of it. On a PostgreSQL warehouse, :func:`duckdb_over` gives an in-memory DuckDB holding
the same schema (the same migrations) and the tables the statement names, streamed out of
PostgreSQL through a server-side cursor in batches of Arrow rows: PostgreSQL serves the many
small writes of many servers, DuckDB the few large scans of one job. Writes never go here: they go
through ``project.cursor()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

if TYPE_CHECKING:
    from posttrain.project import Project

BATCH_ROWS = 50_000


def tables_named(sql: str) -> set[str]:
    """Return the tables a DuckDB statement reads (CTE names left out)."""
    import sqlglot
    from sqlglot import exp

    names: set[str] = set()
    ctes: set[str] = set()
    try:
        trees = sqlglot.parse(sql, read="duckdb")
    except sqlglot.errors.SqlglotError:  # a statement sqlglot cannot read: every table, to be safe
        return {"*"}
    for tree in trees:
        if tree is None:
            continue
        ctes |= {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
        names |= {table.name.lower() for table in tree.find_all(exp.Table) if table.name}
    return names - ctes


@contextlib.contextmanager
def duckdb_over(project: Project, *statements: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """Yield a DuckDB cursor on which ``statements`` read the warehouse's current rows.

    The DuckDB warehouse: a cursor of it. PostgreSQL: a private in-memory DuckDB with the tables
    the statements name copied in (a snapshot as of the copy), closed at the end.
    """
    if not project.is_postgres:
        yield project.cursor()
        return
    from posttrain.warehouse.schema import migrate

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        migrate(con)
        stored = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        stored.discard("schema_migrations")  # made by the migrations just run
        named = set().union(*(tables_named(sql) for sql in statements))
        wanted = stored if "*" in named else named & stored
        reader = project.cursor()
        for table in sorted(wanted):
            for rows in reader.batches(f'SELECT * FROM "{table}"', rows=BATCH_ROWS):  # type: ignore[attr-defined]
                con.register("_batch", pa.Table.from_pylist(rows))
                con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM _batch')
                con.unregister("_batch")
        con.execute("SET enable_external_access = false")  # a user's condition reads no file, as on the server
        yield con
    finally:
        con.close()
