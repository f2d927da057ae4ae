"""capture: validation, idempotent commits, the in-process HTTP routes, bulk import/export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from posttrain import capture
from posttrain.project import Project, init_project
from posttrain.settings import CaptureSettings
from posttrain.warehouse import queries

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")


def _interaction(i: int | str, **extra: object) -> dict[str, object]:
    return {"id": f"i{i}", "messages": [{"role": "user", "content": f"q{i}"}], "response": f"a{i}", **extra}


def _count(project: Project, table: str) -> int:
    return project.cursor().execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]


def test_capture_stores_and_reports_duplicates(project: Project) -> None:
    first = capture.capture(project, "interactions", [_interaction(1), _interaction(2)])
    again = capture.capture(project, "interactions", [_interaction(1), _interaction(3)])
    assert [r.status for r in first] == ["created", "created"]
    assert [r.status for r in again] == ["duplicate", "created"]
    assert _count(project, "interactions") == 3


def test_capture_duplicate_inside_one_batch_is_stored_once(project: Project) -> None:
    results = capture.capture(project, "interactions", [_interaction(1), _interaction(1)])
    assert [r.status for r in results] == ["created", "duplicate"]
    assert _count(project, "interactions") == 1


def test_capture_mints_ids_when_absent(project: Project) -> None:
    event = _interaction(1)
    del event["id"]
    (result,) = capture.capture(project, "interactions", [event])
    assert result.status == "created" and len(result.id or "") == 26


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": "x"}], "colour": "red"}, "colour"),
        ({"messages": [{"role": "user", "content": "x"}], "assignment_prob": 2}, "assignment_prob"),
        ({"messages": [{"role": "user", "content": "x"}], "id": "has space"}, "id"),
        ("not an object", ""),
    ],
)
def test_validate_events_names_the_field(event: object, field: str) -> None:
    results, rows = capture.validate_events("interactions", [event], CaptureSettings())
    assert rows == []
    assert results[0] is not None and results[0].status == "error"
    assert (results[0].field or "") == field


@pytest.mark.parametrize(
    ("event", "ok", "field"),
    [
        ({"interaction_id": "x", "kind": "thumb", "value": "up"}, True, None),
        ({"interaction_id": "x", "kind": "thumb", "value": 0}, False, "value"),
        ({"interaction_id": "x", "kind": "rating", "value": 4.5}, True, None),
        ({"interaction_id": "x", "kind": "rating", "value": "good"}, False, "value"),
        ({"interaction_id": "x", "kind": "edit"}, False, "text"),
        ({"interaction_id": "x", "kind": "edit", "text": "better answer"}, True, None),
        ({"interaction_id": "x", "kind": "choice", "value": "y"}, True, None),
        ({"interaction_id": "x", "kind": "choice"}, False, "value"),
        ({"interaction_id": "x", "kind": "comment", "text": "nice"}, True, None),
        ({"interaction_id": "x", "kind": "flag", "value": "unsafe"}, True, None),
        ({"interaction_id": "x", "kind": "regenerate"}, True, None),
        ({"interaction_id": "x", "kind": "like"}, False, "kind"),
        ({"kind": "thumb", "value": 1}, False, "interaction_id"),
    ],
)
def test_feedback_kinds_are_checked(event: dict[str, object], ok: bool, field: str | None) -> None:
    results, rows = capture.validate_events("feedback", [event], CaptureSettings())
    assert bool(rows) is ok
    if not ok:
        assert results[0] is not None and results[0].field == field


def test_thumb_values_are_normalised(project: Project) -> None:
    events = [
        {"id": f"f{i}", "interaction_id": "x", "kind": "thumb", "value": v}
        for i, v in enumerate([True, False, "up", "down", 1, -1])
    ]
    capture.capture(project, "feedback", events)
    scores = project.cursor().execute("SELECT score FROM feedback ORDER BY id").fetchall()
    assert [s[0] for s in scores] == [1.0, -1.0, 1.0, -1.0, 1.0, -1.0]


def test_event_over_the_size_limit_is_rejected_alone(project: Project) -> None:
    limits = CaptureSettings(max_event_bytes=1024)
    big = _interaction("big", response="x" * 5000)
    results, rows = capture.validate_events("interactions", [_interaction(1), big], limits)
    assert len(rows) == 1
    assert results[1] is not None and "1024" in (results[1].error or "")


def test_http_partial_batch_returns_207_and_keeps_valid_events(client: TestClient) -> None:
    body = {"interactions": [_interaction(1), {"messages": "nope"}, _interaction(2)]}
    response = client.post("/api/capture/interactions", json=body)
    assert response.status_code == 207
    assert [r["status"] for r in response.json()["results"]] == ["created", "error", "created"]
    assert client.get("/api/interactions/i2").status_code == 200


def test_http_feedback_before_its_interaction_joins_later(client: TestClient) -> None:
    fb = {"feedback": [{"id": "f1", "interaction_id": "late", "kind": "rating", "value": 5}]}
    assert client.post("/api/capture/feedback", json=fb).status_code == 200
    assert client.get("/api/interactions/late").status_code == 404
    client.post("/api/capture/interactions", json={"interactions": [_interaction("late", id="late")]})
    got = client.get("/api/interactions/late").json()
    assert [f["id"] for f in got["feedback"]] == ["f1"]


def test_http_body_over_limit_is_413_naming_the_limit(project: Project, admin_key: str) -> None:
    project.settings.capture.max_body_bytes = 2048
    from posttrain.server import create_app

    with TestClient(create_app(project), headers={"Authorization": f"Bearer {admin_key}"}) as c:
        r = c.post("/api/capture/interactions", json={"interactions": [_interaction(1, response="y" * 4096)]})
    assert r.status_code == 413
    assert "2048" in r.json()["error"]["message"]


def test_http_malformed_body_is_400_naming_the_field(client: TestClient) -> None:
    r = client.post("/api/capture/interactions", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["field"] == "body"
    r = client.post("/api/capture/interactions", json={"events": []})
    assert r.status_code == 400 and r.json()["error"]["field"] == "interactions"


def test_list_interactions_filters_and_paginates(project: Project) -> None:
    events = [
        _interaction(
            i, cohort="minor" if i % 2 else "adult", tags=["t"] if i < 5 else [], timestamp=f"2026-01-01T00:00:{i:02d}Z"
        )
        for i in range(12)
    ]
    capture.capture(project, "interactions", events)
    capture.capture(project, "feedback", [{"interaction_id": "i3", "kind": "thumb", "value": 1}])
    cur = project.cursor()
    seen, cursor = [], None
    while True:
        page = queries.list_interactions(cur, limit=5, cursor=cursor)
        seen += [i.id for i in page.interactions]
        if not (cursor := page.next_cursor):
            break
    assert seen == [f"i{i}" for i in reversed(range(12))]
    assert {i.id for i in queries.list_interactions(cur, cohort="minor").interactions} == {
        f"i{i}" for i in range(1, 12, 2)
    }
    assert len(queries.list_interactions(cur, tag="t").interactions) == 5
    assert [i.id for i in queries.list_interactions(cur, has_feedback=True).interactions] == ["i3"]


def test_import_file_loads_records_and_openai_logs(project: Project, tmp_path: Path) -> None:
    path = tmp_path / "logs.jsonl"
    lines = [
        _interaction(1, user_id="u1", timestamp="2026-01-01T10:00:00+02:00"),
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
        {"messages": []},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    report = capture.import_file(project, path)
    assert (report.created, report.duplicates, report.rejected) == (2, 0, 2)
    again = capture.import_file(project, path)
    assert (again.created, again.duplicates) == (0, 2)
    row = (
        project.cursor()
        .execute("SELECT response, json_array_length(messages) FROM interactions WHERE starts_with(id, 'imp_')")
        .fetchone()
    )
    assert row == ("4", 1)
    ts = project.cursor().execute("SELECT timestamp FROM interactions WHERE id = 'i1'").fetchone()[0]  # type: ignore[index]
    assert ts.hour == 8  # stored as UTC


def test_export_round_trips_through_import(project: Project, tmp_path: Path) -> None:
    capture.capture(project, "interactions", [_interaction(i) for i in range(5)])
    report = capture.export_file(project, tmp_path / "out.jsonl")
    assert report.rows == 5
    first = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])
    assert first["messages"][0]["role"] == "user"
    parquet = capture.export_file(project, tmp_path / "out.parquet", fmt="parquet")
    assert parquet.rows == 5 and (tmp_path / "out.parquet").stat().st_size > 0
    with init_project(tmp_path / "other") as other:
        imported = capture.import_file(other, tmp_path / "out.jsonl")
        assert (imported.created, imported.duplicates, imported.rejected) == (5, 0, 0)
        columns = "id, messages, response, user_id, metadata"
        ordered = f"SELECT {columns} FROM interactions ORDER BY id"
        assert other.cursor().execute(ordered).fetchall() == project.cursor().execute(ordered).fetchall()


def test_import_file_keeps_one_row_per_id_within_the_file(project: Project, tmp_path: Path) -> None:
    path = tmp_path / "dups.jsonl"
    path.write_text("".join(json.dumps(_interaction(i % 3)) + "\n" for i in range(9)))
    seen: list[tuple[int, int]] = []
    report = capture.import_file(project, path, on_progress=lambda done, total: seen.append((done, total)))
    assert (report.created, report.duplicates, report.rejected) == (3, 6, 0)
    assert _count(project, "interactions") == 3
    assert seen[-1] == (9, 9)


def test_import_feedback_follows_the_capture_rules(project: Project, tmp_path: Path) -> None:
    rows = [
        {"id": "t1", "interaction_id": "x", "kind": "thumb", "value": True},
        {"id": "t2", "interaction_id": "x", "kind": "thumb", "value": "down"},
        {"id": "t3", "interaction_id": "x", "kind": "thumb", "value": 0},
        {"id": "r1", "interaction_id": "x", "kind": "rating", "value": 4.5},
        {"id": "r2", "interaction_id": "x", "kind": "rating", "value": "good"},
        {"id": "e1", "interaction_id": "x", "kind": "edit", "text": "better"},
        {"id": "e2", "interaction_id": "x", "kind": "edit"},
        {"id": "c1", "interaction_id": "x", "kind": "choice", "value": "y"},
    ]
    path = tmp_path / "fb.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = capture.import_file(project, path, kind="feedback")
    assert (report.created, report.rejected) == (5, 3)
    got = dict(project.cursor().execute("SELECT id, score FROM feedback WHERE kind IN ('thumb', 'rating')").fetchall())
    assert got == {"t1": 1.0, "t2": -1.0, "r1": 4.5}
    values = dict(project.cursor().execute("SELECT id, value::VARCHAR FROM feedback WHERE kind = 'thumb'").fetchall())
    assert values == {"t1": "1", "t2": "-1"}


CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
TRAJECTORY = [
    {"role": "user", "content": [{"type": "text", "text": "Weather here?"},
                                 {"type": "image_url", "image_url": {"url": "https://example.com/street.png"}}]},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "sunny"}'},
]  # fmt: skip


def test_capture_keeps_tool_calls_tool_results_and_parts_as_sent(project: Project) -> None:
    capture.capture(project, "interactions", [{"id": "t1", "messages": TRAJECTORY, "response": "Sunny."}])
    stored = queries.list_interactions(project.cursor()).interactions[0]
    assert stored.messages == TRAJECTORY and stored.response == "Sunny."


@pytest.mark.parametrize("through", ["file", "sender"])
def test_import_keeps_a_final_tool_calling_message_whole(project: Project, tmp_path: Path, through: str) -> None:
    reply = {"role": "assistant", "content": None, "tool_calls": [CALL]}
    parts = {"role": "assistant", "content": [{"type": "text", "text": "It is"}, {"type": "text", "text": "sunny."}]}
    path = tmp_path / "agent.jsonl"
    lines = [
        {"id": "a", "messages": [*TRAJECTORY[:1], reply], "metadata": {"k": 1}},
        {"id": "b", "messages": [*TRAJECTORY, parts]},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    if through == "file":
        capture.import_file(project, path)
    else:
        capture.import_through(lambda batch: [r.status for r in capture.capture(project, "interactions", batch)], path)
    found = {i.id: i for i in queries.list_interactions(project.cursor()).interactions}
    assert found["a"].messages == TRAJECTORY[:1] and found["a"].metadata["response_message"] == reply
    assert found["a"].response in ("", None) and found["a"].metadata["k"] == 1
    assert found["b"].messages == TRAJECTORY and found["b"].metadata["response_message"] == parts
    assert found["b"].response == "It is\nsunny."


def test_import_keeps_an_annotators_thumb_beside_the_users_same_thumb(project: Project, tmp_path: Path) -> None:
    """Derived ids count the source: the same thumb from a user and an annotator are two events (was one)."""
    capture.capture(project, "interactions", [_interaction(1)])
    path = tmp_path / "feedback.jsonl"
    events = [{"interaction_id": "i1", "kind": "thumb", "value": True},
              {"interaction_id": "i1", "kind": "thumb", "value": True, "source": "annotator"}]  # fmt: skip
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    report = capture.import_file(project, path, kind="feedback")
    assert (report.created, report.duplicates) == (2, 0)
    again = capture.import_file(project, path, kind="feedback")
    assert (again.created, again.duplicates) == (0, 2)
    sources = project.cursor().execute("SELECT source FROM feedback ORDER BY source").fetchall()
    assert sources == [("annotator",), ("user",)]
