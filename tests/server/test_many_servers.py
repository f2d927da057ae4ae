"""Two ``posttrain serve`` processes on one PostgreSQL warehouse, as two machines of a team would run.

Each server has its own project folder (``posttrain init --warehouse URL``: the second joins the
first's warehouse and keys). A client spreads capture batches across both, one server is killed
with SIGKILL mid-stream and its unanswered batch is resent to the other: every acknowledged event
is stored exactly once, a resent batch is answered ``duplicate``, and an experiment's sticky
assignment is the same through either server. A key revoked through one server stops working on
the other.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import LiveServer
from posttrain import experiments as ex
from posttrain.models.registry import register_model
from posttrain.project import open_project
from posttrain.server.auth import KEY_CACHE_SECONDS


def _init(root: Path, url: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "posttrain", "init", str(root), "--warehouse", url, "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _batch(name: str) -> list[dict[str, Any]]:
    return [{"id": f"{name}-{i}", "messages": [{"role": "user", "content": name}], "response": "ok"} for i in range(40)]


def _post(http: httpx.Client, batch: list[dict[str, Any]]) -> dict[str, str]:
    reply = http.post("/api/capture/interactions", json={"interactions": batch})
    assert reply.status_code == 200, reply.text
    return {r["id"]: r["status"] for r in reply.json()["results"]}


@pytest.fixture
def two_servers(tmp_path: Path, pg_url: str, tiny_model: Path) -> Any:
    first, second = _init(tmp_path / "a", pg_url), _init(tmp_path / "b", pg_url)
    admin = first["admin_key"]
    assert admin and second["admin_key"] is None  # the second machine joined: the team's keys work there
    project = open_project(tmp_path / "a")
    register_model(project, "base", tiny_model)
    register_model(project, "cand", tiny_model)
    variants = [ex.Variant(name="control", model="base", share=0.5), ex.Variant(name="new", model="cand", share=0.5)]
    ex.create_experiment(project, ex.ExperimentConfig(name="exp", variants=variants))
    experiment = ex.start(project, "exp")
    project.close()
    servers = [LiveServer(root=tmp_path / name, admin_key=admin).start() for name in ("a", "b")]
    yield servers, experiment
    for server in servers:
        server.stop()


def test_two_servers_capture_serve_and_assign_alike_through_a_kill_9(two_servers: Any) -> None:
    (a, b), experiment = two_servers
    # sticky assignment: the same user gets the same variant through either server
    body = {"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    served: dict[str, list[str]] = {}
    for server in (a, b):
        with server.http() as http:
            for n in range(8):
                reply = http.post("/v1/chat/completions", json=body, headers={"X-Posttrain-User": f"u{n}"})
                assert reply.status_code == 200, reply.text
                served.setdefault(f"u{n}", []).append(reply.headers["X-Posttrain-Interaction-Id"])
    with a.http() as http:
        rows = http.post("/api/sql", json={"sql": "SELECT id, user_id, variant FROM interactions"}).json()["rows"]
    variant_of = {row[0]: (row[1], row[2]) for row in rows}
    for user, ids in served.items():
        variants = {variant_of[i][1] for i in ids}
        assert variants == {ex.assign(experiment, user)[0]}, (user, variants)
    assert {v for _, v in variant_of.values()} == {"control", "new"}

    # capture through both; b is killed while its sender is mid-stream
    acked: dict[str, str] = {}
    unanswered: list[list[dict[str, Any]]] = []
    b_replies = threading.Event()
    stop = threading.Event()

    def send_to_b() -> None:
        with b.http() as http:
            n = 0
            while not stop.is_set():
                batch = _batch(f"b{n}")
                n += 1
                try:
                    acked.update(_post(http, batch))
                    b_replies.set()
                except httpx.HTTPError:
                    unanswered.append(batch)
                    return

    sender = threading.Thread(target=send_to_b, daemon=True)
    sender.start()
    with a.http() as http:
        for n in range(10):
            acked.update(_post(http, _batch(f"a{n}")))
            if n == 3:
                assert b_replies.wait(60)
                b.kill()
        sender.join(30)
        stop.set()
        assert not sender.is_alive() and len(unanswered) == 1, "b's sender saw its server die mid-batch"
        resent = _post(http, unanswered[0])  # stored by b before it died, or not: either way once
        assert set(resent.values()) <= {"created", "duplicate"}
        acked.update(resent)
        again = _post(http, _batch("a0"))  # a batch acknowledged before: every event a duplicate
        assert set(again.values()) == {"duplicate"}
        counts = http.post("/api/sql", json={"sql": "SELECT count(*), count(DISTINCT id) FROM interactions"}).json()
    stored, distinct = counts["rows"][0]
    assert stored == distinct == len(acked) + len(variant_of)  # every acknowledged event once, nothing else
    assert sum(1 for k in acked if k.startswith("b")) >= 40


def test_a_key_revoked_through_one_server_stops_working_on_the_other(two_servers: Any) -> None:
    (a, b), _ = two_servers
    with a.http() as http:
        created = http.post("/api/keys", json={"role": "viewer"}).json()
    with b.http(created["key"]) as viewer:
        assert viewer.post("/api/sql", json={"sql": "SELECT 1"}).status_code == 200  # cached on b now
    with a.http() as http:
        assert http.delete(f"/api/keys/{created['id']}").status_code == 200
    deadline = time.monotonic() + KEY_CACHE_SECONDS + 5
    with b.http(created["key"]) as viewer:
        while viewer.post("/api/sql", json={"sql": "SELECT 1"}).status_code != 401:
            assert time.monotonic() < deadline, "b still takes a key revoked through a"
            time.sleep(0.5)
