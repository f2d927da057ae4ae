"""Everyday mistakes at the CLI: one line ``error: ...``, exit 2 (usage) or 1 (runtime), never a traceback.

Each case runs ``python -m posttrain`` as a subprocess, as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LiveServer
from posttrain import capture
from posttrain.project import open_project
from posttrain.version import __version__


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POSTTRAIN_PROJECT": "", "COLUMNS": "200"}
    command = [sys.executable, "-m", "posttrain", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def assert_one_error_line(out: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert "Traceback" not in out.stdout + out.stderr, out.stderr
    assert out.returncode == code, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("errors") / "proj"
    out = run("init", str(path))
    assert out.returncode == 0, out.stderr
    return path


USAGE = [
    (["sql"], ["Missing argument 'query'", "sql --help"]),
    (["train", "sft", "--epochs", "abc"], ["--epochs"]),
    (["no-such-command"], ["No such command 'no-such-command'"]),
    (["models", "show"], ["Missing argument"]),
    (["datasets", "build", "sft", "x", "--since", "notadate"], ["--since"]),
    (["loop", "run", "--turns", "0"], ["--turns", "at least 1"]),
    (["sql", "SELECT 1", "--no-such-option"], ["--no-such-option"]),
    (["sql", "SELECT * FROM range(3)", "--limit", "0"], ["limit 0", "sql.max_rows"]),
]


@pytest.mark.parametrize(("args", "words"), USAGE, ids=[" ".join(a) for a, _ in USAGE])
def test_main_usage_mistake_is_one_line_exit_2(root: Path, args: list[str], words: list[str]) -> None:
    assert_one_error_line(run(*args, "--project", str(root)), 2, *words)


def test_main_version_prints_the_version() -> None:
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"posttrain {__version__}", out.stderr


BROKEN = [
    ("posttrain.toml", "[gateway\nupstream_url = 1\n", 2, ["not valid TOML", "posttrain.toml"]),
    ("posttrain.toml", '[gatway]\nupstream_url = "x"\n', 2, ["[gatway]", "[gateway]", "[server]"]),
    ("posttrain.toml", "sql = 1\n", 2, ["table"]),
    ("warehouse.duckdb", "not a database\n", 1, ["warehouse", "not a valid DuckDB database"]),
]


@pytest.mark.parametrize(("file", "text", "code", "words"), BROKEN, ids=[b[1].splitlines()[0] for b in BROKEN])
def test_main_broken_project_file_is_one_line(
    root: Path, tmp_path: Path, file: str, text: str, code: int, words: list[str]
) -> None:
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(root), str(copy)], check=True)
    (copy / file).write_text(text)
    assert_one_error_line(run("sql", "SELECT 1", "--project", str(copy)), code, *words)


def test_init_under_a_file_is_one_line_exit_1(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    assert_one_error_line(run("init", str(tmp_path / "afile" / "proj")), 1, "afile")


def test_capture_import_all_rejected_exits_2(root: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"x": 1}\nnot json\n')
    out = run("capture", "import", str(bad), "--project", str(root))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: every line of")


def _seed(root: Path) -> None:
    proj = open_project(root)
    with proj:
        rows = [
            {"id": f"i{i}", "messages": [{"role": "user", "content": f"hi {i}"}], "response": "hello",
             "metadata": {"n": i}}
            for i in range(3)
        ]  # fmt: skip
        capture.capture(proj, "interactions", rows)


@pytest.mark.slow  # one of the slowest of the default suite; CI runs it in make test-slow
def test_sql_limit_and_json_columns(tmp_path: Path) -> None:
    root = tmp_path / "p"
    assert run("init", str(root)).returncode == 0
    _seed(root)
    query = "SELECT id, messages, metadata FROM interactions ORDER BY id"
    out = run("sql", query, "--limit", "2", "--json", "--project", str(root))
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["id"] for r in rows] == ["i0", "i1"]
    assert rows[0]["metadata"] == {"n": 0} and rows[0]["messages"][0]["content"] == "hi 0"
    assert "stopped at 2 rows (--limit)" in out.stderr
    whole = run("sql", query, "--limit", "3", "--json", "--project", str(root))
    assert len(json.loads(whole.stdout)) == 3 and whole.stderr == ""
    over = run("sql", query, "--limit", "10001", "--project", str(root))
    assert_one_error_line(over, 2, "sql.max_rows")


@pytest.mark.slow  # starts a server
def test_sql_limit_and_json_columns_through_the_server(live_server: LiveServer) -> None:
    live_server.stop()
    _seed(live_server.root)
    live_server.start()
    query = "SELECT id, metadata FROM interactions ORDER BY id"
    out = run("sql", query, "--limit", "1", "--json", "--project", str(live_server.root))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"id": "i0", "metadata": {"n": 0}}]
    assert "stopped at 1 rows (--limit)" in out.stderr
