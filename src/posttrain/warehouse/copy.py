"""``posttrain warehouse copy --to postgresql://…``: move a project's DuckDB warehouse to PostgreSQL.

The target gets the same migrations first (``postgres.migrate``), must hold no posttrain rows, and
receives every table in one transaction through PostgreSQL's ``COPY … FROM STDIN`` (psycopg's copy
support): either every table arrives or none does. Then both sides are read back and compared per
table: the row count and a checksum over the rows, independent of their order (each row rendered
the same way from either engine: JSON parsed and re-serialised with sorted keys, timestamps in ISO
form, floats by ``repr``), so a difference in any value of any row shows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from posttrain.errors import Conflict, JobFailed
from posttrain.warehouse import pg_cursor, postgres

if TYPE_CHECKING:
    import duckdb

    from posttrain.project import Project

BATCH = 5_000  # rows read from DuckDB at a time
CopyProgress = Callable[[str, int, int], None]  # (table, rows copied, rows in the table)


class TableCopy(BaseModel):
    """One table as copied: its rows on each side and whether their checksums agree."""

    table: str
    rows: int
    copied: int
    checksum: str
    matches: bool


def copy_to_postgres(project: Project, url: str, *, progress: CopyProgress | None = None) -> list[TableCopy]:
    """Copy every table of ``project``'s warehouse into the PostgreSQL database at ``url``; return the check."""
    postgres.check_url(url, field="to")
    source = project.cursor()
    tables = _tables(source)
    with postgres.connect(url, autocommit=True) as target:  # each transaction() block is one
        postgres.migrate(target)
        _refuse_rows(target, tables)
        with target.transaction():
            for table in tables:
                _copy_table(source, target, table, progress)
        pg_cursor.configure(target)  # JSON back as text, as DuckDB gives it (a JSON string stays quoted)
        results = [_check(source, target, table) for table in tables]
    bad = [r.table for r in results if not (r.matches and r.rows == r.copied)]
    if bad:
        raise JobFailed(f"the copy differs from the warehouse in {', '.join(bad)}; the target keeps what arrived")
    return results


def _tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Return the warehouse's tables (all but the migrations' own record, which the target makes itself)."""
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' AND NOT temporary "
        "AND table_name <> 'schema_migrations' ORDER BY table_name"
    ).fetchall()
    return [row[0] for row in rows]


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    return [(row[0], row[1]) for row in con.execute(f'DESCRIBE "{table}"').fetchall()]


def _refuse_rows(target: Any, tables: Sequence[str]) -> None:
    """Raise Conflict when the target already holds rows in one of the tables (copy into an empty one)."""
    with target.transaction():
        for table in tables:
            exists = target.execute("SELECT to_regclass(%s) IS NOT NULL", [table]).fetchone()[0]
            if not exists:
                raise Conflict(f"the target has no table {table}: its migrations differ from this warehouse's",
                               field="to")  # fmt: skip
            count = target.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            if count:
                raise Conflict(
                    f"the target already holds {count} rows in {table}; copy into an empty database", field="to"
                )


def _copy_table(source: duckdb.DuckDBPyConnection, target: Any, table: str, progress: CopyProgress | None) -> None:
    columns = [name for name, _ in _columns(source, table)]
    total = source.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]  # type: ignore[index]
    names = ", ".join(f'"{name}"' for name in columns)
    done = 0
    with target.cursor().copy(f'COPY "{table}" ({names}) FROM STDIN') as copy:
        for batch in _batches(source, f'SELECT {names} FROM "{table}"'):
            for row in batch:
                copy.write_row(row)
            done += len(batch)
            if progress is not None:
                progress(table, done, total)
    if progress is not None and not total:
        progress(table, 0, 0)


def _batches(con: duckdb.DuckDBPyConnection, query: str) -> Iterator[list[tuple[Any, ...]]]:
    cur = con.cursor()
    cur.execute(query)
    while batch := cur.fetchmany(BATCH):
        yield batch


def _check(source: duckdb.DuckDBPyConnection, target: Any, table: str) -> TableCopy:
    """Read ``table`` back from both sides; compare counts and order-independent checksums."""
    columns = _columns(source, table)
    json_columns = [kind.upper() == "JSON" for _, kind in columns]
    names = ", ".join(f'"{name}"' for name, _ in columns)
    query = f'SELECT {names} FROM "{table}"'
    here = _checksum((row for batch in _batches(source, query) for row in batch), json_columns)
    with target.transaction(), target.cursor(name=f"check_{table}") as cur:  # server-side: streamed
        cur.itersize = BATCH
        cur.execute(query)
        there = _checksum(cur, json_columns)
    return TableCopy(table=table, rows=here[0], copied=there[0], checksum=there[1], matches=here[1] == there[1])


def _checksum(rows: Iterable[Sequence[Any]], json_columns: Sequence[bool]) -> tuple[int, str]:
    """Return the row count and a checksum of the rows, whatever their order."""
    digests = sorted(
        hashlib.sha256(json.dumps([_canonical(v, j) for v, j in zip(row, json_columns, strict=True)]).encode()).digest()
        for row in rows
    )
    return len(digests), hashlib.sha256(b"".join(digests)).hexdigest()[:16]


def _canonical(value: Any, is_json: bool) -> Any:
    if value is None:
        return None
    if is_json:
        parsed = json.loads(value) if isinstance(value, str) else value
        return json.dumps(parsed, sort_keys=True, separators=(",", ":"))
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list | tuple):
        return [_canonical(v, False) for v in value]
    return value
