"""Read-only SQL over the warehouse: what a user's query may be, and where it runs.

A user's SQL (``posttrain sql``, ``POST /api/sql``, any role) passes three independent walls:

1. **An allow-list parse.** Exactly one statement, a ``SELECT`` (``SHOW``/``DESCRIBE``/``SUMMARIZE``
   parse as one), or ``EXPLAIN [ANALYZE]`` of one. DuckDB's own parser serialises it
   (``json_serialize_sql`` refuses anything but a SELECT) and every table it reads is checked:
   table functions only from ``TABLE_FUNCTIONS`` (no ``query()``, ``read_*``, ``glob``,
   ``checkpoint()``), tables in ``SECRET_TABLES`` only for admins.
2. **A read-only transaction that is always rolled back.** Whatever slipped past the parse cannot
   write: DuckDB refuses every write in a ``READ ONLY`` transaction.
3. **No files.** The server (and the CLI's own connection) runs with ``enable_external_access =
   false``: no ``COPY``, ``ATTACH``, file reads or extension loads, whoever asks.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import duckdb
import orjson

from posttrain.errors import InvalidInput
from posttrain.records import SqlResult

# Tables that hold secrets (key hashes): invisible to every role but admin.
SECRET_TABLES = frozenset({"api_keys"})
# Table functions a query may call: generators and the catalog's own listings. Everything else
# (query, query_table, read_*, glob, checkpoint, duckdb_secrets ...) is refused by name.
TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "json_each",
        "json_tree",
        "duckdb_columns",
        "duckdb_constraints",
        "duckdb_functions",
        "duckdb_indexes",
        "duckdb_schemas",
        "duckdb_tables",
        "duckdb_types",
        "duckdb_views",
        "pragma_table_info",
        "pragma_show",
        "pragma_version",
    }
)
MAX_SQL_CHARS = 100_000
_EXPLAIN = re.compile(r"\s*EXPLAIN\s+(?:ANALY[SZ]E\s+)?(?P<inner>.*)\Z", re.IGNORECASE | re.DOTALL)


def _refuse(message: str) -> InvalidInput:
    return InvalidInput(message, field="sql")


def _one_statement(sql: str) -> duckdb.Statement:
    if len(sql) > MAX_SQL_CHARS:
        raise _refuse(f"SQL is {len(sql):,} characters; the limit is {MAX_SQL_CHARS:,}")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise _refuse(f"SQL does not parse: {exc}") from None
    if len(statements) != 1:
        raise _refuse("give exactly one SQL statement")
    return statements[0]


def select_text(sql: str) -> str:
    """Return the SELECT a statement runs: the statement itself, or what an EXPLAIN explains."""
    kind = _one_statement(sql).type.name
    if kind == "SELECT":
        return sql
    if kind != "EXPLAIN":
        raise _refuse(f"SQL here is read-only; {kind} statements are refused (use SELECT or EXPLAIN SELECT)")
    match = _EXPLAIN.match(sql)
    if match is None:
        raise _refuse("put EXPLAIN first, before any comment, as in EXPLAIN SELECT ...")
    inner = match.group("inner")
    if _one_statement(inner).type.name != "SELECT":
        raise _refuse("EXPLAIN is allowed of a SELECT only")
    return inner


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _table_name(node: dict[str, Any]) -> str:
    return str(node.get("table_name") or "").strip('"').lower()


def check_tables(cur: duckdb.DuckDBPyConnection, select: str, *, admin: bool) -> None:
    """Refuse a SELECT that calls a table function off the list or reads a secret table (below admin)."""
    parsed = orjson.loads(cur.execute("SELECT json_serialize_sql(?)", [select]).fetchone()[0])  # type: ignore[index]
    if parsed.get("error"):
        raise _refuse(f"SQL here is read-only: {parsed.get('error_message', 'only SELECT is allowed')}")
    for node in _nodes(parsed["statements"]):
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            name = str(node.get("function", {}).get("function_name", "")).lower()
            if name not in TABLE_FUNCTIONS:
                raise _refuse(
                    f"table function {name}() is not allowed here; allowed: {', '.join(sorted(TABLE_FUNCTIONS))}"
                )
        elif kind in ("BASE_TABLE", "SHOW_REF") and not admin and _table_name(node) in SECRET_TABLES:
            raise _refuse(f"table {_table_name(node)} holds secrets; only an admin key may read it")


def run_read_only(cur: Any, sql: str, *, admin: bool = False, max_rows: int = 10_000) -> SqlResult:
    """Run one checked statement in a read-only transaction that is always rolled back.

    ``cur`` is a DuckDB cursor, or a PostgreSQL warehouse's ``pg_reader.ReaderCursor``.
    """
    select = select_text(sql)
    if not isinstance(cur, duckdb.DuckDBPyConnection):  # PostgreSQL: the same parse, then a reader role
        parser = duckdb.connect()
        try:
            check_tables(parser, select, admin=admin)
        finally:
            parser.close()
        columns, values, truncated = cur.run(sql, admin=admin, max_rows=max_rows)
        return SqlResult(columns=columns, rows=values, truncated=truncated)
    cur.execute("BEGIN TRANSACTION READ ONLY")
    try:
        check_tables(cur, select, admin=admin)
        try:
            result = cur.execute(sql)
            rows = result.fetchmany(max_rows + 1)
        except duckdb.InterruptException:
            raise
        except duckdb.Error as exc:
            raise _refuse(f"SQL failed: {exc}") from None
        description = result.description or []
    finally:
        _rollback(cur)
    decoders = [_JSON_DECODERS.get(str(d[1])) for d in description]
    return SqlResult(
        columns=[d[0] for d in description],
        rows=[_decoded(decoders, row) for row in rows[:max_rows]],
        truncated=len(rows) > max_rows,
    )


def _decoded(decoders: list[Callable[[Any], Any] | None], row: tuple[Any, ...]) -> list[Any]:
    return [v if f is None or v is None else f(v) for f, v in zip(decoders, row, strict=True)]


# DuckDB hands JSON columns (messages, metadata ...) to Python as text; a result carries them as JSON.
_JSON_DECODERS: dict[str, Callable[[Any], Any]] = {
    "JSON": orjson.loads,
    "JSON[]": lambda values: [None if v is None else orjson.loads(v) for v in values],
}


def row_limit(limit: int | None, max_rows: int) -> int:
    """Return the rows a query may return: ``limit`` if given, refused above the setting ``sql.max_rows``."""
    if limit is None:
        return max_rows
    if not 1 <= limit <= max_rows:
        raise InvalidInput(
            f"limit {limit}: give 1 to {max_rows:,} rows (the setting sql.max_rows is the most)",
            field="limit",
        )
    return limit


def first_rows(result: SqlResult, limit: int | None) -> SqlResult:
    """Return ``result`` cut to its first ``limit`` rows, marked truncated if rows were cut."""
    if limit is None or len(result.rows) <= limit:
        return result
    return SqlResult(columns=result.columns, rows=result.rows[:limit], truncated=True)


def _rollback(cur: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(duckdb.Error):  # an interrupted or failed transaction may already be gone
        cur.execute("ROLLBACK")


def check_where(where: str) -> None:
    """Refuse a ``WHERE`` condition that is not one expression (no ``); DROP ...`` smuggled in)."""
    select_text(f"SELECT 1 FROM interactions i WHERE ({where})")
