"""/api/annotate through the real app: queues, fill, the annotator's work, roles, errors, stats, export."""

from __future__ import annotations

import io
import threading
import time
from datetime import timedelta
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from posttrain import keys
from posttrain.capture import capture
from posttrain.clock import utc_now
from posttrain.project import Project

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

API = "/api/annotate"


@pytest.fixture
def role_keys(project: Project) -> dict[str, str]:
    """One key per role but admin (the client's own), plus a second annotator."""
    made = {role: keys.create_key(project, role, name=f"t {role}").key for role in ("annotator", "viewer", "ingest")}
    made["annotator2"] = keys.create_key(project, "annotator", name="t annotator 2").key
    return made


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _interactions(project: Project, n: int) -> list[str]:
    events = [
        {"id": f"i{i}", "user_id": f"u{i}", "messages": [{"role": "user", "content": f"question {i}"}],
         "response": f"answer {i}"}
        for i in range(n)
    ]  # fmt: skip
    assert all(r.status == "created" for r in capture(project, "interactions", events))
    return [e["id"] for e in events]


def _queue(client: TestClient, name: str = "ratings", **config: Any) -> dict[str, Any]:
    body = {"name": name, "task": "rating", "gold_share": 0, **config}
    reply = client.post(f"{API}/queues", json=body)
    assert reply.status_code == 201, reply.text
    return reply.json()  # type: ignore[no-any-return]


def _filled(client: TestClient, project: Project, n: int = 3, **config: Any) -> list[str]:
    ids = _interactions(project, n)
    _queue(client, **config)
    reply = client.post(f"{API}/queues/ratings/fill", json={"where": "true"})
    assert reply.status_code == 200 and reply.json()["added"] == n, reply.text
    return ids


def _error(reply: Any, status: int, field: str | None = None) -> str:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    if field is not None:
        assert error["field"] == field, reply.text
    return str(error["message"])


def test_create_queue_lists_and_shows_it_with_guidelines(client: TestClient) -> None:
    created = _queue(client, guidelines="Rate helpfulness.", scale=[1, 7])
    assert created["state"] == "open" and created["scale"] == [1, 7] and created["version"] == 1
    listed = client.get(f"{API}/queues").json()
    assert [q["name"] for q in listed] == ["ratings"] and listed[0]["items"] == 0
    assert client.get(f"{API}/queues", params={"state": "paused"}).json() == []
    shown = client.get(f"{API}/queues/ratings").json()
    assert shown["guidelines"] == "Rate helpfulness." and shown["labels"] == 0


def test_create_queue_twice_is_409(client: TestClient) -> None:
    _queue(client)
    assert "exists" in _error(client.post(f"{API}/queues", json={"name": "ratings", "task": "rating"}), 409, "name")


@pytest.mark.parametrize(
    ("body", "word"),
    [
        ({"name": "q", "task": "rating", "scale": [5, 1]}, "scale"),
        ({"name": "q", "task": "rewrite", "scale": [5687640256838755711573594254646181888, 611]}, "scale"),  # was a 500
        ({"name": "q", "task": "classify", "categories": ["one"]}, "categories"),
        ({"name": "q", "task": "nope"}, "task"),
        ({"name": "q", "task": "rating", "overlap": 11}, "overlap"),
        ({"name": "q", "task": "rating", "colour": "red"}, "colour"),
        ({"name": "../q", "task": "rating"}, "name"),
        ({"name": "q", "task": "rating", "guidelines": "x" * 20_001}, "guidelines"),
    ],
)
def test_create_queue_bad_config_is_400_naming_the_field(client: TestClient, body: dict[str, Any], word: str) -> None:
    assert word in _error(client.post(f"{API}/queues", json=body), 400)


def test_unknown_queue_is_404(client: TestClient) -> None:
    for reply in (
        client.get(f"{API}/queues/nope"),
        client.post(f"{API}/queues/nope/fill", json={"where": "true"}),
        client.post(f"{API}/queues/nope/next"),
        client.get(f"{API}/queues/nope/stats"),
        client.get(f"{API}/queues/nope/export"),
    ):
        assert "annotate queues list" in _error(reply, 404, "queue")


def test_state_and_guidelines_change_the_queue(client: TestClient) -> None:
    _queue(client)
    assert client.post(f"{API}/queues/ratings/state", json={"state": "paused"}).json()["state"] == "paused"
    assert client.get(f"{API}/queues", params={"state": "paused"}).json()[0]["name"] == "ratings"
    _error(client.post(f"{API}/queues/ratings/state", json={"state": "asleep"}), 400, "state")
    revised = client.put(f"{API}/queues/ratings/guidelines", json={"guidelines": "Be strict."})
    assert revised.status_code == 200 and revised.json()["guidelines_version"] == 2
    assert client.get(f"{API}/queues/ratings").json()["guidelines"] == "Be strict."


@pytest.mark.parametrize(
    ("body", "word"),
    [
        ({"source": "everything"}, "source"),
        ({}, "exactly one"),
        ({"where": "true", "dataset": "d@1"}, "exactly one"),
        ({"interaction_ids": ["x"] * 10_001}, "interaction_ids"),
        ({"pairs": [["a"]]}, "pairs"),
        ({"where": "true", "limit": 0}, "limit"),
        ({"where": "no_such_column = 1"}, "where"),
    ],
)
def test_fill_bad_source_is_400_naming_it(
    client: TestClient, project: Project, body: dict[str, Any], word: str
) -> None:
    _queue(client)
    assert word in _error(client.post(f"{API}/queues/ratings/fill", json=body), 400)


def test_fill_by_ids_skips_what_is_queued_and_404s_unknown_ids(client: TestClient, project: Project) -> None:
    ids = _filled(client, project, 3)
    again = client.post(f"{API}/queues/ratings/fill", json={"interaction_ids": ids[:2]}).json()
    assert (again["added"], again["existing"]) == (0, 2)
    _error(client.post(f"{API}/queues/ratings/fill", json={"interaction_ids": ["ghost"]}), 404, "interaction_ids")


def test_fill_active_adds_what_selection_picks(client: TestClient, project: Project) -> None:
    _interactions(project, 4)
    _queue(client)
    reply = client.post(f"{API}/queues/ratings/fill", json={"active": 2})
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert result["strategy"] == "active" and result["budget"] == 2 and result["added"] == 2
    assert client.get(f"{API}/queues/ratings").json()["items"] == 2
    _error(client.post(f"{API}/queues/ratings/fill", json={"active": 0}), 400, "active")


def test_next_submit_until_done_then_204(client: TestClient, project: Project, role_keys: dict[str, str]) -> None:
    ids = _filled(client, project, 2)
    worker = _as(role_keys["annotator"])
    seen = []
    for _ in ids:
        lease = client.post(f"{API}/queues/ratings/next", headers=worker)
        assert lease.status_code == 200, lease.text
        assignment = lease.json()
        assert assignment["label_schema"] == {"task": "rating", "scale": [1, 5]}
        assert assignment["item"]["prompt"][0]["role"] == "user" and assignment["item"]["response"].startswith("answer")
        seen.append(assignment["item"]["interaction_id"])
        label = client.post(f"{API}/leases/{assignment['lease_id']}/submit", headers=worker,
                            json={"label": {"rating": 4}, "seconds": 3.5})  # fmt: skip
        assert label.status_code == 201, label.text
        caller = keys.lookup_key(project, role_keys["annotator"])
        assert label.json()["annotator"] == caller.key_id and label.json()["seconds"] == 3.5
    assert sorted(seen) == sorted(ids)
    done = client.post(f"{API}/queues/ratings/next", headers=worker)
    assert done.status_code == 204 and done.content == b""
    summary = client.get(f"{API}/queues/ratings").json()
    assert (summary["done"], summary["labels"]) == (2, 2)


@pytest.mark.parametrize(
    ("label", "field"),
    [({"rating": 9}, "label.rating"), ({"stars": 3}, "label.stars"), ({"rating": "4"}, "label.rating")],
)
def test_submit_bad_label_is_400_naming_the_field(
    client: TestClient, project: Project, label: dict[str, Any], field: str
) -> None:
    _filled(client, project, 1)
    lease = client.post(f"{API}/queues/ratings/next").json()
    _error(client.post(f"{API}/leases/{lease['lease_id']}/submit", json={"label": label}), 400, field)


def test_submit_body_fields_are_bounded(client: TestClient, project: Project) -> None:
    _filled(client, project, 1)
    lease = client.post(f"{API}/queues/ratings/next").json()["lease_id"]
    _error(client.post(f"{API}/leases/{lease}/submit", json={"label": {"rating": 3}, "seconds": -1}), 400, "seconds")
    _error(client.post(f"{API}/leases/{lease}/submit", json={"rating": 3}), 400, "label")
    _error(client.post(f"{API}/leases/{lease}/skip", json={"reason": "x" * 501}), 400, "reason")


def test_next_on_a_paused_queue_is_409(client: TestClient, project: Project) -> None:
    _filled(client, project, 1)
    client.post(f"{API}/queues/ratings/state", json={"state": "paused"})
    assert "queues open ratings" in _error(client.post(f"{API}/queues/ratings/next"), 409, "queue")


def test_submit_on_an_expired_lease_is_409(client: TestClient, project: Project) -> None:
    _filled(client, project, 1)
    lease = client.post(f"{API}/queues/ratings/next").json()["lease_id"]
    project.cursor().execute(
        "UPDATE annotation_leases SET expires_at = ? WHERE id = ?", [utc_now() - timedelta(seconds=1), lease]
    )
    assert "expired" in _error(client.post(f"{API}/leases/{lease}/submit", json={"label": {"rating": 2}}), 409)


def test_another_annotators_lease_is_404(client: TestClient, project: Project, role_keys: dict[str, str]) -> None:
    _filled(client, project, 1)
    lease = client.post(f"{API}/queues/ratings/next").json()["lease_id"]
    reply = client.post(
        f"{API}/leases/{lease}/submit", json={"label": {"rating": 2}}, headers=_as(role_keys["annotator"])
    )
    _error(reply, 404, "lease_id")


def test_skip_gives_the_item_back_to_others(client: TestClient, project: Project, role_keys: dict[str, str]) -> None:
    _filled(client, project, 1)
    first, second = _as(role_keys["annotator"]), _as(role_keys["annotator2"])
    lease = client.post(f"{API}/queues/ratings/next", headers=first).json()["lease_id"]
    skipped = client.post(f"{API}/leases/{lease}/skip", headers=first, json={"reason": "unclear"})
    assert skipped.status_code == 200 and skipped.json() == {"skipped": lease}
    assert client.post(f"{API}/queues/ratings/next", headers=first).status_code == 204
    assert client.post(f"{API}/queues/ratings/next", headers=second).status_code == 200
    _error(client.post(f"{API}/leases/{lease}/skip", headers=first), 409, "lease_id")


def test_gold_is_added_and_checked(client: TestClient, project: Project) -> None:
    ids = _filled(client, project, 2)
    gold = client.post(f"{API}/queues/ratings/gold", json={"interaction_id": ids[0], "answer": {"rating": 5}})
    assert gold.status_code == 201 and gold.json()["added"] == 1, gold.text
    assert client.get(f"{API}/queues/ratings").json()["gold"] == 1
    bad = client.post(f"{API}/queues/ratings/gold", json={"interaction_id": ids[1], "answer": {"rating": 0}})
    _error(bad, 400, "label.rating")


def test_stats_counts_labels_and_annotators(client: TestClient, project: Project, role_keys: dict[str, str]) -> None:
    _filled(client, project, 2, overlap=2)
    for key in ("annotator", "annotator2"):
        for rating in (4, 5):
            lease = client.post(f"{API}/queues/ratings/next", headers=_as(role_keys[key])).json()["lease_id"]
            client.post(f"{API}/leases/{lease}/submit", headers=_as(role_keys[key]), json={"label": {"rating": rating}})
    stats = client.get(f"{API}/queues/ratings/stats", params={"bootstrap": 0}, headers=_as(role_keys["viewer"]))
    assert stats.status_code == 200, stats.text
    body = stats.json()
    assert body["queue"] == "ratings" and body["counts"]["labels"] == 4 and body["counts"]["done"] == 2
    assert len(body["annotators"]) == 2 and all(a["labels"] == 2 for a in body["annotators"])
    _error(client.get(f"{API}/queues/ratings/stats", params={"bootstrap": 5000}), 400, "bootstrap")


def test_export_jsonl_and_parquet_hold_labels_and_consensus(client: TestClient, project: Project) -> None:
    ids = _filled(client, project, 2)
    for rating in (2, 3):
        lease = client.post(f"{API}/queues/ratings/next").json()["lease_id"]
        client.post(f"{API}/leases/{lease}/submit", json={"label": {"rating": rating}, "seconds": 1})
    jsonl = client.get(f"{API}/queues/ratings/export")
    assert jsonl.status_code == 200 and jsonl.headers["content-type"] == "application/x-ndjson"
    rows = [orjson.loads(line) for line in jsonl.content.splitlines()]
    assert sorted(r["interaction_id"] for r in rows) == sorted(ids)
    assert {r["value"]["rating"] for r in rows} == {2, 3} and all(r["seconds"] == 1 for r in rows)
    assert all(r["consensus"] is not None and r["resolved_by"] and r["source"] == "annotator" for r in rows)
    parquet = client.get(f"{API}/queues/ratings/export", params={"format": "parquet"})
    assert parquet.status_code == 200, parquet.text
    table = pq.read_table(io.BytesIO(parquet.content))
    assert table.num_rows == 2 and "consensus" in table.column_names
    assert sorted(orjson.loads(v)["rating"] for v in table.column("value").to_pylist()) == [2, 3]
    _error(client.get(f"{API}/queues/ratings/export", params={"format": "csv"}), 400, "format")


def test_roles_limit_who_creates_labels_and_reads(
    client: TestClient, project: Project, role_keys: dict[str, str]
) -> None:
    _filled(client, project, 1)
    viewer, annotator, ingest = (_as(role_keys[r]) for r in ("viewer", "annotator", "ingest"))
    body = {"name": "other", "task": "accept"}
    assert client.post(f"{API}/queues", json=body, headers=viewer).status_code == 403
    assert client.post(f"{API}/queues", json=body, headers=annotator).status_code == 403
    assert client.post(f"{API}/queues/ratings/fill", json={"where": "true"}, headers=annotator).status_code == 403
    assert client.post(f"{API}/queues/ratings/next", headers=viewer).status_code == 403
    assert client.get(f"{API}/queues", headers=viewer).status_code == 200
    assert client.get(f"{API}/queues", headers=ingest).status_code == 403
    assert client.post(f"{API}/queues/ratings/next", headers=ingest).status_code == 403
    assert client.get(f"{API}/queues/ratings/export", headers=ingest).status_code == 403
    assert client.post(f"{API}/queues/ratings/next", headers=annotator).status_code == 200


def test_two_concurrent_annotators_never_get_the_same_item(
    client: TestClient, project: Project, role_keys: dict[str, str]
) -> None:
    ids = _filled(client, project, 12)
    got: dict[str, list[str]] = {"annotator": [], "annotator2": []}
    failures: list[str] = []

    def work(who: str) -> None:
        headers = _as(role_keys[who])
        while True:
            reply = client.post(f"{API}/queues/ratings/next", headers=headers)
            if reply.status_code == 204:
                return
            if reply.status_code != 200:
                failures.append(reply.text)
                return
            assignment = reply.json()
            got[who].append(assignment["item"]["item_id"])
            done = client.post(f"{API}/leases/{assignment['lease_id']}/submit", headers=headers,
                               json={"label": {"rating": 3}})  # fmt: skip
            if done.status_code != 201:
                failures.append(done.text)

    threads = [threading.Thread(target=work, args=(who,)) for who in got]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert set(got["annotator"]).isdisjoint(got["annotator2"])
    assert len(got["annotator"]) + len(got["annotator2"]) == len(ids)


def test_prelabel_with_an_unknown_judge_is_400_and_without_judges_labels_nothing(
    client: TestClient, project: Project
) -> None:
    _filled(client, project, 2)
    _error(client.post(f"{API}/queues/ratings/prelabel", json={"judges": ["nobody"]}), 400)
    reply = client.post(f"{API}/queues/ratings/prelabel")
    assert reply.status_code == 202, reply.text
    job = client.get(reply.json()["status_url"]).json()
    for _ in range(100):  # the job runs in the server's worker thread
        if job["state"] != "running":
            break
        time.sleep(0.05)
        job = client.get(reply.json()["status_url"]).json()
    assert (job["kind"], job["state"]) == ("annotate.prelabel", "succeeded")
    assert job["result"] == {"queue": "ratings", "labelled": {}, "failed": {}, "resolved_by_judges": 0}
