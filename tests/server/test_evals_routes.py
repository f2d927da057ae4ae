"""The evals routes through the real app in-process: run, list, compare, gate, roles, bad input."""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from posttrain import keys
from posttrain.datasets import write_version
from posttrain.models.registry import register_model
from posttrain.models.tiny import init_tiny
from posttrain.project import Project
from posttrain.server import create_app

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

SUITE = {"dataset": "ev", "max_new_tokens": 4}


def speaks(completion: str, answer: str | None, **row: object) -> float:
    """1 when the model says anything at all."""
    return float(bool(completion))


@pytest.fixture
def suite_project(project: Project) -> Project:
    """A tiny model 'base', a mute copy 'silent' and an eval dataset 'ev' of six prompts in cohorts a and b."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    project.settings.functions.verifiers["speaks"] = f"{__name__}:speaks"  # as posttrain.toml would
    base = init_tiny(project, "base", hidden=32, layers=2, heads=2)
    model = AutoModelForCausalLM.from_pretrained(base.path)
    model.model.norm.weight.data.zero_()  # every logit 0: it only emits <pad>, so it says nothing
    folder = project.artifacts / "models" / "silent"
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base.path).save_pretrained(folder)
    register_model(project, "silent", folder)
    table = pa.table(
        {
            "prompt": [[{"role": "user", "content": f"say {i}"}] for i in range(6)],
            "answer": [str(i) for i in range(6)],
            "cohort": ["a", "b"] * 3,
        }
    )
    write_version(project, "ev", "eval", table, recipe={}, sources={})
    return project


def _finished(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST an eval, which answers 202 with its job at once; follow the job and return its record."""
    started = client.post(path, json=body)
    assert started.status_code == 202, started.text
    for _ in range(600):
        job = client.get(started.json()["status_url"]).json()
        if job["state"] != "running":
            break
        time.sleep(0.1)
    assert job["state"] == "succeeded", job
    return job["result"]  # type: ignore[no-any-return]


def test_run_eval_stores_a_run_that_is_listed(suite_project: Project, client: TestClient) -> None:
    run = _finished(
        client, "/api/evals/run", {"model": "base", "suite": {**SUITE, "scorers": ["exact_match", "regex"]}}
    )
    assert run["model"] == "base" and run["dataset"] == "ev@1" and run["prompts"] == 6
    assert set(run["scores"]) == {"exact_match", "regex"} and set(run["scores"]["regex"]["cohorts"]) == {"a", "b"}
    assert [r["id"] for r in client.get("/api/evals", params={"model": "base"}).json()] == [run["id"]]
    assert client.get("/api/evals", params={"dataset": "ev@2"}).json() == []
    assert client.get(f"/api/jobs/{run['job_id']}").json()["state"] == "succeeded"


def test_compare_and_gate_answer_with_the_verdict(suite_project: Project, client: TestClient) -> None:
    suite = {**SUITE, "scorers": ["speaks"]}
    compared = _finished(client, "/api/evals/compare", {"candidate": "silent", "baseline": "base", "suite": suite})
    assert compared["differences"][suite["scorers"][0]]["overall"]["mean"] == -1.0
    verdict = _finished(client, "/api/evals/gate", {"candidate": "silent", "baseline": "base", "suite": suite})
    assert verdict["passed"] is False and [c["slice"] for c in verdict["checks"]] == [
        "overall",
        "cohort 'a'",
        "cohort 'b'",
    ]
    passed = _finished(
        client,
        "/api/evals/gate",
        {"candidate": "base", "baseline": "silent", "suite": suite, "rule": "mean", "margin": 0},
    )
    assert passed["passed"] is True


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("run", {"model": "base"}, 400, "suite"),
        ("run", {"model": "base", "suite": {}}, 400, "suite.dataset"),
        ("run", {"model": "base", "suite": {**SUITE, "samples": 0}}, 400, "suite.samples"),
        ("run", {"model": "base", "suite": {**SUITE, "seeds": 1}}, 400, "suite.seeds"),
        ("run", {"model": "base", "suite": SUITE, "turbo": True}, 400, "turbo"),
        ("run", {"model": "ghost", "suite": SUITE}, 404, "model"),
        ("compare", {"candidate": "base", "suite": SUITE}, 404, "baseline"),  # nothing is serving
        ("compare", {"candidate": "base", "suite": {**SUITE, "judge": "coin"}}, 400, "suite.judge"),
        ("gate", {"candidate": "base", "baseline": "silent", "suite": SUITE, "rule": "vibes"}, 400, "rule"),
        ("gate", {"candidate": "base", "baseline": "silent", "suite": SUITE, "margin": -1}, 400, "margin"),
        ("gate", {"candidate": "base", "baseline": "silent", "suite": SUITE, "metric": "bleu"}, 400, "metric"),
    ],
)
def test_bad_eval_request_is_4xx_naming_the_field(
    project: Project, client: TestClient, path: str, body: dict[str, Any], status: int, field: str
) -> None:
    response = client.post(f"/api/evals/{path}", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["field"] == field
    assert client.get("/api/jobs").json() == []  # refused before any eval started


def test_eval_is_refused_while_a_training_run_holds_the_server(project: Project, client: TestClient) -> None:
    runner = client.app.state.runner  # type: ignore[attr-defined]
    runner.claim()
    try:
        busy = client.post("/api/evals/run", json={"model": "base", "suite": SUITE})
    finally:
        runner.release()
    assert busy.status_code == 409 and "in progress" in busy.json()["error"]["message"]


@pytest.mark.parametrize(
    ("role", "method", "path", "allowed"),
    [
        ("viewer", "GET", "/api/evals", True),
        ("viewer", "POST", "/api/evals/run", False),
        ("viewer", "POST", "/api/evals/gate", False),
        ("annotator", "GET", "/api/evals", False),
        ("ingest", "POST", "/api/evals/compare", False),
        ("admin", "POST", "/api/evals/run", True),
    ],
)
def test_eval_routes_check_roles(project: Project, role: str, method: str, path: str, allowed: bool) -> None:
    key = keys.create_key(project, role).key
    with TestClient(create_app(project)) as c:
        body = (
            {"model" if path.endswith("/run") else "candidate": "ghost", "suite": SUITE} if method == "POST" else None
        )
        response = c.request(method, path, json=body, headers={"Authorization": f"Bearer {key}"})
    assert (response.status_code != 403) is allowed, response.text
