"""The annotator's pages in-process: sign-in, sessions, CSRF, roles, labelling through the forms."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from posttrain import annotate, keys
from posttrain.capture import capture
from posttrain.project import Project
from posttrain.server import create_app

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

FRAGMENT = {"X-Fragment": "1"}


def _interactions(project: Project, n: int, prefix: str = "i") -> list[str]:
    events = [
        {"id": f"{prefix}-{i}", "user_id": f"u{i}", "messages": [{"role": "user", "content": f"question {i}?"}],
         "response": f"answer {i}"}
        for i in range(n)
    ]  # fmt: skip
    assert all(r.status == "created" for r in capture(project, "interactions", events))
    return [e["id"] for e in events]


def _queue(project: Project, name: str, task: str, ids: list[str], **config: Any) -> annotate.Queue:
    if task == "classify":
        config.setdefault("categories", ["safe", "rude", "unsafe"])
    queue = annotate.create_queue(project, annotate.QueueConfig(name=name, task=task, gold_share=0, **config))
    if task == "pairwise":
        annotate.fill(project, name, pairs=list(zip(ids[::2], ids[1::2], strict=True)))
    else:
        annotate.fill(project, name, interaction_ids=ids)
    return queue


@pytest.fixture
def app_client(project: Project) -> Iterator[TestClient]:
    """The real app in-process with no key in its headers (a browser sends cookies)."""
    with TestClient(create_app(project), base_url="http://testserver") as client:
        yield client


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def _sign_in(client: TestClient, key: str, target: str = "/ui/annotate") -> Any:
    form = client.get("/ui/login", params={"next": target})
    assert form.status_code == 200
    return client.post("/ui/login", data={"key": key, "csrf": _csrf(form.text), "next": target}, follow_redirects=False)


def _signed_in(client: TestClient, project: Project, role: str = "annotator") -> str:
    key = keys.create_key(project, role, name=f"ui {role}").key
    assert _sign_in(client, key).status_code == 303
    return key


def _labels(project: Project) -> list[dict[str, Any]]:
    rows = project.cursor().execute("SELECT annotator, value, seconds, lease_id FROM labels").fetchall()
    return [{"annotator": a, "value": orjson.loads(v), "seconds": s, "lease_id": lease} for a, v, s, lease in rows]


def _lease(html: str) -> str:
    found = re.search(r'name="lease_id" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def test_login_sets_an_httponly_samesite_strict_session_cookie(app_client: TestClient, project: Project) -> None:
    key = keys.create_key(project, "annotator").key
    reply = _sign_in(app_client, key)
    assert reply.status_code == 303 and reply.headers["location"] == "/ui/annotate"
    cookie = next(c for c in reply.headers.get_list("set-cookie") if c.startswith("pt_session="))
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/ui"} <= flags and "secure" not in flags
    page = app_client.get("/ui/annotate")
    assert page.status_code == 200 and key not in page.text and "Annotation queues" in page.text


def test_login_refuses_a_wrong_key_without_echoing_it(app_client: TestClient) -> None:
    reply = _sign_in(app_client, "pt_not-a-real-key-4242")
    assert reply.status_code == 401
    assert "not accepted" in reply.text and "pt_not-a-real-key-4242" not in reply.text
    assert "pt_session" not in reply.headers.get("set-cookie", "")


def test_login_refuses_a_form_without_its_token(app_client: TestClient, project: Project) -> None:
    key = keys.create_key(project, "annotator").key
    reply = app_client.post("/ui/login", data={"key": key, "csrf": "forged"}, follow_redirects=False)
    assert reply.status_code == 403 and key not in reply.text


def test_login_ignores_a_next_page_outside_the_ui(app_client: TestClient, project: Project) -> None:
    key = keys.create_key(project, "annotator").key
    reply = _sign_in(app_client, key, target="//evil.example/x")
    assert reply.status_code == 303 and reply.headers["location"] == "/ui"


def test_page_without_a_session_redirects_to_sign_in(app_client: TestClient) -> None:
    reply = app_client.get("/ui/annotate/anything", follow_redirects=False)
    assert reply.status_code == 303 and reply.headers["location"].startswith("/ui/login?next=")
    assert app_client.post("/ui/annotate/q/label", data={"csrf": "x"}, headers=FRAGMENT).status_code == 401


def test_label_post_without_the_csrf_token_is_refused(app_client: TestClient, project: Project) -> None:
    _queue(project, "rate", "rating", _interactions(project, 2))
    _signed_in(app_client, project)
    page = app_client.get("/ui/annotate/rate")
    lease = _lease(page.text)
    for data, headers in [({}, {}), ({"csrf": "wrong"}, {}), ({}, {"X-CSRF-Token": "wrong"})]:
        reply = app_client.post("/ui/annotate/rate/label", data={"lease_id": lease, "rating": "3", **data},
                                headers=headers)  # fmt: skip
        assert reply.status_code == 403, reply.text
    assert _labels(project) == []
    reply = app_client.post(
        "/ui/annotate/rate/label", data={"lease_id": lease, "rating": "3"},
        headers={"X-CSRF-Token": _csrf(page.text), **FRAGMENT},
    )  # fmt: skip
    assert reply.status_code == 200 and len(_labels(project)) == 1


def test_viewer_may_list_queues_but_not_label(app_client: TestClient, project: Project) -> None:
    _queue(project, "rate", "rating", _interactions(project, 1))
    _signed_in(app_client, project, "viewer")
    listing = app_client.get("/ui/annotate")
    assert listing.status_code == 200 and "rate" in listing.text and ">Label<" not in listing.text
    reply = app_client.get("/ui/annotate/rate")
    assert reply.status_code == 403 and "annotate.label" in reply.text


def test_ingest_key_may_not_list_queues(app_client: TestClient, project: Project) -> None:
    _signed_in(app_client, project, "ingest")
    assert app_client.get("/ui/annotate").status_code == 403


def test_submit_through_the_form_stores_the_label_and_serves_the_next(app_client: TestClient, project: Project) -> None:
    _queue(project, "rate", "rating", _interactions(project, 2))
    key = _signed_in(app_client, project)
    page = app_client.get("/ui/annotate/rate")
    assert page.status_code == 200 and "question 0?" in page.text and 'data-key="5"' in page.text
    reply = app_client.post(
        "/ui/annotate/rate/label",
        data={"csrf": _csrf(page.text), "lease_id": _lease(page.text), "rating": "4", "seconds": "3.5",
              "comment": "fine"},
        headers=FRAGMENT,
    )  # fmt: skip
    assert reply.status_code == 200 and "question 1?" in reply.text and "<html" not in reply.text
    assert ">1</strong> labelled by you" in reply.text
    caller = keys.lookup_key(project, key)
    assert _labels(project) == [
        {"annotator": caller.key_id, "value": {"rating": 4, "comment": "fine"}, "seconds": 3.5,
         "lease_id": _lease(page.text)}
    ]  # fmt: skip


def test_plain_form_post_redirects_back_to_the_queue(app_client: TestClient, project: Project) -> None:
    _queue(project, "ok", "accept", _interactions(project, 1))
    _signed_in(app_client, project)
    page = app_client.get("/ui/annotate/ok")
    data = {"csrf": _csrf(page.text), "lease_id": _lease(page.text), "accept": "no"}
    reply = app_client.post("/ui/annotate/ok/label", data=data, follow_redirects=False)
    assert reply.status_code == 303 and reply.headers["location"] == "/ui/annotate/ok"
    assert [label["value"] for label in _labels(project)] == [{"accept": False}]
    assert "Queue done" in app_client.get("/ui/annotate/ok").text


def test_wrong_label_is_an_inline_error_on_the_same_item(app_client: TestClient, project: Project) -> None:
    _queue(project, "rate", "rating", _interactions(project, 2))
    _signed_in(app_client, project)
    page = app_client.get("/ui/annotate/rate")
    data = {"csrf": _csrf(page.text), "lease_id": _lease(page.text), "rating": "9"}
    reply = app_client.post("/ui/annotate/rate/label", data=data, headers=FRAGMENT)
    assert reply.status_code == 400 and 'data-field="label.rating"' in reply.text
    assert "from 1 to 5" in reply.text and _lease(reply.text) == data["lease_id"]
    whole = app_client.post("/ui/annotate/rate/label", data={**data, "rating": "x"})
    assert whole.status_code == 400 and "<html" in whole.text and "from 1 to 5" in whole.text
    assert _labels(project) == []


def test_overlong_field_is_a_400_page_not_a_crash(app_client: TestClient, project: Project) -> None:
    _queue(project, "rate", "rating", _interactions(project, 1))
    _signed_in(app_client, project)
    page = app_client.get("/ui/annotate/rate")
    data = {"csrf": _csrf(page.text), "lease_id": "x" * 500, "rating": "3"}
    reply = app_client.post("/ui/annotate/rate/label", data=data)
    assert reply.status_code == 400 and "lease_id" in reply.text


def test_skip_hands_the_item_back_and_serves_the_next(app_client: TestClient, project: Project) -> None:
    _queue(project, "rate", "rating", _interactions(project, 2))
    _signed_in(app_client, project)
    page = app_client.get("/ui/annotate/rate")
    data = {"csrf": _csrf(page.text), "lease_id": _lease(page.text)}
    reply = app_client.post("/ui/annotate/rate/skip", data=data, headers=FRAGMENT)
    assert reply.status_code == 200 and "question 1?" in reply.text
    state = project.cursor().execute("SELECT state FROM annotation_leases WHERE id = ?", [data["lease_id"]])
    assert state.fetchone() == ("skipped",) and _labels(project) == []


def test_expired_lease_says_so_and_serves_the_next_item(app_client: TestClient, project: Project) -> None:
    _queue(project, "rate", "rating", _interactions(project, 2), lease_seconds=5)
    _signed_in(app_client, project)
    page = app_client.get("/ui/annotate/rate")
    lease = _lease(page.text)
    project.cursor().execute(
        "UPDATE annotation_leases SET expires_at = expires_at - INTERVAL 10 SECOND WHERE id = ?", [lease]
    )
    data = {"csrf": _csrf(page.text), "lease_id": lease, "rating": "2"}
    reply = app_client.post("/ui/annotate/rate/label", data=data, headers=FRAGMENT)
    assert reply.status_code == 200 and "lease on the previous item expired" in reply.text
    assert "question 1?" in reply.text and _labels(project) == []


def test_unknown_queue_is_a_404_page(app_client: TestClient, project: Project) -> None:
    _signed_in(app_client, project)
    for name in ["nope", "bad name!", "x" * 300]:
        reply = app_client.get(f"/ui/annotate/{name}")
        assert reply.status_code == 404 and "Not found" in reply.text and "<html" in reply.text


def test_guidelines_are_markdown_with_html_escaped(app_client: TestClient, project: Project) -> None:
    text = "# Be kind\n\n**Rate** the answer.\n\n<script>alert('x')</script>\n\n[x](javascript:alert(1))"
    _queue(project, "rate", "rating", _interactions(project, 1), guidelines=text)
    _signed_in(app_client, project)
    page = app_client.get("/ui/annotate/rate")
    assert "<h1>Be kind</h1>" in page.text and "<strong>Rate</strong>" in page.text
    assert "<script>alert" not in page.text and "&lt;script&gt;" in page.text
    assert 'href="javascript:' not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("task", "config", "marks"),
    [
        ("rating", {"scale": (1, 7)}, ['name="rating" value="7"', 'data-key="7"']),
        ("accept", {}, ['name="accept" value="yes"', 'data-key="n r"']),
        ("rewrite", {}, ['<textarea name="text"', 'aria-label="Rewritten answer">answer ']),
        ("pairwise", {}, ["Answer A", "Answer B", 'name="choice" value="tie"']),
        ("classify", {"multi": True}, ['type="checkbox" name="categories" value="rude"', 'data-key="Enter"']),
        ("classify", {}, ['name="categories" value="unsafe"', 'data-key="3"']),
        ("comment", {}, ['<textarea name="text"', "Submit comment"]),
    ],
)
def test_workspace_draws_each_task_type(
    app_client: TestClient, project: Project, task: str, config: dict[str, Any], marks: list[str]
) -> None:
    _queue(project, "q", task, _interactions(project, 2), **config)
    _signed_in(app_client, project)
    page = app_client.get("/ui/annotate/q")
    assert page.status_code == 200
    for mark in marks:
        assert mark in page.text, mark


def test_revoked_key_ends_its_session(app_client: TestClient, project: Project) -> None:
    key = _signed_in(app_client, project)
    assert app_client.get("/ui/annotate").status_code == 200
    keys.revoke_key(project, keys.lookup_key(project, key).key_id)
    reply = app_client.get("/ui/annotate", follow_redirects=False)
    assert reply.status_code == 303 and reply.headers["location"].startswith("/ui/login")


def test_sign_out_deletes_the_session(app_client: TestClient, project: Project) -> None:
    _signed_in(app_client, project)
    token = app_client.cookies.get("pt_session")
    page = app_client.get("/ui/annotate")
    assert app_client.post("/ui/logout", data={}).status_code == 403  # no CSRF token: still signed in
    reply = app_client.post("/ui/logout", data={"csrf": _csrf(page.text)}, follow_redirects=False)
    assert reply.status_code == 303 and reply.headers["location"] == "/ui/login"
    app_client.cookies.set("pt_session", token or "", path="/ui")
    assert app_client.get("/ui/annotate", follow_redirects=False).status_code == 303


def test_static_files_are_served_and_nothing_else(app_client: TestClient) -> None:
    script = app_client.get("/ui/static/annotate.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "X-Fragment" in script.text
    assert app_client.get("/ui/static/ui.css").headers["content-type"].startswith("text/css")
    for name in ["nope.js", "..%2Fapp.py", "__init__.py", ".hidden.css"]:
        assert app_client.get(f"/ui/static/{name}").status_code == 404


def test_ui_routes_stay_out_of_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith("/ui")]


def test_the_header_names_the_signed_in_key(app_client: TestClient, project: Project) -> None:
    _signed_in(app_client, project)
    page = app_client.get("/ui/annotate")
    assert page.status_code == 200 and "ui annotator" in page.text
