"""PostgreSQL as the warehouse of many servers: connecting (psycopg 3) and the same migrations.

The migration files are DuckDB's and PostgreSQL's alike (portable types: ``DOUBLE PRECISION``,
``VARCHAR[]``, ``JSON``, ``TIMESTAMP``). On PostgreSQL they are applied in one transaction that
first takes an advisory lock, so several servers starting at once apply them once: the others wait
for the lock and find them applied.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from posttrain.clock import utc_now
from posttrain.errors import InvalidInput, Unavailable
from posttrain.warehouse.schema import migration_files

if TYPE_CHECKING:
    import psycopg

MIGRATION_LOCK = 0x706F_7374_7472  # "posttr": the advisory lock every server takes to migrate
_URL = re.compile(r'^postgres(ql)?://[^\s"\\]+$')  # no quote or backslash: it is written into posttrain.toml


def check_url(url: str, *, field: str = "warehouse.url") -> str:
    """Return ``url`` when it is a PostgreSQL URL on one line; raise InvalidInput naming ``field``."""
    if not isinstance(url, str) or len(url) > 2000 or not _URL.match(url):
        raise InvalidInput(f"{field}: give a PostgreSQL URL, as in postgresql://user@host:5432/db", field=field)
    return url


def redacted(url: str) -> str:
    """Return ``url`` without its password (for messages and logs)."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """Open a connection; raise Unavailable naming the (redacted) URL when nobody answers there."""
    import psycopg

    try:
        return psycopg.connect(check_url(url), autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
        raise Unavailable(f"the PostgreSQL warehouse at {redacted(url)} did not answer: {reason}") from None


def applied_migrations(con: psycopg.Connection) -> list[int]:
    """Return the numbers of the migrations this database has (none when it has no posttrain tables)."""
    with con.transaction():
        exists = con.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        if not (exists and exists[0]):
            return []
        return [row[0] for row in con.execute("SELECT number FROM schema_migrations ORDER BY 1").fetchall()]


def migrate(con: psycopg.Connection) -> list[int]:
    """Apply every migration the database lacks, under the advisory lock; return their numbers."""
    applied = []
    with con.transaction():
        con.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(number INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
        )
        done = {row[0] for row in con.execute("SELECT number FROM schema_migrations").fetchall()}
        for number, name, sql in migration_files():
            if number in done:
                continue
            con.execute(sql)  # several statements, no parameters: psycopg sends them as they are
            con.execute("INSERT INTO schema_migrations VALUES (%s, %s, %s)", [number, name, utc_now()])
            applied.append(number)
        from posttrain.warehouse.pg_reader import grant_readers

        grant_readers(con)  # the read-only SQL roles, their grants covering every table just made
    return applied


def store_rows(con: psycopg.Connection, by_table: dict[str, list[dict[str, Any]]],
               columns: dict[str, list[str]]) -> dict[str, set[str]]:  # fmt: skip
    """Insert rows whose id is not stored yet, every table in one transaction; return the ids created.

    The rows go through ``COPY`` into a temp table of the connection's own, then one ``INSERT …
    SELECT … ON CONFLICT (id) DO NOTHING RETURNING id`` per table: a resent id is skipped, and two
    servers inserting the same id at once store it once (the second waits for the first's commit,
    then skips it), so every id is answered "created" by exactly one of them.
    """
    created: dict[str, set[str]] = {}
    with con.transaction(), con.cursor() as cur:
        for table, rows in by_table.items():
            if not rows:
                continue
            names = ", ".join(f'"{c}"' for c in columns[table])
            staging = f'"_capture_{table}"'
            cur.execute(f'CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE "{table}") ON COMMIT DELETE ROWS')
            with cur.copy(f"COPY {staging} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row([row.get(c) for c in columns[table]])
            insert = f'INSERT INTO "{table}" ({names}) SELECT {names} FROM {staging}'
            cur.execute(f"{insert} ON CONFLICT (id) DO NOTHING RETURNING id")
            created[table] = {r[0] for r in cur.fetchall()}
    return created
