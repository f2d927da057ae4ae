"""The CLI's remote paths: with ``posttrain serve`` running, datasets, models and train go through its API.

A real server subprocess owns the warehouse (so a local open would be refused); the CLI finds it
through ``.posttrain/server.json`` and calls it with the control token.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import LiveServer
from posttrain import capture, keys
from posttrain.models.tiny import init_tiny
from posttrain.project import init_project

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

pytestmark = pytest.mark.slow  # trains a tiny model through the server


def _rows(n: int) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    interactions = [
        {"id": f"i{i}", "user_id": f"u{i}", "messages": [{"role": "user", "content": f"add {i} 1"}],
         "response": str(i + 1)}
        for i in range(n)
    ]  # fmt: skip
    thumbs = [{"id": f"f{i}", "interaction_id": f"i{i}", "kind": "thumb", "value": "up"} for i in range(n)]
    return interactions, thumbs


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    proj = init_project(tmp_path_factory.mktemp("remote") / "proj")
    admin = keys.create_key(proj, "admin").key
    init_tiny(proj, "base", hidden=32, layers=2, heads=2)
    interactions, thumbs = _rows(24)
    capture.capture(proj, "interactions", interactions)
    capture.capture(proj, "feedback", thumbs)
    proj.close()
    live = LiveServer(root=proj.root, admin_key=admin).start()
    yield live
    live.stop()


def _cli(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "posttrain", *args, "--project", str(server.root)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_datasets_build_list_show_through_the_server(served: LiveServer) -> None:
    built = _cli(served, "datasets", "build", "sft", "accepted", "--json")
    assert built.returncode == 0, built.stderr
    version = json.loads(built.stdout)
    assert (version["name"], version["version"], version["row_count"]) == ("accepted", 1, 24)
    listed = _cli(served, "datasets", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(v["name"], v["version"]) for v in json.loads(listed.stdout)] == [("accepted", 1)]
    shown = _cli(served, "datasets", "show", "accepted@1", "--rows", "2", "--json")
    assert shown.returncode == 0, shown.stderr
    preview = json.loads(shown.stdout)
    assert preview["version"]["row_count"] == 24 and len(preview["rows"]) == 2
    refused = _cli(served, "datasets", "build", "sft", "..")
    assert refused.returncode == 2 and refused.stderr.startswith("error: ") and "Traceback" not in refused.stderr


def test_train_then_models_through_the_server(served: LiveServer) -> None:
    if _cli(served, "datasets", "list", "--json").stdout.strip() == "[]":
        assert _cli(served, "datasets", "build", "sft", "accepted").returncode == 0
    trained = _cli(
        served, "train", "sft", "--model", "base", "--dataset", "accepted", "--output", "sft1",
        "--epochs", "1", "--batch-size", "8", "--json",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    record = json.loads(trained.stdout)
    assert record["name"] == "sft1" and record["kind"] == "causal-lm"
    with served.http() as http:
        job = http.get(f"/api/jobs/{record['run_id']}").json()
    assert job["state"] == "succeeded" and job["kind"] == "train.sft"  # it ran in the server, as a job
    listed = _cli(served, "models", "list", "--json")
    assert listed.returncode == 0 and {m["name"] for m in json.loads(listed.stdout)} == {"base", "sft1"}
    shown = _cli(served, "models", "show", "sft1", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["dataset_versions"] == ["accepted@1"]
    lineage = _cli(served, "models", "lineage", "sft1")
    assert lineage.returncode == 0 and "accepted@1" in lineage.stdout and "base" in lineage.stdout, lineage.stdout
    busy = _cli(served, "train", "sft", "--model", "base", "--dataset", "nope", "--output", "sft2")
    assert busy.returncode == 2 and "nope" in busy.stderr and "Traceback" not in busy.stderr


def test_local_open_is_refused_while_the_server_owns_the_warehouse(served: LiveServer) -> None:
    local = _cli(served, "models", "init-tiny", "extra")
    assert local.returncode != 0 and local.stderr.count("\n") == 1 and "posttrain serve" in local.stderr
    assert Path(served.root, ".posttrain", "server.json").exists()
