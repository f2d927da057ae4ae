"""DuckDB's cursor API over a PostgreSQL warehouse: the same call sites run on either.

posttrain's queries are written in DuckDB's dialect. On a PostgreSQL warehouse each statement is
translated once (cached) by sqlglot, a maintained SQL transpiler, and run through a psycopg 3
connection pool. What sqlglot does not map by itself is added here, in the tree:

- ``?`` placeholders are numbered in the order the *text* has them (sqlglot's own positional
  output follows the tree, which puts a CTE's or a ``LIMIT``'s placeholders elsewhere), and a value
  the translation repeats stays one value;
- ``arg_max(x, k)`` becomes ``(array_agg(x ORDER BY k DESC NULLS LAST))[1]`` (PostgreSQL has no
  arg_max), keeping a ``FILTER`` on the aggregate;
- ``list_contains(list, x)`` becomes ``x = ANY(list)`` (sqlglot's CASE form leaves a placeholder untyped);
- ``GROUP BY ALL`` becomes ``GROUP BY`` the positions of the columns that aggregate nothing;
- ``any_value`` becomes ``min`` (PostgreSQL 15 has no any_value);
- a ``%`` in a literal is doubled, as psycopg's placeholders need.

Values come back as DuckDB gives them: JSON as text, NUMERIC as float. A cursor outside a
transaction borrows a pool connection per statement (autocommit) and reads the whole result;
``begin()`` holds one connection until ``commit()`` or ``rollback()``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from posttrain.errors import Conflict, InvalidInput

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool  # noqa: F401

LOCK_TIMEOUT = "60s"  # a statement waiting on a row lock longer fails instead of hanging a request


@functools.lru_cache(maxsize=2048)
def translate(sql: str) -> tuple[str, int]:
    """Return ``sql`` (DuckDB's dialect) in PostgreSQL's, and how many ``?`` it had."""
    import sqlglot
    from sqlglot import exp
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
        for literal in tree.find_all(exp.Literal):
            if literal.is_string and "%" in literal.this:
                literal.set("this", literal.this.replace("%", "%%"))
        out.append(tree.sql(dialect="postgres"))
    return "; ".join(out), count


def _portable(node: Any) -> Any:
    """Rewrite one node of a DuckDB tree into what PostgreSQL runs (see the module's list)."""
    from sqlglot import exp

    if isinstance(node, exp.Filter) and isinstance(node.this, exp.ArgMax):
        return _arg_max(node.this, node.expression)
    if isinstance(node, exp.ArgMax) and not isinstance(node.parent, exp.Filter):
        return _arg_max(node, None)
    if isinstance(node, exp.Group) and node.args.get("all") and isinstance(node.parent, exp.Select):
        keys = [
            exp.Literal.number(i + 1)
            for i, column in enumerate(node.parent.expressions)
            if not column.find(exp.AggFunc)
        ]
        return exp.Group(expressions=keys)
    if isinstance(node, exp.ArrayContains):  # x = ANY(list): NULL when either is NULL, as WHERE wants
        return exp.EQ(this=node.expression.copy(), expression=exp.Any(this=exp.Paren(this=node.this.copy())))
    if isinstance(node, exp.AnyValue):
        return exp.Min(this=node.this)
    return node


def _arg_max(node: Any, where: Any) -> Any:
    from sqlglot import exp

    ordered = exp.Order(expressions=[exp.Ordered(this=node.expression.copy(), desc=True, nulls_first=False)])
    agg: Any = exp.ArrayAgg(this=exp.Order(this=node.this.copy(), expressions=ordered.expressions))
    if where is not None:
        agg = exp.Filter(this=agg, expression=where.copy())
    return exp.Bracket(this=exp.Paren(this=agg), expressions=[exp.Literal.number(1)], offset=1)


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
        if self._held is not None:
            self._run(self._held, text, values)
        else:
            with self._pool.pool.connection() as con:
                self._run(con, text, values)
        return self

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
        con = self._pool.pool.getconn()
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
            self._pool.pool.putconn(con)

    def close(self) -> None:
        if self._held is not None:
            self.rollback()

    def __getattr__(self, name: str) -> Any:
        raise InvalidInput(
            f"{name}() reads the warehouse through DuckDB; on a PostgreSQL warehouse it runs on a DuckDB "
            "snapshot (posttrain.warehouse.analytics), not on this cursor"
        )


def _params(params: Sequence[Any] | dict[str, Any] | None, count: int) -> dict[str, Any] | None:
    if params is None or (not params and count == 0):
        return None if count == 0 else {}
    if isinstance(params, dict):
        return dict(params)
    if len(params) != count:
        raise InvalidInput(f"the statement has {count} placeholders; {len(params)} values were given")
    return {str(i + 1): value for i, value in enumerate(params)}
