"""Read-only SQL on a PostgreSQL warehouse: users' queries run as login roles that can only read.

DuckDB's walls (``sandbox``) have a PostgreSQL counterpart for each:

1. the same allow-list parse of the text (DuckDB's parser: one SELECT, table functions listed,
   ``api_keys`` for admins only), then sqlglot's translation to PostgreSQL;
2. a ``READ ONLY`` transaction, always rolled back, with a ``statement_timeout``;
3. **the privileges of the role that runs it** — the wall that holds whatever the text does.
   Two login roles per database: ``…_reader`` (SELECT on every table but ``api_keys``) and
   ``…_admin_reader`` (SELECT on every table). Both default to read-only transactions and own
   nothing. They are separate logins, not ``SET ROLE``: a function a SELECT may call
   (``set_config('role', …)``, ``query_to_xml``) could undo a role set inside the session, but not
   the login itself.

The migration that every server runs (under its advisory lock) creates the roles when the
warehouse's owner may (``CREATEROLE``) and refreshes their grants; their passwords are random and
kept in the ``posttrain_private`` schema, which only the owner reads.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING, Any

import orjson

from posttrain.errors import Conflict, InvalidInput

if TYPE_CHECKING:
    import psycopg

    from posttrain.warehouse.pg_cursor import PgCursor

SECRET_TABLES = ("api_keys",)
_JSON_OIDS = {114, 3802}  # json, jsonb
_JSON_ARRAY_OIDS = {199, 3807}


def role_names(database: str) -> dict[bool, str]:
    """Return the reader role of each kind (admin or not) of ``database`` (names safe whatever it is called)."""
    tag = hashlib.sha256(database.encode()).hexdigest()[:12]
    return {False: f"posttrain_{tag}_reader", True: f"posttrain_{tag}_admin_reader"}


def grant_readers(con: psycopg.Connection) -> bool:
    """Create the reader roles if missing and grant them what they may read; False when the owner may not."""
    import psycopg
    from psycopg import sql

    database = con.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    con.execute("CREATE SCHEMA IF NOT EXISTS posttrain_private")
    con.execute("REVOKE ALL ON SCHEMA posttrain_private FROM PUBLIC")
    con.execute("CREATE TABLE IF NOT EXISTS posttrain_private.readers (role VARCHAR PRIMARY KEY, password VARCHAR)")
    try:
        with con.transaction():  # a savepoint: an owner without CREATEROLE keeps its migrations
            for admin, role in role_names(database).items():
                name = sql.Identifier(role)
                exists = con.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
                if not exists:
                    password = secrets.token_hex(24)
                    con.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} CONNECTION LIMIT 64").format(
                        name, sql.Literal(password)))  # fmt: skip
                    con.execute("DELETE FROM posttrain_private.readers WHERE role = %s", [role])
                    con.execute("INSERT INTO posttrain_private.readers VALUES (%s, %s)", [role, password])
                con.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(name))
                con.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), name))
                con.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(name))
                con.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM {}").format(name))
                con.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(name))
                if not admin:
                    for table in SECRET_TABLES:
                        con.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(sql.Identifier(table), name))
    except psycopg.errors.InsufficientPrivilege:
        return False
    return True


class ReaderCursor:
    """One user query on a PostgreSQL warehouse, as its reader role; ``interrupt()`` cancels it."""

    def __init__(self, url: str, owner: PgCursor, *, timeout_seconds: float) -> None:
        self._url = url
        self._owner = owner  # the warehouse owner's cursor: it reads the reader's password
        self._timeout_ms = max(int(timeout_seconds * 1000), 1)
        self._con: psycopg.Connection | None = None
        self.interrupted = False

    def _connect(self, admin: bool) -> psycopg.Connection:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        from posttrain.warehouse import pg_cursor

        url = self._url
        with self._owner.borrow() as owner:
            database = owner.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
            role = role_names(database)[admin]
            found = owner.execute("SELECT password FROM posttrain_private.readers WHERE role = %s", [role]).fetchone()
        if found is None:
            raise Conflict(
                "read-only SQL on this PostgreSQL warehouse needs its reader roles, and the warehouse's owner may "
                "not create them; grant it CREATEROLE and restart a server (docs/guides/scale.md)"
            )
        params = conninfo_to_dict(url)
        params.update(user=role, password=found[0])
        con = psycopg.connect(make_conninfo(**params), autocommit=True, connect_timeout=10)  # type: ignore[arg-type]
        pg_cursor.configure(con)
        return con

    def run(self, select: str, *, admin: bool, max_rows: int) -> tuple[list[str], list[list[Any]], bool]:
        """Run ``select`` (already checked) read-only; return its columns, rows and whether rows were cut."""
        import psycopg

        from posttrain.warehouse.pg_cursor import translate

        try:
            text, count = translate(select)
        except Exception as exc:  # sqlglot's parse and unsupported-syntax errors
            raise InvalidInput(f"SQL cannot run on the PostgreSQL warehouse: {exc}", field="sql") from None
        if count:
            raise InvalidInput("SQL here takes no ? placeholders; write the values in", field="sql")
        self._con = self._connect(admin)
        try:
            with self._con.cursor() as cur:
                cur.execute("BEGIN TRANSACTION READ ONLY")
                cur.execute(f"SET LOCAL statement_timeout = {self._timeout_ms}")
                try:
                    cur.execute(text, {}, prepare=False)  # no values; {} so psycopg reads %% as %
                    rows = cur.fetchmany(max_rows + 1)
                except psycopg.errors.QueryCanceled:
                    import duckdb

                    raise duckdb.InterruptException("the query was cancelled") from None
                except psycopg.Error as exc:
                    reason = exc.diag.message_primary or str(exc).strip().splitlines()[0]
                    raise InvalidInput(f"SQL failed: {reason}", field="sql") from None
                description = list(cur.description or ())
        finally:
            self.close()
        decode = [_decoder(d.type_code) for d in description]
        out = [[v if f is None or v is None else f(v) for f, v in zip(decode, row, strict=True)] for row in rows]
        return [d.name for d in description], out[:max_rows], len(rows) > max_rows

    def interrupt(self) -> None:
        self.interrupted = True
        con = self._con
        if con is not None:
            con.cancel_safe()

    def close(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            con.close()  # the transaction ends with it (rolled back)


def _decoder(oid: int) -> Any:
    if oid in _JSON_OIDS:
        return orjson.loads
    if oid in _JSON_ARRAY_OIDS:
        return lambda values: [None if v is None else orjson.loads(v) for v in values]
    return None
