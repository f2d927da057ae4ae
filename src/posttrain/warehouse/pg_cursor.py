"""DuckDB's cursor API over a PostgreSQL warehouse: the same call sites run on either.

posttrain's queries are written in DuckDB's dialect. On a PostgreSQL warehouse each statement is
translated once (cached) by sqlglot, a maintained SQL transpiler, and run through a psycopg 3
connection pool. What sqlglot does not map by itself is added here, in the tree:

- ``?`` placeholders are numbered in the order the *text* has them (sqlglot's own positional
  output follows the tree, which puts a CTE's or a ``LIMIT``'s placeholders elsewhere), and a value
  the translation repeats stays one value;
- ``arg_max(x, k)`` becomes ``(array_agg(x ORDER BY k DESC NULLS LAST))[1]`` (PostgreSQL has no
  arg_max), keeping a ``FILTER`` on the aggregate; ``arg_min`` likewise, ascending;
- ``hash(x)`` becomes ``hashtextextended(x::text, 0)`` (a 64-bit hash, as DuckDB's; the values differ);
- ``list_contains(list, x)`` becomes ``x = ANY(list)`` (sqlglot's CASE form leaves a placeholder untyped);
- ``contains(text, part)`` becomes ``strpos(text, part) > 0``;
- ``GROUP BY ALL`` becomes ``GROUP BY`` the positions of the columns that aggregate nothing;
- ``any_value(x)`` becomes ``(array_agg(x) FILTER (WHERE x IS NOT NULL))[1]`` (PostgreSQL 15 has no
  any_value; min would refuse booleans and json), ``min`` inside a window;
- every other ``%`` (in a literal, or the modulo operator) is doubled, as psycopg's placeholders need.

Values come back as DuckDB gives them: JSON as text, NUMERIC as float. A cursor outside a
transaction borrows a pool connection per statement (autocommit) and reads the whole result;
``begin()`` holds one connection until ``commit()`` or ``rollback()``. ``register(name, arrow)``
makes a temp table of that name on a connection the cursor then keeps until ``unregister``.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from posttrain.errors import Conflict, InvalidInput

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool  # noqa: F401

_PERCENT = re.compile(r"%(?!\([A-Za-z0-9_]+\)s)")
LOCK_TIMEOUT = "60s"  # a statement waiting on a row lock longer fails instead of hanging a request


@functools.lru_cache(maxsize=2048)
def translate(sql: str) -> tuple[str, int]:
    """Return ``sql`` (DuckDB's dialect) in PostgreSQL's, and how many ``?`` it had."""
    import sqlglot
    from sqlglot.errors import ErrorLevel
    from sqlglot.tokens import TokenType

    numbered, count = [], 0
    last = 0
    for token in sqlglot.Dialect.get_or_raise("duckdb").tokenize(sql):
        if token.token_type == TokenType.PLACEHOLDER and token.text == "?":
            count += 1
            numbered += [sql[last : token.start], f"${count}"]
            last = token.end + 1
    numbered.append(sql[last:])
    statements = sqlglot.parse("".join(numbered), read="duckdb")
    out = []
    for tree in statements:
        if tree is None:
            continue
        tree = tree.transform(_portable, copy=False)
        # every % but psycopg's own placeholders is doubled: in literals, and the modulo operator
        # what PostgreSQL cannot say raises (never a query quietly changed): ours fail in the tests,
        # a user's SQL gets a 400 naming the construct
        out.append(_PERCENT.sub("%%", tree.sql(dialect="postgres", unsupported_level=ErrorLevel.RAISE)))
    return "; ".join(out), count


def _portable(node: Any) -> Any:
    """Rewrite one node of a DuckDB tree into what PostgreSQL runs (see the module's list)."""
    from sqlglot import exp

    if isinstance(node, exp.Filter) and isinstance(node.this, (exp.ArgMax, exp.ArgMin)):
        return _arg_max(node.this, node.expression)
    if isinstance(node, (exp.ArgMax, exp.ArgMin)) and not isinstance(node.parent, exp.Filter):
        return _arg_max(node, None)
    if isinstance(node, exp.Anonymous) and str(node.this).lower() == "hash" and len(node.expressions) == 1:
        text = exp.Cast(this=node.expressions[0].copy(), to=exp.DataType.build("text"))
        return exp.Anonymous(this="hashtextextended", expressions=[text, exp.Literal.number(0)])
    if isinstance(node, exp.Group) and node.args.get("all") and isinstance(node.parent, exp.Select):
        keys = [
            exp.Literal.number(i + 1)
            for i, column in enumerate(node.parent.expressions)
            if not column.find(exp.AggFunc)
        ]
        return exp.Group(expressions=keys) if keys else None  # all aggregates: one group, as DuckDB
    if isinstance(node, exp.Contains):  # contains(text, part): strpos, which PostgreSQL has
        position = exp.Anonymous(this="strpos", expressions=[node.this.copy(), node.expression.copy()])
        return exp.GT(this=position, expression=exp.Literal.number(0))
    if isinstance(node, exp.ArrayContains):  # x = ANY(list): NULL when either is NULL, as WHERE wants
        return exp.EQ(this=node.expression.copy(), expression=exp.Any(this=exp.Paren(this=node.this.copy())))
    # any_value: DuckDB's skips NULLs, said or not (sqlglot wraps it in IgnoreNulls, even twice)
    if isinstance(node, exp.Filter) and isinstance(_bare(node.this), exp.AnyValue):
        return _any_value(_bare(node.this), node.expression, window=isinstance(node.parent, exp.Window))
    if isinstance(_bare(node), exp.AnyValue) and not isinstance(node.parent, exp.Filter | exp.IgnoreNulls):
        return _any_value(_bare(node), None, window=isinstance(node.parent, exp.Window))
    return node


def _bare(node: Any) -> Any:
    """Return ``node`` without the IgnoreNulls around it."""
    from sqlglot import exp

    while isinstance(node, exp.IgnoreNulls):
        node = node.this
    return node


def _first(agg: Any, known: Any, where: Any) -> Any:
    """Return ``(agg FILTER (WHERE [where AND] known))[1]``: ``where`` is the FILTER the call had."""
    from sqlglot import exp

    if where is not None:
        known = exp.and_(where.this.copy() if isinstance(where, exp.Where) else where.copy(), known)
    filtered = exp.Filter(this=agg, expression=exp.Where(this=known))
    return exp.Bracket(this=exp.Paren(this=filtered), expressions=[exp.Literal.number(1)], offset=1)


def _not_null(node: Any) -> Any:
    from sqlglot import exp

    return exp.Not(this=exp.Is(this=node.copy(), expression=exp.Null()))


def _any_value(node: Any, where: Any, *, window: bool) -> Any:
    """any_value(x) [FILTER (WHERE c)]: the first non-NULL x of the group, of any type (min has no boolean).

    In a window (``… OVER``) the aggregate cannot be subscripted: min there, which has no boolean or json.
    """
    from sqlglot import exp

    value = _bare(node.this)  # any_value(x IGNORE NULLS)
    if window:
        agg = exp.Min(this=value.copy())
        return agg if where is None else exp.Filter(this=agg, expression=where.copy())
    return _first(exp.ArrayAgg(this=value.copy()), _not_null(value), where)


def _arg_max(node: Any, where: Any) -> Any:
    from sqlglot import exp

    desc = isinstance(node, exp.ArgMax)
    ordered = exp.Order(expressions=[exp.Ordered(this=node.expression.copy(), desc=desc, nulls_first=False)])
    agg = exp.ArrayAgg(this=exp.Order(this=node.this.copy(), expressions=ordered.expressions))
    # DuckDB's arg_max skips the rows whose value or key is NULL (arg_max_null would not)
    return _first(agg, exp.and_(_not_null(node.this), _not_null(node.expression)), where)


class Pool:
    """The psycopg connection pool of one PostgreSQL warehouse, its connections set up as DuckDB's answers."""

    def __init__(self, url: str, *, max_size: int = 20) -> None:
        from psycopg_pool import ConnectionPool

        self.url = url
        self.pool: ConnectionPool = ConnectionPool(
            url, min_size=1, max_size=max_size, kwargs={"autocommit": True}, configure=configure,
            open=True, timeout=60, name="posttrain",
        )  # fmt: skip

    def cursor(self) -> PgCursor:
        return PgCursor(self)

    def close(self) -> None:
        self.pool.close()


def configure(con: psycopg.Connection) -> None:
    """Make a connection answer as DuckDB does: JSON as text, NUMERIC as float, ints sent as bigint, UTC."""
    from psycopg.types.numeric import FloatLoader, Int8Dumper
    from psycopg.types.string import TextLoader

    for name in ("json", "jsonb"):
        con.adapters.register_loader(name, TextLoader)
    con.adapters.register_loader("numeric", FloatLoader)
    con.adapters.register_dumper(int, Int8Dumper)  # else a small int is smallint, which `int = smallint` minds
    con.execute(f"SET TIME ZONE 'UTC'; SET lock_timeout = '{LOCK_TIMEOUT}'")


class PgCursor:
    """One thread's cursor on a PostgreSQL warehouse, with the DuckDB cursor methods posttrain calls."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._held: psycopg.Connection | None = None  # the connection of an open transaction
        self._pinned: psycopg.Connection | None = None  # kept while registered tables live on it
        self._temps: set[str] = set()
        self._rows: list[tuple[Any, ...]] = []
        self._at = 0
        self.description: list[Any] | None = None
        self.rowcount = -1

    @contextlib.contextmanager
    def borrow(self) -> Iterator[psycopg.Connection]:
        """Yield a connection for work of its own (capture's COPY): the open transaction's, else a pool one."""
        if self._held is not None:
            yield self._held
        else:
            with self._pool.pool.connection() as con:
                yield con

    def cursor(self) -> PgCursor:
        return PgCursor(self._pool)

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> PgCursor:
        text, count = translate(sql)
        values = _params(params, count)
        own = self._held or self._pinned
        if own is not None:
            self._run(own, text, values)
        else:
            with self._pool.pool.connection() as con:
                self._run(con, text, values)
        return self

    def register(self, name: str, table: pa.Table) -> PgCursor:
        """Make an Arrow table readable by this cursor's statements as ``name`` (a temp table, like DuckDB's view)."""
        if self._pinned is None:
            self._pinned = self._held or self._pool.pool.getconn()
        con = self._pinned
        columns = ", ".join(f'"{f.name}" {_pg_type(f.type)}' for f in table.schema)
        con.execute(f'DROP TABLE IF EXISTS "{name}"')
        con.execute(f'CREATE TEMP TABLE "{name}" ({columns})')
        names = table.schema.names
        with con.cursor() as cur, cur.copy(f'COPY "{name}" FROM STDIN') as copy:
            for row in table.to_pylist():
                copy.write_row([row[n] for n in names])
        self._temps.add(name)
        return self

    def unregister(self, name: str) -> PgCursor:
        if name in self._temps and self._pinned is not None:
            self._pinned.execute(f'DROP TABLE IF EXISTS "{name}"')
            self._temps.discard(name)
        if not self._temps:
            self._unpin()
        return self

    def _unpin(self) -> None:
        con, self._pinned = self._pinned, None
        if con is not None and con is not self._held:
            self._pool.pool.putconn(con)

    def sql(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> _Relation:
        """Run ``sql`` now; the result reads as DuckDB's relation does (to_arrow_table, to_arrow_reader, fetchall)."""
        self.execute(sql, params)
        names = [d.name for d in self.description or ()]
        return _Relation(names, self.fetchall())

    def _run(self, con: psycopg.Connection, text: str, values: dict[str, Any] | None) -> None:
        import psycopg

        try:
            with con.cursor() as cur:
                cur.execute(text, values, prepare=False)  # type: ignore[arg-type]
                self.description = list(cur.description) if cur.description else None
                self._rows = cur.fetchall() if cur.description else []
                self.rowcount = cur.rowcount
        except psycopg.errors.UniqueViolation as exc:
            raise Conflict(f"already stored: {exc.diag.message_detail or exc}") from None
        self._at = 0

    def batches(
        self, sql: str, params: Sequence[Any] | None = None, *, rows: int = 10_000
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield the result of ``sql`` as lists of row dicts, ``rows`` at a time (a server-side cursor)."""
        text, count = translate(sql)
        with self.borrow() as con, con.transaction(), con.cursor(name="posttrain_batches") as cur:
            cur.execute(text, _params(params, count))
            while chunk := cur.fetchmany(rows):
                names = [d.name for d in cur.description or ()]
                yield [dict(zip(names, row, strict=True)) for row in chunk]

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._at >= len(self._rows):
            return None
        self._at += 1
        return self._rows[self._at - 1]

    def fetchmany(self, size: int = 1) -> list[tuple[Any, ...]]:
        rows = self._rows[self._at : self._at + size]
        self._at += len(rows)
        return rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows = self._rows[self._at :]
        self._at = len(self._rows)
        return rows

    def begin(self) -> PgCursor:
        if self._held is not None:
            raise Conflict("a transaction is already open on this cursor")
        con = self._pinned or self._pool.pool.getconn()
        con.execute("BEGIN")
        self._held = con
        return self

    def commit(self) -> PgCursor:
        self._end("COMMIT")
        return self

    def rollback(self) -> PgCursor:
        self._end("ROLLBACK")
        return self

    def _end(self, word: str) -> None:
        con, self._held = self._held, None
        if con is None:
            return
        try:
            con.execute(word)
        finally:
            if con is not self._pinned:
                self._pool.pool.putconn(con)

    def close(self) -> None:
        if self._held is not None:
            self.rollback()
        for name in list(self._temps):
            self.unregister(name)
        self._unpin()

    def __del__(self) -> None:  # a cursor dropped with a table still registered gives its connection back
        with contextlib.suppress(Exception):
            if self._pinned is not None and self._held is None:
                self._pool.pool.putconn(self._pinned)


class _Relation:
    """A finished result, with the reading methods of a DuckDB relation that posttrain uses."""

    def __init__(self, names: list[str], rows: list[tuple[Any, ...]]) -> None:
        self._names, self._rows = names, rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def to_arrow_table(self) -> pa.Table:
        if not self._rows:
            return pa.table({n: pa.array([], pa.null()) for n in self._names})
        return pa.Table.from_pylist([dict(zip(self._names, row, strict=True)) for row in self._rows])

    def to_arrow_reader(self, batch_rows: int = 100_000) -> pa.RecordBatchReader:
        table = self.to_arrow_table()
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=batch_rows))


def _pg_type(kind: pa.DataType) -> str:
    """Return the PostgreSQL column type an Arrow type is stored as in a registered table."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _pg_type(kind.value_type) + "[]"
    if pa.types.is_boolean(kind):
        return "BOOLEAN"
    if pa.types.is_integer(kind):
        return "BIGINT"
    if pa.types.is_floating(kind):
        return "DOUBLE PRECISION"
    if pa.types.is_timestamp(kind):
        return "TIMESTAMP"
    if pa.types.is_date(kind):
        return "DATE"
    return "TEXT"  # strings, JSON text, nulls


def _params(params: Sequence[Any] | dict[str, Any] | None, count: int) -> dict[str, Any]:
    if params is None or (not params and count == 0):
        return {}  # never None: psycopg then reads the doubled % of the translation as one
    if isinstance(params, dict):
        return dict(params)
    if len(params) != count:
        raise InvalidInput(f"the statement has {count} placeholders; {len(params)} values were given")
    return {str(i + 1): value for i, value in enumerate(params)}
