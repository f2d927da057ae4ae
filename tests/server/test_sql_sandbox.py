"""Users' SQL cannot write, read files, change settings or see secrets: an attack suite per role, live.

One real ``posttrain serve`` on loopback with seeded rows; every role's key sends every attack;
afterwards every table's row count and checksum are as before and no file appeared.
"""

from __future__ import annotations

import subprocess
import sys
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


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    proj = init_project(tmp_path_factory.mktemp("sandbox") / "proj")
    role_keys = {role: keys.create_key(proj, role).key for role in ROLES}
    proj.close()
    live = LiveServer(root=proj.root, admin_key=role_keys["admin"]).start()
    with live.http() as http:
        asked = [{"role": "user", "content": "q"}]
        events = [{"id": f"i{n}", "messages": asked, "response": "a"} for n in range(5)]
        assert http.post("/api/capture/interactions", json={"interactions": events}).status_code == 200
        thumbs = [{"id": f"f{n}", "interaction_id": f"i{n}", "kind": "thumb", "value": "up"} for n in range(5)]
        assert http.post("/api/capture/feedback", json={"feedback": thumbs}).status_code == 200
    yield live, role_keys
    live.stop()


def _tables(http: httpx.Client) -> dict[str, Any]:
    names = _sql(http, "SELECT table_name FROM duckdb_tables() ORDER BY table_name")
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
