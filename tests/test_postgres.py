"""PostgreSQL as the warehouse (issue 17, first part): a real server on loopback (initdb + pg_ctl),
the same migrations as DuckDB's, and ``posttrain warehouse copy --to`` checked row by row."""

from __future__ import annotations

import decimal
import subprocess
import sys
import threading
from typing import Any

import pytest
from typer.testing import CliRunner

from posttrain import capture
from posttrain.jobs import start_job
from posttrain.project import Project
from posttrain.warehouse import postgres
from posttrain.warehouse.copy import _checksum, copy_to_postgres
from posttrain.warehouse.schema import migration_files

pytest.importorskip("psycopg")

ALL = [number for number, _, _ in migration_files()]
# DuckDB's and PostgreSQL's names of the same column types
SAME_TYPE = {
    "VARCHAR": "character varying",
    "TIMESTAMP": "timestamp without time zone",
    "DOUBLE": "double precision",
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "BOOLEAN": "boolean",
    "JSON": "json",
    "VARCHAR[]": "ARRAY",
}


def _columns_here(project: Project) -> dict[tuple[str, str], str]:
    rows = (
        project.cursor()
        .execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'main'"
        )
        .fetchall()
    )
    return {(t, c): SAME_TYPE[kind] for t, c, kind in rows}


def _columns_there(url: str) -> dict[tuple[str, str], str]:
    with postgres.connect(url) as con:
        rows = con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public'"
        ).fetchall()
    return {(t, c): kind for t, c, kind in rows}


def test_the_same_migrations_make_the_same_tables_and_columns_on_postgresql(project: Project, pg_url: str) -> None:
    with postgres.connect(pg_url, autocommit=True) as con:
        assert postgres.applied_migrations(con) == []
        assert postgres.migrate(con) == ALL
        assert postgres.migrate(con) == []  # idempotent
        assert postgres.applied_migrations(con) == ALL

    assert _columns_there(pg_url) == _columns_here(project)


def test_servers_starting_at_once_apply_the_migrations_once(pg_url: str) -> None:
    applied: list[list[int]] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            with postgres.connect(pg_url, autocommit=True) as con:
                applied.append(postgres.migrate(con))
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert not errors, errors
    assert sorted(applied, key=len) == [[], [], [], ALL]  # one applied them; the others waited and found them


def _fill(project: Project) -> None:
    """Rows of every shape: content parts, tool calls, unicode, tags, empty lists, nulls, feedback
    before its interaction, a job."""
    interactions = [
        {
            "id": f"i{i}",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": f"question {i} — ünïcødé"}]},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
                    ],
                },  # fmt: skip
            ],
            "response": f"answer {i}" if i % 3 else None,
            "user_id": f"u{i % 7}",
            "cohort": "minors" if i % 5 == 0 else "adults",
            "tags": ["a", "b"] if i % 2 else [],
            "metadata": {"n": i, "f": i / 3, "nested": {"z": [1, 2.5, None]}},
            "latency_ms": i * 1.25,
        }
        for i in range(120)
    ]
    capture.capture(project, "interactions", interactions)
    feedback = [
        {"id": f"f{i}", "interaction_id": f"i{i}" if i < 100 else "later", "kind": "rating", "value": i % 5 + 1}
        for i in range(110)
    ]
    capture.capture(project, "feedback", feedback)
    job = start_job(project, "train.sft", {"output": "m", "lr": 0.001})
    job.log("step 1: loss=1.5")
    job.fail("stopped")


def test_copy_moves_every_table_and_the_check_compares_counts_and_checksums(
    project: Project, pg_url: str, cli: CliRunner
) -> None:
    from posttrain.cli import app

    _fill(project)
    root = project.root
    project.close()

    result = cli.invoke(app, ["warehouse", "copy", "--to", pg_url, "--project", str(root)])

    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].startswith("copied 17 tables, 231 rows to postgresql://")
    with postgres.connect(pg_url) as con:
        counts = {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("interactions", "feedback", "jobs")
        }
        row = con.execute("SELECT messages, tags, metadata FROM interactions WHERE id = 'i1'").fetchone()
    assert counts == {"interactions": 120, "feedback": 110, "jobs": 1}
    messages, tags, metadata = row
    assert messages[0]["content"][0]["text"] == "question 1 — ünïcødé"
    assert messages[1]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"x": 1}'}  # kept whole
    assert tags == ["a", "b"] and metadata["nested"] == {"z": [1, 2.5, None]}

    again = _posttrain("warehouse", "copy", "--to", pg_url, "--project", str(root))
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr == "error: the target already holds 110 rows in feedback; copy into an empty database\n"


def test_copy_returns_one_result_per_table(project: Project, pg_url: str) -> None:
    _fill(project)
    seen: list[tuple[str, int, int]] = []

    results = copy_to_postgres(project, pg_url, progress=lambda *a: seen.append(a))

    by_table = {r.table: r for r in results}
    assert by_table["interactions"].rows == by_table["interactions"].copied == 120
    assert all(r.matches for r in results)
    assert ("interactions", 120, 120) in seen and ("models", 0, 0) in seen


@pytest.mark.parametrize(
    ("to", "code", "message"),
    [
        ("mysql://h/db", 2, "error: to: give a PostgreSQL URL"),
        (
            "postgresql://u:secret@127.0.0.1:1/x",
            1,
            "error: the PostgreSQL warehouse at postgresql://u:***@127.0.0.1:1/x",
        ),
    ],
)
def test_copy_to_a_bad_or_silent_url_fails_in_one_line(project: Project, to: str, code: int, message: str) -> None:
    project.close()
    result = _posttrain("warehouse", "copy", "--to", to, "--project", str(project.root))

    assert result.returncode == code
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert "secret" not in result.stderr + result.stdout


def _posttrain(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "posttrain", *args], capture_output=True, text=True, timeout=120)


def test_the_checksum_ignores_row_order_and_key_order_but_not_values() -> None:
    json_columns = [False, True, False]
    rows: list[tuple[Any, ...]] = [("a", '{"x": 1, "y": [1, 2]}', 0.5), ("b", None, None)]
    same = [("b", None, None), ("a", {"y": [1, 2], "x": 1}, 0.5)]  # reordered; JSON parsed, keys in another order
    changed = [("a", '{"x": 1, "y": [1, 2]}', 0.5000001), ("b", None, None)]

    assert _checksum(rows, json_columns) == _checksum(same, json_columns)
    assert _checksum(rows, json_columns)[1] != _checksum(changed, json_columns)[1]


def _stored(pg_url: str) -> None:
    with postgres.connect(pg_url, autocommit=True) as con:
        postgres.migrate(con)


def _events(first: int, last: int) -> list[dict[str, Any]]:
    return [
        {"id": f"i{i}", "messages": [{"role": "user", "content": f"q{i}"}], "response": f"a{i}",
         "tags": ["t"] * (i % 2), "metadata": {"i": i}, "user_id": f"u{i % 3}"}
        for i in range(first, last)
    ]  # fmt: skip


def _commit(con: Any, kind: str, events: list[dict[str, Any]], project: Project) -> list[str]:
    results, rows = capture.validate_events(kind, events, project.settings.capture)  # type: ignore[arg-type]
    assert all(r is None for r in results)
    return capture.commit(con, [(kind, [row for _, row in rows])])[0]


def test_capture_on_postgresql_stores_once_answers_duplicates_and_keeps_the_same_records(
    project: Project, pg_url: str
) -> None:
    _stored(pg_url)
    events = _events(0, 20)
    feedback = [{"id": "f1", "interaction_id": "i99", "kind": "thumb", "value": "up"}]  # before its interaction
    with postgres.connect(pg_url, autocommit=True) as con:
        assert _commit(con, "interactions", events, project) == ["created"] * 20
        assert _commit(con, "interactions", [*_events(18, 22), events[0]], project) == [
            "duplicate", "duplicate", "created", "created", "duplicate"
        ]  # fmt: skip
        assert _commit(con, "feedback", feedback, project) == ["created"]
        assert con.execute("SELECT count(*) FROM interactions").fetchone()[0] == 22
        assert con.execute("SELECT score FROM feedback WHERE id = 'f1'").fetchone()[0] == 1.0

    # the same events stored by the DuckDB path: the same records, compared as the copy check does
    capture.capture(project, "interactions", _events(0, 22))
    capture.capture(project, "feedback", feedback)
    columns = "id, user_id, messages, response, tags, metadata, consent, media, source"
    json_columns = [c in ("messages", "metadata", "consent", "media") for c in columns.split(", ")]
    here = _checksum(project.cursor().execute(f"SELECT {columns} FROM interactions").fetchall(), json_columns)
    with postgres.connect(pg_url) as con:
        there = _checksum(con.execute(f"SELECT {columns} FROM interactions").fetchall(), json_columns)
    assert here == there


def test_two_writers_sending_the_same_ids_at_once_store_each_once(project: Project, pg_url: str) -> None:
    """Two servers' writers (two connections), overlapping batches sent together: every id is stored
    once and answered "created" by exactly one of them."""
    _stored(pg_url)
    batches = [_events(0, 300), _events(150, 450)]
    answers: list[list[str]] = [[], []]
    start = threading.Barrier(2)

    def write(which: int) -> None:
        with postgres.connect(pg_url, autocommit=True) as con:
            start.wait()
            for chunk in range(0, 300, 50):
                answers[which] += _commit(con, "interactions", batches[which][chunk : chunk + 50], project)

    threads = [threading.Thread(target=write, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    created: dict[str, int] = {}
    for batch, statuses in zip(batches, answers, strict=True):
        for event, status in zip(batch, statuses, strict=True):
            created[event["id"]] = created.get(event["id"], 0) + (status == "created")
    assert len(created) == 450 and set(created.values()) == {1}
    with postgres.connect(pg_url) as con:
        assert con.execute("SELECT count(*), count(DISTINCT id) FROM interactions").fetchone() == (450, 450)


# --- the DuckDB dialect our queries are written in gives the same answers on PostgreSQL ----------

_X = "WITH x(unit, t, v) AS (VALUES ('a', 1.0, 2.0), ('a', 3.0, NULL), ('b', 2.0, 5.0), ('b', 4.0, 1.0))\n"
SAME_ANSWERS = [
    "SELECT unit, sum(v), count(*), any_value(t - t) FROM x WHERE t > 1.5 GROUP BY ALL ORDER BY unit",
    "SELECT any_value(t * 0), count(*) FROM x GROUP BY ALL",  # only aggregates: one group (any_value: a constant)
    "SELECT unit, arg_max(v, t), arg_min(v, t) FILTER (WHERE v IS NOT NULL) FROM x GROUP BY ALL ORDER BY 1",
    "SELECT unit FROM x WHERE contains(unit, 'b') AND list_contains(['b', 'c'], unit) ORDER BY t",
    "SELECT unit, count(*) FILTER (WHERE t % 2 = 1) FROM x GROUP BY ALL ORDER BY unit",
    # any_value of any type (min has no boolean), skipping NULLs, under a FILTER, and in a window
    "SELECT unit, any_value(unit = 'a'), any_value(v) FILTER (WHERE t < 2), any_value(NULL::DOUBLE) FROM x "
    "GROUP BY ALL ORDER BY unit",
    "SELECT unit, t, any_value(unit || '!') OVER (PARTITION BY unit) FROM x ORDER BY t",
]


@pytest.mark.warehouses("postgresql")
@pytest.mark.parametrize("sql", SAME_ANSWERS)
def test_a_query_in_duckdbs_dialect_answers_the_same_on_postgresql(project: Project, sql: str) -> None:
    import duckdb

    assert project.is_postgres
    expected = duckdb.connect().execute(_X + sql).fetchall()
    got = project.cursor().execute(_X + sql).fetchall()

    def same(rows: list[Any]) -> list[tuple[Any, ...]]:  # DuckDB's 1.0 is a DECIMAL, ours a double
        return [tuple(float(v) if isinstance(v, decimal.Decimal) else v for v in row) for row in rows]

    assert same(got) == same(expected)


def test_what_postgresql_cannot_say_is_refused_not_quietly_changed() -> None:
    import sqlglot.errors

    from posttrain.warehouse.pg_cursor import translate

    with pytest.raises(sqlglot.errors.UnsupportedError, match="IGNORE NULLS"):
        translate("SELECT last_value(v IGNORE NULLS) OVER (ORDER BY t) FROM x")
    # DuckDB's any_value skips NULLs too
    assert translate("SELECT any_value(v) FROM x")[0] == "SELECT (ARRAY_AGG(v) FILTER(WHERE NOT v IS NULL))[1] FROM x"
