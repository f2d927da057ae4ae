"""warehouse: numbered migrations, every DESIGN.md table, read-only SQL."""

from __future__ import annotations

import duckdb
import pytest

from posttrain.errors import InvalidInput
from posttrain.project import Project
from posttrain.warehouse import applied_migrations, migrate, sandbox
from posttrain.warehouse.schema import migration_files

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

ALL = [number for number, _, _ in migration_files()]

TABLES = {
    "interactions",
    "feedback",
    "annotation_queues",
    "annotation_items",
    "annotation_leases",
    "labels",
    "dataset_versions",
    "models",
    "jobs",
    "experiments",
    "api_keys",
    "cohort_rules",
    "routes",
    "schema_migrations",
}


def test_migrations_create_every_table(project: Project) -> None:
    names = {r[0] for r in project.cursor().execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert names >= TABLES
    assert applied_migrations(project.cursor()) == ALL
    assert ALL[:3] == [1, 2, 3]


def test_migrate_is_idempotent(project: Project) -> None:
    assert migrate(project.cursor()) == []


def test_migrate_on_a_blank_database_applies_all() -> None:
    con = duckdb.connect()
    assert migrate(con) == ALL
    assert migrate(con) == []


@pytest.mark.warehouses("duckdb")  # DuckDB's own sandbox; PostgreSQL's: server/test_sql_sandbox.py
@pytest.mark.parametrize(
    "sql", ["SELECT count(*) FROM interactions", "SHOW TABLES", "DESCRIBE feedback", "EXPLAIN SELECT 1"]
)
def test_run_sql_allows_reads(project: Project, sql: str) -> None:
    assert sandbox.run_read_only(project.cursor(), sql).columns


@pytest.mark.warehouses("duckdb")  # DuckDB's own sandbox; PostgreSQL's: server/test_sql_sandbox.py
@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM interactions",
        "DROP TABLE feedback",
        "INSERT INTO labels VALUES (1)",
        "UPDATE api_keys SET role='admin'",
        "CREATE TABLE x (a INT)",
        "ATTACH 'other.db'",
        "SET threads = 1",
        "SELECT 1; DELETE FROM feedback",
        "COPY interactions TO 'x.csv'",
    ],
)
def test_run_sql_refuses_writes(project: Project, sql: str) -> None:
    with pytest.raises(InvalidInput) as info:
        sandbox.run_read_only(project.cursor(), sql)
    assert info.value.field == "sql"


@pytest.mark.warehouses("duckdb")  # DuckDB's own sandbox; PostgreSQL's: server/test_sql_sandbox.py
def test_run_sql_reports_bad_sql_as_invalid_input(project: Project) -> None:
    with pytest.raises(InvalidInput, match="SQL"):
        sandbox.run_read_only(project.cursor(), "SELEC nothing")
