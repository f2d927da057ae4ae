"""names: one rule for every name that becomes a file or folder, in the library, the API and the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from posttrain import datasets
from posttrain import experiments as ex
from posttrain.errors import InvalidInput
from posttrain.models.registry import check_name_free
from posttrain.names import check_name
from posttrain.project import Project

BAD = ["..", ".", "../x", "..\\..\\x", "a/b", "a\\b", "C:x", "", "x" * 300, "a\x00b", "a\nb", ".hidden", "a..b",
       "nul", "con.txt", "trailing."]  # fmt: skip
BAD_IDS = [repr(name[:12]) for name in BAD]
GOOD = ["support", "v1.2_a-b", "Qwen2.5-0.5B", "x" * 128, "7"]


@pytest.mark.parametrize("name", BAD, ids=BAD_IDS)
def test_check_name_refuses_what_is_not_one_path_component(name: str) -> None:
    with pytest.raises(InvalidInput, match="not allowed") as caught:
        check_name(name, field="output")
    assert caught.value.field == "output" and caught.value.exit_code == 2


@pytest.mark.parametrize("name", GOOD)
def test_check_name_accepts_ordinary_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", BAD, ids=BAD_IDS)
def test_write_version_refuses_a_bad_dataset_name_and_writes_nothing(project: Project, name: str) -> None:
    before = sorted(project.root.rglob("*"))
    with pytest.raises(InvalidInput, match="dataset name"):
        datasets.write_version(project, name, "sft", pa.table({"prompt": ["p"]}), recipe={}, sources={})
    assert sorted(project.root.rglob("*")) == before


def test_write_version_keeps_an_ordinary_name_under_artifacts(project: Project) -> None:
    version = datasets.write_version(project, "v1.2_a-b", "sft", pa.table({"prompt": ["p"]}), recipe={}, sources={})
    assert Path(version.path).parent == project.artifacts / "datasets" / "v1.2_a-b" / "v1"


@pytest.mark.parametrize("name", BAD, ids=BAD_IDS)
def test_model_and_experiment_names_follow_the_rule(project: Project, name: str) -> None:
    with pytest.raises(InvalidInput, match="model name"):
        check_name_free(project, name)
    with pytest.raises(ValidationError, match="not allowed"):
        _experiment(name)


def _experiment(name: str) -> ex.ExperimentConfig:
    variants = [{"name": "control", "model": "base", "share": 0.5}, {"name": "new", "model": "cand", "share": 0.5}]
    return ex.ExperimentConfig.model_validate({"name": name, "variants": variants})


def _requests(name: str) -> list[tuple[str, dict[str, Any], str]]:
    """(path, body, the field the 400 must name) for every write route that takes a name."""
    variants = [{"name": "control", "model": "base", "share": 0.5}, {"name": "new", "model": "cand", "share": 0.5}]
    return [
        ("/api/datasets/build", {"kind": "sft", "name": name}, "name"),
        ("/api/experiments", {"name": name, "variants": variants}, "name"),
        ("/api/routes", {"name": name, "experiment": "exp"}, "name"),
        ("/api/routes/cohorts", {"name": name, "cohort": "minor", "condition": "age < 18"}, "name"),
        ("/api/train/sft", {"model": "base", "dataset": "d", "output": name}, "output"),
    ]


@pytest.mark.parametrize("name", BAD, ids=BAD_IDS)
def test_api_refuses_bad_names_with_400_naming_the_field(client: TestClient, name: str) -> None:
    for path, body, field in _requests(name):
        reply = client.post(path, json=body)
        assert reply.status_code == 400, (path, reply.text)
        assert reply.json()["error"]["field"] == field, (path, reply.text)
    assert not list((client.app.state.project.artifacts).rglob("*"))  # type: ignore[attr-defined]


def test_api_accepts_ordinary_names(client: TestClient) -> None:
    variants = [{"name": "control", "model": "base", "share": 0.5}, {"name": "new", "model": "cand", "share": 0.5}]
    assert client.post("/api/experiments", json={"name": "exp-1.2_b", "variants": variants}).status_code == 201
    assert client.post("/api/routes", json={"name": "to-exp", "experiment": "exp-1.2_b"}).status_code == 201
    rule = {"name": "minors", "cohort": "minor", "condition": "age < 18"}
    assert client.post("/api/routes/cohorts", json=rule).status_code == 201


@pytest.mark.parametrize("name", ["..", "..\\..\\x", "C:x"])
def test_cli_refuses_a_bad_name_in_one_line_with_exit_2(project: Project, name: str) -> None:
    root = project.root
    project.close()
    args = ["datasets", "build", "sft", name, "--project", str(root)]
    out = subprocess.run([sys.executable, "-m", "posttrain", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: dataset name") and len(out.stderr.strip().splitlines()) == 1
