"""No code from the wire: a module path wherever a scorer, reward, judge or verifier is accepted is a 400.

Through a real server whose PYTHONPATH holds a module that, if ever imported, writes a marker
file; and in-process, where ``sys.modules`` must not gain it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import LiveServer
from posttrain import keys
from posttrain.project import Project, init_project, open_project
from posttrain.server import create_app

MODULE = "pt_wire_marker"
_SOURCE = """
import os, pathlib
pathlib.Path(os.environ["PT_WIRE_MARKER"]).write_text("imported")

def f(*args, **kwargs):
    pathlib.Path(os.environ["PT_WIRE_MARKER"]).write_text("called")
    return 1.0
"""


def _specs(module: str) -> list[str]:
    return [f"python:{module}:f", f"{module}:f", f"{module}.sub:f", "os:system", "python:os:system", "pydoc:pipepager"]


def _requests(spec: str) -> list[tuple[str, dict[str, Any], str]]:
    """Every place a request names a function: (path, body, the field the 400 must name)."""
    suite = {"dataset": "ev"}
    train = {"model": "base", "dataset": "prompts", "output": "out"}
    return [
        ("/api/evals/run", {"model": "base", "suite": {**suite, "scorers": [spec]}}, "suite.scorers"),
        ("/api/evals/compare", {"candidate": "base", "suite": {**suite, "judge": spec}}, "suite.judge"),
        ("/api/evals/compare", {"candidate": "base", "suite": {**suite, "judge": f"function:{spec}"}}, "suite.judge"),
        ("/api/evals/gate", {"candidate": "base", "suite": {**suite, "judge": f"verifier:{spec}"}}, "suite.judge"),
        ("/api/train/grpo", {**train, "reward": [spec]}, "reward"),
        ("/api/train/grpo", {**train, "reward": [f"function:{spec}"]}, "reward"),
        ("/api/train/rloo", {**train, "reward": [f"verifier:{spec}"]}, "reward"),
        (
            "/api/train/distill",
            {"student": "s", "teacher": "base", "prompts": "p", "output": "o", "verifier": spec},
            "verifier",
        ),
        ("/api/datasets/build", {"kind": "prompts", "name": "p", "config": {"verifier": spec}}, "verifier"),
        ("/api/loop/run", {"recipe": {"grpo": {"reward": [spec]}}}, "grpo.reward"),
        ("/api/loop/run", {"recipe": {"grpo": {"verifier": spec}}}, "grpo.verifier"),
        ("/api/loop/run", {"recipe": {"eval": {"dataset": "ev", "scorers": [spec]}}}, "eval.scorers"),
    ]


@pytest.fixture(scope="module")
def marker_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wire_code")
    (folder / f"{MODULE}.py").write_text(_SOURCE)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, marker_module: Path) -> Iterator[tuple[LiveServer, Path]]:
    proj = init_project(tmp_path_factory.mktemp("wire") / "proj")
    admin = keys.create_key(proj, "admin").key
    proj.close()
    marker = marker_module / "marker.txt"
    env = {"PYTHONPATH": str(marker_module), "PT_WIRE_MARKER": str(marker)}
    live = LiveServer(root=proj.root, admin_key=admin, env=env).start()
    yield live, marker
    live.stop()


@pytest.mark.parametrize("spec", _specs(MODULE))
def test_module_path_in_a_request_is_400_and_nothing_is_imported(server: tuple[LiveServer, Path], spec: str) -> None:
    live, marker = server
    with live.http() as http:  # an admin key: even the strongest key cannot send code
        for path, body, field in _requests(spec):
            reply = http.post(path, json=body)
            assert reply.status_code == 400, (path, reply.text)
            error = reply.json()["error"]
            assert error["field"] == field, (path, error)
            assert "module" in error["message"] or "must be" in error["message"], (path, error)
        assert http.get("/api/jobs").json() == []  # refused before any job started
    assert not marker.exists()


def test_module_path_in_process_leaves_sys_modules_alone(
    project: Project, admin_key: str, marker_module: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(marker_module))
    monkeypatch.setenv("PT_WIRE_MARKER", str(marker_module / "in_process.txt"))
    with TestClient(create_app(project), headers={"Authorization": f"Bearer {admin_key}"}) as client:
        for spec in _specs(MODULE):
            for path, body, _ in _requests(spec):
                assert client.post(path, json=body).status_code == 400, path
    assert MODULE not in sys.modules and not (marker_module / "in_process.txt").exists()


def test_registered_function_is_used_by_name(
    project: Project, admin_key: str, marker_module: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same module, registered in posttrain.toml, is what a request may name (and only then is imported)."""
    monkeypatch.syspath_prepend(str(marker_module))
    monkeypatch.setenv("PT_WIRE_MARKER", str(marker_module / "registered.txt"))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    with (project.root / "posttrain.toml").open("a") as f:
        f.write(f'\n[functions.verifiers]\nmarked = "{MODULE}:f"\n')

    reopened = open_project(project.root)
    assert reopened.settings.functions.verifiers == {"marked": f"{MODULE}:f"}
    with TestClient(create_app(reopened), headers={"Authorization": f"Bearer {admin_key}"}) as client:
        reply = client.post("/api/evals/run", json={"model": "base", "suite": {"dataset": "ev", "scorers": ["marked"]}})
    assert reply.status_code == 404 and reply.json()["error"]["field"] == "model"  # past the name check
    assert (marker_module / "registered.txt").read_text() == "imported"
    reopened.close()
