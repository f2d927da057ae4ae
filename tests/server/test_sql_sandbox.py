"""Users' SQL cannot write, read files, change settings or see secrets: an attack suite per role, live.

One real ``posttrain serve`` on loopback with seeded rows; every role's key sends every attack;
afterwards every table's row count and checksum are as before and no file appeared.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import LiveServer
from posttrain import keys
from posttrain.project import Project, init_project
from posttrain.records import ROLES

OUT = "{out}"  # replaced by a folder outside the project, which must stay empty

# Each must be refused (400) for every role that may use SQL at all: writes, files, settings, code.
ATTACKS = [
    "EXPLAIN ANALYZE INSERT INTO api_keys VALUES ('x', 'x', 'admin', 'pt_x', 'deadbeef', now(), NULL)",
    "EXPLAIN ANALYZE INSERT INTO interactions SELECT * REPLACE ('FORGED' AS response) FROM interactions LIMIT 1",
    "EXPLAIN ANALYZE INSERT INTO feedback SELECT * FROM feedback LIMIT 1",
    "EXPLAIN ANALYZE UPDATE api_keys SET role = 'admin'",
    "EXPLAIN ANALYZE DELETE FROM feedback",
    f"EXPLAIN ANALYZE COPY interactions TO '{OUT}/a.csv'",
    "EXPLAIN ANALYZE SET threads = 1",
    "EXPLAIN ANALYZE CREATE TABLE pwn AS SELECT 1",
    "EXPLAIN ANALYZE DROP TABLE feedback",
    "EXPLAIN INSERT INTO feedback SELECT * FROM feedback",
    "/* hidden */ EXPLAIN ANALYZE DELETE FROM interactions",
    "INSERT INTO interactions SELECT * FROM interactions",
    "UPDATE interactions SET response = 'FORGED'",
    "DELETE FROM interactions",
    "DROP TABLE feedback",
    "CREATE TABLE pwn (a INT)",
    "CREATE VIEW leak AS SELECT * FROM api_keys",
    "CREATE MACRO pwn() AS 1",
    "ALTER TABLE feedback ADD COLUMN pwn INT",
    f"COPY interactions TO '{OUT}/b.parquet' (FORMAT parquet)",
    f"COPY (SELECT 1) TO '{OUT}/c.csv'",
    f"EXPORT DATABASE '{OUT}/dump'",
    f"ATTACH '{OUT}/evil.duckdb' AS evil",
    "DETACH DATABASE warehouse",
    "USE system",
    "PRAGMA enable_profiling",
    "PRAGMA threads = 1",
    "CALL checkpoint()",
    "CHECKPOINT",
    "VACUUM",
    "SET threads = 1",
    "SET GLOBAL enable_external_access = true",
    "RESET threads",
    "BEGIN TRANSACTION",
    "INSTALL httpfs",
    "LOAD httpfs",
    "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "SELECT 1; DELETE FROM feedback",
    "SELECT 1; SELECT 2",
    "SELECT * FROM query('SELECT * FROM api_keys')",
    "SELECT * FROM query_table('api_keys')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_csv('/etc/passwd')",
    f"SELECT * FROM read_parquet('{OUT}/x.parquet')",
    "SELECT * FROM read_blob('/etc/hostname')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM sniff_csv('/etc/passwd')",
    "SELECT * FROM checkpoint()",
    "SELECT * FROM duckdb_secrets()",
    "SELECT * FROM duckdb_extensions()",
    "SELECT nextval('pwn_seq')",
]
# Secrets: refused below admin, readable by an admin.
SECRETS = [
    "SELECT * FROM api_keys",
    "SELECT key_hash FROM main.api_keys",
    'SELECT * FROM interactions WHERE id IN (SELECT key_hash FROM "API_KEYS")',
    "WITH k AS (SELECT * FROM api_keys) SELECT * FROM k",
    "SUMMARIZE api_keys",
    "DESCRIBE api_keys",
    "EXPLAIN ANALYZE SELECT * FROM api_keys",
]
READS = [
    "SELECT count(*) FROM interactions",
    "SHOW TABLES",
    "DESCRIBE feedback",
    "EXPLAIN ANALYZE SELECT count(*) FROM interactions",
    "SELECT * FROM range(3)",
]
SQL_ROLES = ("admin", "viewer")


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("attacker_out")


def _serve(root: Path, url: str | None = None) -> tuple[LiveServer, dict[str, str]]:
    """Serve a project (its warehouse at ``url``, else DuckDB) with a key per role and seeded rows."""
    proj = init_project(root, warehouse_url=url)
    role_keys = {role: keys.create_key(proj, role).key for role in ROLES}
    proj.close()
    live = LiveServer(root=proj.root, admin_key=role_keys["admin"]).start()
    with live.http() as http:
        asked = [{"role": "user", "content": "q"}]
        events = [{"id": f"i{n}", "messages": asked, "response": "a"} for n in range(5)]
        assert http.post("/api/capture/interactions", json={"interactions": events}).status_code == 200
        thumbs = [{"id": f"f{n}", "interaction_id": f"i{n}", "kind": "thumb", "value": "up"} for n in range(5)]
        assert http.post("/api/capture/feedback", json={"feedback": thumbs}).status_code == 200
    return live, role_keys


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    live, role_keys = _serve(tmp_path_factory.mktemp("sandbox") / "proj")
    yield live, role_keys
    live.stop()


def _tables(
    http: httpx.Client, listing: str = "SELECT table_name FROM duckdb_tables() ORDER BY table_name"
) -> dict[str, Any]:
    names = _sql(http, listing)
    return {
        name: _sql(http, f"SELECT count(*), md5(string_agg(t::VARCHAR, '|' ORDER BY t::VARCHAR)) FROM {name} t")[0]
        for (name,) in names
    }


def _sql(http: httpx.Client, query: str) -> list[list[Any]]:
    reply = http.post("/api/sql", json={"sql": query})
    assert reply.status_code == 200, reply.text
    return reply.json()["rows"]  # type: ignore[no-any-return]


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.name.endswith(".wal")}


def test_attack_suite_changes_nothing_for_any_role(served: tuple[LiveServer, dict[str, str]], out: Path) -> None:
    server, role_keys = served
    assert len(ATTACKS) + len(SECRETS) >= 30
    with server.http() as admin:
        before, files = _tables(admin), _files(server.root)
    outcomes: dict[tuple[str, str], int] = {}
    for role, key in role_keys.items():
        with server.http(key) as http:
            for attack in [*ATTACKS, *SECRETS]:
                reply = http.post("/api/sql", json={"sql": attack.replace(OUT, str(out))})
                outcomes[role, attack] = reply.status_code
                assert reply.status_code < 500, reply.text
                if reply.status_code == 400:
                    assert reply.json()["error"]["field"] == "sql", reply.text
    for role in ROLES:
        expected_attack = 400 if role in SQL_ROLES else 403
        assert {a: outcomes[role, a] for a in ATTACKS} == dict.fromkeys(ATTACKS, expected_attack), role
        expected_secret = 200 if role == "admin" else 400 if role in SQL_ROLES else 403
        assert {s: outcomes[role, s] for s in SECRETS} == dict.fromkeys(SECRETS, expected_secret), role
    with server.http() as admin:
        assert _tables(admin) == before
        assert _files(server.root) == files
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("query", READS)
def test_reads_still_work_for_sql_roles(served: tuple[LiveServer, dict[str, str]], query: str) -> None:
    server, role_keys = served
    for role in SQL_ROLES:
        with server.http(role_keys[role]) as http:
            reply = http.post("/api/sql", json={"sql": query})
            assert reply.status_code == 200, (role, reply.text)
            assert reply.json()["columns"]


def test_secret_table_refusal_names_the_table(served: tuple[LiveServer, dict[str, str]]) -> None:
    server, role_keys = served
    with server.http(role_keys["viewer"]) as http:
        reply = http.post("/api/sql", json={"sql": "SELECT * FROM api_keys"})
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == "table api_keys holds secrets; only an admin key may read it"


def test_row_limit_is_reported(tmp_path: Path) -> None:
    proj = init_project(tmp_path / "p")
    key = keys.create_key(proj, "viewer").key
    proj.close()
    server = LiveServer(root=proj.root, admin_key=key, env={"POSTTRAIN_SQL_MAX_ROWS": "5"}).start()
    try:
        with server.http() as http:
            body = http.post("/api/sql", json={"sql": "SELECT * FROM range(10)"}).json()
    finally:
        server.stop()
    assert len(body["rows"]) == 5 and body["truncated"] is True


# --- the local CLI: the same walls, no server -------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "EXPLAIN ANALYZE COPY interactions TO '{out}/cli.csv'",
        "SELECT * FROM read_text('/etc/passwd')",
        "COPY interactions TO '{out}/cli2.csv'",
        "EXPLAIN ANALYZE INSERT INTO feedback SELECT * FROM feedback",
        "ATTACH '{out}/cli.duckdb'",
    ],
)
def test_local_cli_sql_refuses_files_and_writes(project: Project, tmp_path: Path, query: str) -> None:
    root, out = project.root, tmp_path / "cli_out"
    out.mkdir()
    project.close()
    args = [sys.executable, "-m", "posttrain", "sql", query.replace("{out}", str(out)), "--project", str(root)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert list(out.iterdir()) == []


def test_local_cli_sql_reads(project: Project) -> None:
    root = project.root
    project.close()
    args = [sys.executable, "-m", "posttrain", "sql", "SELECT 40 + 2 AS answer", "--project", str(root), "--json"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and '"answer": 42' in result.stdout, result.stderr


# --- a PostgreSQL warehouse: the same attacks, and what a SELECT can call there -------------------------

# Functions a single SELECT may call on PostgreSQL that would undo a role set inside the session,
# run SQL text past the parse's table check, write, or read the server's files. Wall 3 (the login
# role's privileges) and wall 2 (the read-only transaction) must hold each.
PG_ATTACKS = [
    "SELECT set_config('role', 'posttrain', false)",
    "SELECT set_config('default_transaction_read_only', 'off', false), "
    "query_to_xml('DELETE FROM feedback', true, true, '')",
    "SELECT query_to_xml('DELETE FROM feedback RETURNING 1', true, true, '')",
    "SELECT query_to_xml('CREATE TABLE pwn AS SELECT 1', true, true, '')",
    "SELECT query_to_xml('RESET ROLE; DELETE FROM feedback', true, true, '')",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT pg_ls_dir('.')",
    "SELECT lo_import('/etc/passwd')",
    "SELECT lo_export(1, '{out}/pg.bin')",
    "SELECT pg_reload_conf()",
    "SELECT nextval('pwn_seq')",
]
# Secrets through a SELECT's own text, and through SQL text a function runs (past the parse's check).
PG_SECRETS = [
    "SELECT * FROM api_keys",
    "WITH k AS (SELECT * FROM api_keys) SELECT * FROM k",
    "SELECT query_to_xml('SELECT key_hash FROM api_keys', true, true, '')",
]


@pytest.fixture(scope="module")
def served_pg(tmp_path_factory: pytest.TempPathFactory, pg_server: Any) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    live, role_keys = _serve(tmp_path_factory.mktemp("sandbox_pg") / "proj", pg_server.database("sandbox"))
    yield live, role_keys
    live.stop()


def _pg_tables(http: httpx.Client) -> dict[str, Any]:
    return _tables(http, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1")


def test_attack_suite_changes_nothing_on_postgresql(served_pg: tuple[LiveServer, dict[str, str]], out: Path) -> None:
    server, role_keys = served_pg
    with server.http() as admin:
        before = _pg_tables(admin)
    assert {"interactions", "api_keys", "feedback"} <= set(before)
    attacks = [a.replace(OUT, str(out)) for a in [*ATTACKS, *PG_ATTACKS]]
    for role in SQL_ROLES:
        with server.http(role_keys[role]) as http:
            for attack in attacks:
                reply = http.post("/api/sql", json={"sql": attack})
                assert reply.status_code == 400, (role, attack, reply.text)
                assert reply.json()["error"]["field"] == "sql", reply.text
            for secret in PG_SECRETS:
                reply = http.post("/api/sql", json={"sql": secret})
                assert reply.status_code == (200 if role == "admin" else 400), (role, secret, reply.text)
    with server.http() as admin:
        assert _pg_tables(admin) == before
        roles = _sql(admin, "SELECT current_user, current_setting('transaction_read_only')")
    assert roles[0][0].endswith("_admin_reader") and roles[0][1] == "on"
    assert list(out.iterdir()) == []


def test_reads_work_on_postgresql(served_pg: tuple[LiveServer, dict[str, str]]) -> None:
    server, role_keys = served_pg
    with server.http(role_keys["viewer"]) as http:
        body = http.post(
            "/api/sql", json={"sql": "SELECT count(*) AS n, any_value(id) IS NOT NULL AS found FROM interactions"}
        ).json()
        assert body["rows"] == [[5, True]], body
        # what PostgreSQL cannot say is refused with a 400 naming the field, never run changed
        refused = http.post("/api/sql", json={"sql": "SELECT last_value(id IGNORE NULLS) OVER () FROM interactions"})
        assert refused.status_code == 400 and refused.json()["error"]["field"] == "sql", refused.text
        assert "IGNORE NULLS" in refused.json()["error"]["message"]


def test_postgresql_stops_a_query_past_its_time_and_on_interrupt(tmp_path: Path, pg_url: str) -> None:
    import duckdb

    from posttrain.warehouse.pg_reader import ReaderCursor

    proj = init_project(tmp_path / "p", warehouse_url=pg_url)
    try:
        started = time.monotonic()
        with pytest.raises(duckdb.InterruptException):  # PostgreSQL's statement_timeout, its own wall
            ReaderCursor(pg_url, proj.cursor(), timeout_seconds=0.5).run("SELECT pg_sleep(5)", admin=False, max_rows=1)
        reader = ReaderCursor(pg_url, proj.cursor(), timeout_seconds=30)
        threading.Timer(0.5, reader.interrupt).start()  # what the server does past sql.timeout_seconds
        with pytest.raises(duckdb.InterruptException):
            reader.run("SELECT pg_sleep(5)", admin=False, max_rows=1)
        assert time.monotonic() - started < 4
    finally:
        proj.close()


def test_local_cli_sql_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    proj = init_project(tmp_path / "p", warehouse_url=pg_url)
    proj.close()
    ok = [
        sys.executable,
        "-m",
        "posttrain",
        "sql",
        "SELECT count(*) AS n FROM interactions",
        "--project",
        str(proj.root),
        "--json",
    ]
    done = subprocess.run(ok, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and '"n": 0' in done.stdout, done.stderr
    bad = [
        sys.executable,
        "-m",
        "posttrain",
        "sql",
        "SELECT query_to_xml('DELETE FROM api_keys', true, true, '')",
        "--project",
        str(proj.root),
    ]
    done = subprocess.run(bad, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
