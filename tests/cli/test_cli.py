"""The CLI as a user runs it: exit codes, one-line errors, JSON output."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "posttrain", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


@pytest.fixture
def proj(tmp_path: Path) -> tuple[Path, str]:
    out = run("init", str(tmp_path / "p"), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    return Path(data["project"]), data["admin_key"]


def test_init_prints_project_and_admin_key(proj: tuple[Path, str]) -> None:
    root, key = proj
    assert (root / "posttrain.toml").exists() and key.startswith("pt_")


def test_init_twice_is_one_line_exit_2(proj: tuple[Path, str]) -> None:
    out = run("init", str(proj[0]))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "already a posttrain project" in out.stderr


def test_command_outside_a_project_says_how_to_make_one(tmp_path: Path) -> None:
    out = run("sql", "SELECT 1", cwd=tmp_path, env={"POSTTRAIN_PROJECT": ""})
    assert out.returncode == 2 and "posttrain init" in out.stderr and "Traceback" not in out.stderr


def test_sql_json_and_refused_writes(proj: tuple[Path, str]) -> None:
    root, _ = proj
    out = run("sql", "SELECT 42 AS answer", "--project", str(root), "--json")
    assert json.loads(out.stdout) == [{"answer": 42}]
    refused = run("sql", "DROP TABLE interactions", "--project", str(root))
    assert refused.returncode == 2 and "read-only" in refused.stderr


@pytest.mark.slow  # one of the slowest of the default suite; CI runs it in make test-slow
def test_keys_create_list_revoke(proj: tuple[Path, str]) -> None:
    root, _ = proj
    env = {"POSTTRAIN_PROJECT": str(root)}
    created = json.loads(run("keys", "create", "--role", "viewer", "--json", env=env).stdout)
    listed = json.loads(run("keys", "list", "--json", env=env).stdout)
    assert created["id"] in {k["id"] for k in listed} and all("key" not in k for k in listed)
    revoked = json.loads(run("keys", "revoke", created["prefix"], "--json", env=env).stdout)
    assert revoked["revoked_at"] is not None
    bad = run("keys", "create", "--role", "root", env=env)
    assert bad.returncode == 2 and "choose one of" in bad.stderr


def test_capture_import_and_export(proj: tuple[Path, str], tmp_path: Path) -> None:
    root, _ = proj
    src = tmp_path / "chats.jsonl"
    src.write_text(
        "".join(
            json.dumps(
                {"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}]}
            )
            + "\n"
            for i in range(50)
        )
    )
    report = json.loads(run("capture", "import", str(src), "--project", str(root), "--json").stdout)
    assert report["created"] == 50 and report["rejected"] == 0
    out = tmp_path / "out.parquet"
    exported = json.loads(
        run("capture", "export", "-o", str(out), "-f", "parquet", "--project", str(root), "--json").stdout
    )
    assert exported["rows"] == 50 and out.exists()
    bad = run("capture", "export", "-o", str(out), "-f", "csv", "--project", str(root))
    assert bad.returncode == 2 and "jsonl or parquet" in bad.stderr


def test_import_missing_file_is_exit_2(proj: tuple[Path, str], tmp_path: Path) -> None:
    out = run("capture", "import", str(tmp_path / "nope.jsonl"), "--project", str(proj[0]))
    assert out.returncode == 2 and "no file" in out.stderr


@pytest.mark.slow  # one of the slowest of the default suite; CI runs it in make test-slow
def test_serve_get_sends_one_request_without_a_socket(proj: tuple[Path, str]) -> None:
    out = run("serve", "--get", "/api/interactions?limit=5", "--project", str(proj[0]))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"interactions": [], "next_cursor": None}
    missing = run("serve", "--get", "/api/interactions/nope", "--project", str(proj[0]))
    assert missing.returncode == 1 and json.loads(missing.stdout)["error"]["type"] == "NotFound"


@pytest.mark.slow
def test_import_and_export_go_through_a_running_server(tmp_path: Path) -> None:
    from conftest import LiveServer

    out = run("init", str(tmp_path / "p"), "--json")
    root, admin = Path(json.loads(out.stdout)["project"]), json.loads(out.stdout)["admin_key"]
    server = LiveServer(root=root, admin_key=admin).start()
    try:
        src = tmp_path / "chats.jsonl"
        src.write_text(
            "".join(
                json.dumps({"id": f"c{i}", "messages": [{"role": "user", "content": "hi"}]}) + "\n" for i in range(30)
            )
        )
        report = json.loads(run("capture", "import", str(src), "--project", str(root), "--json").stdout)
        assert (report["created"], report["duplicates"]) == (30, 0)
        again = json.loads(run("capture", "import", str(src), "--project", str(root), "--json").stdout)
        assert (again["created"], again["duplicates"]) == (0, 30)
        dest = tmp_path / "out.jsonl"
        exported = run("capture", "export", "-o", str(dest), "--project", str(root), "--json")
        assert exported.returncode == 0, exported.stderr
        assert json.loads(exported.stdout)["rows"] == 30 and len(dest.read_text().splitlines()) == 30
    finally:
        server.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_cleans_up_on_sigterm_and_sigint(proj: tuple[Path, str], sig: signal.Signals) -> None:
    from conftest import LiveServer

    root, admin = proj
    server = LiveServer(root=root, admin_key=admin).start()
    assert server.proc is not None and (root / ".posttrain" / "server.json").exists()
    server.proc.send_signal(sig)
    server.proc.wait(20)
    assert not (root / ".posttrain" / "server.json").exists()
    after = run("sql", "SELECT count(*) AS n FROM api_keys", "--project", str(root), "--json")
    assert after.returncode == 0 and json.loads(after.stdout) == [{"n": 1}]


@pytest.mark.slow
def test_stage_commands_go_through_a_running_server(proj: tuple[Path, str], tmp_path: Path) -> None:
    from conftest import LiveServer

    root, admin = proj
    p = ["--project", str(root)]
    assert run("models", "init-tiny", "base", "--hidden", "32", "--layers", "2", *p).returncode == 0
    logs = tmp_path / "logs.jsonl"
    logs.write_text(
        "".join(
            json.dumps({"id": f"i{i}", "messages": [{"role": "user", "content": f"add {i} 1"}], "response": str(i + 1)})
            + "\n"
            for i in range(20)
        )
    )
    thumbs = tmp_path / "thumbs.jsonl"
    thumbs.write_text(
        "".join(json.dumps({"interaction_id": f"i{i}", "kind": "thumb", "value": True}) + "\n" for i in range(20))
    )
    run("capture", "import", str(logs), *p)
    run("capture", "import", str(thumbs), "--kind", "feedback", *p)
    server = LiveServer(root=root, admin_key=admin).start()
    try:
        built = run("datasets", "build", "sft", "acc", "--json", *p)
        assert built.returncode == 0, built.stderr
        assert json.loads(built.stdout)["row_count"] == 20
        trained = run("train", "sft", "--model", "base", "--dataset", "acc", "--output", "s1", "--max-steps", "2", *p)
        assert trained.returncode == 0, trained.stderr
        assert "registered causal-lm s1" in trained.stdout
        lineage = json.loads(run("models", "lineage", "s1", "--json", *p).stdout)
        assert [step["model"]["name"] for step in lineage["chain"]] == ["s1", "base"]
        taken = run("train", "sft", "--model", "base", "--dataset", "acc", "--output", "s1", *p)
        assert taken.returncode == 2 and "exists" in taken.stderr
    finally:
        server.stop()
