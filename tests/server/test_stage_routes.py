"""The models, datasets and jobs routes through the real app in-process."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from posttrain import capture, keys
from posttrain.models.registry import register_model
from posttrain.project import Project
from posttrain.server import create_app

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")


@pytest.fixture
def seeded(project: Project) -> Project:
    interactions = [
        {
            "id": f"i{i}",
            "user_id": f"u{i % 5}",
            "messages": [{"role": "user", "content": f"add {i} 1"}],
            "response": str(i + 1),
            "metadata": {"answer": str(i + 1)},
        }
        for i in range(20)
    ]
    capture.capture(project, "interactions", interactions)
    capture.capture(
        project, "feedback", [{"interaction_id": f"i{i}", "kind": "thumb", "value": True} for i in range(20)]
    )
    return project


def test_build_list_and_show_a_dataset(seeded: Project, client: TestClient) -> None:
    built = client.post("/api/datasets/build", json={"kind": "sft", "name": "acc", "config": {"min_rating": 4}})
    assert built.status_code == 201, built.text
    assert built.json()["row_count"] == 20 and built.json()["version"] == 1
    assert [v["name"] for v in client.get("/api/datasets").json()] == ["acc"]
    shown = client.get("/api/datasets/acc@1", params={"rows": 2}).json()
    assert len(shown["rows"]) == 2 and shown["rows"][0]["completion"][0]["role"] == "assistant"


def test_build_eval_excluding_a_training_version_works_in_the_sandboxed_server(
    seeded: Project, client: TestClient
) -> None:
    assert client.post("/api/datasets/build", json={"kind": "sft", "name": "train"}).status_code == 201
    built = client.post(
        "/api/datasets/build",
        json={"kind": "eval", "name": "ev", "config": {"fraction": 0.5, "exclude": ["train@1"], "seed": 1}},
    )
    assert built.status_code in (201, 400), built.text  # every prompt may be a duplicate of training
    if built.status_code == 400:
        assert "no rows match" in built.json()["error"]["message"]


def test_bad_build_request_names_the_field(seeded: Project, client: TestClient) -> None:
    bad = client.post("/api/datasets/build", json={"kind": "sft", "name": "x", "config": {"min_rating": "high"}})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "min_rating"
    missing = client.get("/api/datasets/nope")
    assert missing.status_code == 404 and "datasets list" in missing.json()["error"]["message"]


def test_models_and_lineage(project: Project, client: TestClient, tiny_model: Path) -> None:
    register_model(project, "base", tiny_model)
    assert [m["name"] for m in client.get("/api/models").json()] == ["base"]
    assert client.get("/api/models/base").json()["kind"] == "causal-lm"
    assert client.get("/api/models/base/lineage").json()["chain"][0]["model"]["name"] == "base"
    assert client.get("/api/models/nope").status_code == 404


def test_jobs_are_listed(project: Project, client: TestClient) -> None:
    from posttrain.jobs import start_job

    job = start_job(project, "train.sft", {"lr": 1e-4})
    job.metric(1, loss=2.5)
    listed = client.get("/api/jobs", params={"kind": "train.sft"}).json()
    assert [j["id"] for j in listed] == [job.id]
    assert client.get(f"/api/jobs/{job.id}").json()["metrics"] == [{"step": 1, "loss": 2.5}]


@pytest.mark.parametrize(
    ("role", "method", "path", "allowed"),
    [
        ("viewer", "GET", "/api/models", True),
        ("viewer", "GET", "/api/datasets", True),
        ("viewer", "POST", "/api/datasets/build", False),
        ("ingest", "GET", "/api/models", False),
        ("ingest", "GET", "/api/jobs", False),
        ("annotator", "GET", "/api/datasets", True),
    ],
)
def test_stage_routes_check_roles(project: Project, role: str, method: str, path: str, allowed: bool) -> None:
    key = keys.create_key(project, role).key
    with TestClient(create_app(project, sandbox_sql=False)) as c:
        body = {"kind": "sft", "name": "x"} if method == "POST" else None
        response = c.request(method, path, json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code < 500, response.text  # a 500 is never "allowed"
    assert (response.status_code != 403) is allowed, response.text


def _sft_rows(n: int) -> Any:
    import pyarrow as pa

    rows = [
        {
            "prompt": [{"role": "user", "content": f"add {i} 1"}],
            "completion": [{"role": "assistant", "content": str(i + 1)}],
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows)


def test_training_runs_in_the_server_and_answers_202(project: Project, client: TestClient, tiny_model: Path) -> None:
    from posttrain.datasets import write_version

    register_model(project, "base", tiny_model)
    write_version(project, "toy", "sft", _sft_rows(32), recipe={}, sources={})
    body = {"model": "base", "dataset": "toy", "output": "sft-http", "max_steps": 3, "batch_size": 8}
    started = client.post("/api/train/sft", json=body)
    assert started.status_code == 202, started.text
    job_url = started.json()["status_url"]
    deadline = time.monotonic() + 120
    while (job := client.get(job_url).json())["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job["state"] == "succeeded", job.get("error")
    assert job["output"].endswith("models/sft-http")
    assert client.get("/api/models/sft-http").json()["run_id"] == job["id"]


@pytest.mark.parametrize(
    ("method", "body", "status", "field"),
    [
        ("ppo", {}, 400, "method"),
        ("sft", {"model": "base", "dataset": "toy", "output": "x", "learning_rate": 5}, 400, "learning_rate"),
        ("sft", {"model": "nope", "dataset": "toy", "output": "x"}, 404, "model"),
    ],
)
def test_training_route_refuses_bad_requests_before_any_job(
    project: Project, client: TestClient, method: str, body: dict[str, Any], status: int, field: str
) -> None:
    response = client.post(f"/api/train/{method}", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["field"] == field
    assert client.get("/api/jobs").json() == []


def test_training_route_names_every_method() -> None:
    from typing import get_args

    from posttrain.server.routes.train import Method
    from posttrain.train.methods import METHODS

    assert set(get_args(Method)) == set(METHODS)
