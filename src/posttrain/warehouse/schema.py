"""Numbered SQL migrations, applied in order when a warehouse is opened."""

from __future__ import annotations

from importlib import resources

import duckdb

from posttrain.clock import utc_now


def migration_files() -> list[tuple[int, str, str]]:
    folder = resources.files("posttrain.warehouse") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number = int(entry.name.split("_", 1)[0])
            found.append((number, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def applied_migrations(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Return the numbers of the migrations this warehouse has."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(number INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
    )
    return [row[0] for row in con.execute("SELECT number FROM schema_migrations ORDER BY 1").fetchall()]


def migrate(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply every migration the warehouse lacks, each in its own transaction; return their numbers."""
    done = set(applied_migrations(con))
    applied = []
    for number, name, sql in migration_files():
        if number in done:
            continue
        con.begin()
        try:
            con.execute(sql)
            con.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                [number, name, utc_now()],
            )
            con.commit()
        except Exception:
            con.rollback()
            raise
        applied.append(number)
    return applied
