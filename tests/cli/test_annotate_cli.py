"""``posttrain annotate``: the whole flow on a real project, one-line errors, and next/submit through a server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import LiveServer
from posttrain import keys
from posttrain.capture import capture
from posttrain.cli import app
from posttrain.project import init_project

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")


def _seed(root: Path, n: int = 3) -> list[str]:
    proj = init_project(root)
    events = [
        {"id": f"i{i}", "user_id": f"u{i}", "messages": [{"role": "user", "content": f"question {i}"}],
         "response": f"answer {i}"}
        for i in range(n)
    ]  # fmt: skip
    assert all(r.status == "created" for r in capture(proj, "interactions", events))
    proj.close()
    return [e["id"] for e in events]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    _seed(tmp_path / "proj")
    return tmp_path / "proj"


def invoke(root: Path, *args: str) -> Any:
    result = CliRunner().invoke(app, ["annotate", *args, "--project", str(root)])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.output) if "--json" in args else result.output


def run(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "posttrain", "annotate", *args, "--project", str(root)]
    full_env = {**os.environ, "POSTTRAIN_PROJECT": "", "COLUMNS": "200", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=120)


def test_annotate_flow_locally_create_fill_next_submit_stats_export(root: Path, tmp_path: Path) -> None:
    guide = tmp_path / "guide.md"
    guide.write_text("Rate how helpful the answer is.", encoding="utf-8")
    created = invoke(root, "queues", "create", "help", "--task", "rating", "--scale", "1", "3",
                     "--guidelines-file", str(guide), "--overlap", "1", "--gold-share", "0", "--json")  # fmt: skip
    assert (created["name"], created["scale"], created["guidelines"]) == ("help", [1, 3], guide.read_text())
    assert invoke(root, "fill", "help", "--where", "i.id <> 'i2'", "--json")["added"] == 2
    assert [q["items"] for q in invoke(root, "queues", "list", "--json")] == [2]
    assignment = invoke(root, "next", "help", "--annotator", "alice", "--json")
    assert assignment["label_schema"] == {"task": "rating", "scale": [1, 3]}
    assert assignment["item"]["prompt"][0]["content"].startswith("question")
    label = invoke(root, "submit", assignment["lease_id"], "--label", '{"rating": 3}', "--annotator", "alice",
                   "--seconds", "2", "--json")  # fmt: skip
    assert (label["annotator"], label["value"], label["seconds"]) == ("alice", {"rating": 3}, 2.0)
    shown = invoke(root, "next", "help", "--annotator", "alice")
    assert "lease " in shown and "[answer] answer" in shown and '"scale":[1,3]' in shown
    lease = shown.split()[1]
    assert "skipped" in invoke(root, "skip", lease, "--annotator", "alice", "--reason", "unsure")
    assert invoke(root, "next", "help", "--annotator", "alice", "--json") is None
    assert "nothing left" in invoke(root, "next", "help", "--annotator", "alice")
    stats = invoke(root, "stats", "help", "--json")
    assert stats["counts"]["labels"] == 1 and stats["counts"]["skips"] == 1
    assert [a["annotator"] for a in stats["annotators"]] == ["alice"]
    assert "annotators" in invoke(root, "stats", "help")
    out = tmp_path / "labels.parquet"
    report = invoke(root, "export", "help", "--output", str(out), "--format", "parquet", "--json")
    table = pq.read_table(out)
    assert report["rows"] == table.num_rows == 1
    row = table.to_pylist()[0]
    assert row["annotator"] == "alice" and json.loads(row["value"]) == {"rating": 3}
    assert json.loads(row["consensus"]) is not None and row["resolved_by"]
    lines = tmp_path / "labels.jsonl"
    invoke(root, "export", "help", "--output", str(lines))
    assert [json.loads(x)["value"] for x in lines.read_text().splitlines()] == [{"rating": 3}]


def test_annotate_local_annotator_defaults_to_the_os_user(root: Path) -> None:
    invoke(root, "queues", "create", "ok", "--task", "accept", "--gold-share", "0")
    selected = invoke(root, "fill", "ok", "--active", "2", "--json")
    assert (selected["strategy"], selected["added"]) == ("active", 2)
    lease = invoke(root, "next", "ok", "--json")["lease_id"]
    label = invoke(root, "submit", lease, "--label", '{"accept": true}', "--json")
    assert label["annotator"].startswith("local:") and len(label["annotator"]) > len("local:")


def test_annotate_queue_states_and_ids_file(root: Path, tmp_path: Path) -> None:
    invoke(root, "queues", "create", "cls", "--task", "classify", "--category", "safe", "--category", "unsafe",
           "--flag-category", "unsafe", "--multi")  # fmt: skip
    ids = tmp_path / "ids.txt"
    ids.write_text("i0\n\ni1\n", encoding="utf-8")
    assert invoke(root, "fill", "cls", "--ids-file", str(ids), "--json")["added"] == 2
    assert invoke(root, "queues", "pause", "cls", "--json")["state"] == "paused"
    assert invoke(root, "queues", "list", "--state", "paused", "--json")[0]["name"] == "cls"
    assert "closed" in invoke(root, "queues", "close", "cls")
    assert invoke(root, "queues", "open", "cls", "--json")["state"] == "open"
    shown = invoke(root, "queues", "show", "cls", "--json")
    assert shown["categories"] == ["safe", "unsafe"] and shown["multi"] is True and shown["items"] == 2
    gold = invoke(root, "gold", "cls", "--interaction", "i2", "--answer", '{"categories": ["safe"]}', "--json")
    assert gold["added"] == 1


def assert_one_error_line(out: subprocess.CompletedProcess[str], *words: str) -> None:
    assert "Traceback" not in out.stdout + out.stderr, out.stderr
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.slow  # one of the slowest of the default suite; CI runs it in make test-slow
def test_annotate_bad_input_is_one_line_exit_2(root: Path, tmp_path: Path) -> None:
    assert run(root, "queues", "create", "q", "--task", "rating", "--gold-share", "0").returncode == 0
    assert run(root, "fill", "q", "--where", "true").returncode == 0
    cases: list[tuple[list[str], list[str]]] = [
        (["queues", "create", "x", "--task", "nope"], ["--task"]),
        (["queues", "create", "x", "--task", "rating", "--scale", "5", "1"], ["scale"]),
        (["queues", "create", "x", "--task", "classify", "--category", "one"], ["categories"]),
        (["queues", "show", "ghost"], ["annotate queues list"]),
        (["fill", "q"], ["exactly one"]),
        (["fill", "q", "--where", "true", "--dataset", "d@1"], ["exactly one"]),
        (["fill", "q", "--ids-file", str(tmp_path / "none.txt")], ["--ids-file"]),
        (["fill", "q", "--where", "no_such_column = 1"], ["where"]),
        (["submit", "nope", "--label", "{not json"], ["--label", "not JSON"]),
        (["submit", "nope", "--label", "[1]"], ["--label", "JSON object"]),
        (["export", "q", "--output", str(tmp_path / "x.csv"), "--format", "csv"], ["format", "jsonl or parquet"]),
        (["stats", "q", "--plot", str(tmp_path / "p.svg")], ["--plot", "no judge"]),
    ]
    for args, words in cases:
        assert_one_error_line(run(root, *args), *words)
    lease = json.loads(run(root, "next", "q", "--annotator", "bob", "--json").stdout)["lease_id"]
    assert_one_error_line(run(root, "submit", lease, "--label", '{"rating": 9}', "--annotator", "bob"), "label.rating")
    assert_one_error_line(run(root, "submit", lease, "--label", '{"rating": 2}', "--annotator", "eve"), "no lease")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LiveServer, str, str]]:
    """A running server over a seeded project; the annotator key and its id."""
    root = tmp_path / "served"
    _seed(root)
    from posttrain.project import open_project

    with open_project(root) as proj:
        admin = keys.create_key(proj, "admin").key
        annotator = keys.create_key(proj, "annotator", name="ann")
    live = LiveServer(root=root, admin_key=admin).start()
    yield live, annotator.key, annotator.id
    live.stop()


@pytest.mark.slow
def test_annotate_next_and_submit_go_through_the_server_as_the_key(
    served: tuple[LiveServer, str, str], tmp_path: Path
) -> None:
    live, key, key_id = served
    assert run(live.root, "queues", "create", "s", "--task", "accept", "--gold-share", "0").returncode == 0
    assert run(live.root, "fill", "s", "--where", "i.id = 'i0'").returncode == 0
    as_key = {"POSTTRAIN_API_KEY": key}
    refused = run(live.root, "next", "s", "--annotator", "alice", env=as_key)
    assert_one_error_line(refused, "--annotator", "API key")
    taken = run(live.root, "next", "s", "--json", env=as_key)
    assert taken.returncode == 0, taken.stderr
    lease = json.loads(taken.stdout)["lease_id"]
    done = run(live.root, "submit", lease, "--label", '{"accept": false}', "--json", env=as_key)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["annotator"] == key_id
    with live.http() as http:  # the server holds the label under the key's id
        rows = http.get("/api/annotate/queues/s/export").text.splitlines()
    assert [json.loads(r)["annotator"] for r in rows] == [key_id]
    left = run(live.root, "next", "s", "--json", env=as_key)
    assert left.returncode == 0 and json.loads(left.stdout) is None
    out = tmp_path / "s.parquet"
    exported = run(live.root, "export", "s", "--output", str(out), "--format", "parquet", "--json")
    assert exported.returncode == 0 and pq.read_table(out).num_rows == 1, exported.stderr
    judged = run(live.root, "prelabel", "s", "--json")  # a job on the server, followed to its result
    assert judged.returncode == 0, judged.stderr
    assert json.loads(judged.stdout) == {"queue": "s", "labelled": {}, "failed": {}, "resolved_by_judges": 0}


@pytest.mark.slow  # one of the slowest of the default suite; CI runs it in make test-slow
def test_prelabel_trusts_a_judge_once_people_agree_with_it_and_it_then_resolves_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "judged"
    proj = init_project(root)
    events = [
        {"id": f"i{i}", "messages": [{"role": "user", "content": f"what is {i}?"}], "response": str(i),
         "metadata": {"answer": str(i if i % 3 else i + 1)}}  # every third answer is wrong
        for i in range(60)
    ]  # fmt: skip
    capture(proj, "interactions", events)
    proj.close()
    with (root / "posttrain.toml").open("a", encoding="utf-8") as toml:
        toml.write('\n[annotate.judges.checker]\nkind = "verifier"\nverifier = "exact_match"\n')
    invoke(root, "queues", "create", "acc", "--task", "accept", "--judge", "checker", "--gold-share", "0")
    invoke(root, "fill", "acc", "--where", "true", "--limit", "60")
    first = invoke(root, "prelabel", "acc", "--json")
    assert first["labelled"] == {"checker": 60} and first["resolved_by_judges"] == 0  # not trusted yet
    for _ in range(30):  # a person labels half, agreeing with the checker
        got = invoke(root, "next", "acc", "--annotator", "ann", "--json")
        right = int(got["item"]["interaction_id"][1:]) % 3 != 0
        invoke(root, "submit", got["lease_id"], "--label", json.dumps({"accept": right}), "--annotator", "ann")
    second = invoke(root, "prelabel", "acc", "--json")
    assert second["labelled"] == {"checker": 0} and second["resolved_by_judges"] == 30
    assert "nothing left" in invoke(root, "next", "acc", "--annotator", "ann")
    stats = invoke(root, "stats", "acc", "--json")
    assert stats["judges"][0]["trusted"] is True
