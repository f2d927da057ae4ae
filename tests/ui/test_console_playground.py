"""The side-by-side playground: one prompt to two served models through the gateway, a pairwise choice stored."""

from __future__ import annotations

import html
import re

import pytest
from markupsafe import escape

from posttrain.warehouse.queries import get_interaction
from ui.helpers import Console

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

ANSWER = re.compile(r'<section class="card" data-side="([ab])" data-interaction="([^"]+)">')


def _form_field(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]+)"', page)
    assert found, name
    return found.group(1)


def test_admin_compares_two_models_and_records_the_choice(console: Console) -> None:
    client, csrf = console.sign_in("admin")
    page = client.get("/ui/playground").text
    assert 'action="/ui/playground/send"' in page
    for name in ("base", "t-t1-sft", "t-t2-sft"):
        assert f'<option value="{name}"' in page and f'<tr data-model="{name}">' in page
    form = {"csrf": csrf, "model_a": "base", "model_b": "t-t1-sft", "prompt": "add 2 3", "system": "be brief",
            "max_tokens": "4", "temperature": "0"}  # fmt: skip
    reply = client.post("/ui/playground/send", data=form)
    assert reply.status_code == 200, reply.text
    sides = dict(ANSWER.findall(reply.text))
    assert set(sides) == {"a", "b"} and sides["a"] != sides["b"]
    assert _form_field(reply.text, "a_id") == sides["a"] and _form_field(reply.text, "b_id") == sides["b"]
    cur = console.project.cursor()
    for side, model in (("a", "base"), ("b", "t-t1-sft")):
        stored = get_interaction(cur, sides[side])
        assert stored.model == model and set(stored.tags) == {"gateway", "playground"}
        assert stored.messages[-1]["content"] == "add 2 3" and stored.messages[0]["content"] == "be brief"
        assert str(escape(stored.response or "")) in reply.text and f"/ui/interactions/{sides[side]}" in reply.text
    before = cur.execute("SELECT count(*) FROM feedback").fetchone()[0]
    chosen = client.post("/ui/playground/choice", data={"csrf": csrf, "a_id": sides["a"], "b_id": sides["b"],
                                                        "choice": "b", "comment": "closer"})  # fmt: skip
    assert chosen.status_code == 200, chosen.text
    assert "Saved" in chosen.text and f'<a href="/ui/interactions/{sides["a"]}">' in chosen.text
    assert cur.execute("SELECT count(*) FROM feedback").fetchone()[0] == before + 1
    rows = cur.execute(
        "SELECT interaction_id, kind, value ->> '$', source, author, text FROM feedback WHERE kind = 'choice' "
        "AND interaction_id IN (?, ?)",
        [sides["a"], sides["b"]],
    ).fetchall()
    admin_id = cur.execute("SELECT id FROM api_keys WHERE role = 'admin'").fetchone()[0]
    assert rows == [
        (sides["a"], "choice", sides["b"], "user", admin_id, "closer")
    ]  # on the rejected, naming the chosen


def test_viewer_sees_the_models_but_no_form_and_is_refused(console: Console) -> None:
    client, csrf = console.sign_in("viewer")
    page = client.get("/ui/playground")
    assert page.status_code == 200
    assert 'id="viewer-note"' in page.text and "/ui/playground/send" not in page.text
    assert '<tr data-model="base">' in page.text
    for path in ("/ui/playground/send", "/ui/playground/choice"):
        reply = client.post(path, data={"csrf": csrf, "prompt": "hi", "model_a": "base", "model_b": "base"})
        assert reply.status_code == 403


@pytest.mark.parametrize("role", ["annotator", "ingest"])
def test_other_roles_are_refused(console: Console, role: str) -> None:
    client, csrf = console.sign_in(role)
    assert client.get("/ui/playground").status_code == 403
    for path in ("/ui/playground/send", "/ui/playground/choice"):
        assert client.post(path, data={"csrf": csrf, "prompt": "hi"}).status_code == 403


def test_a_wrong_or_missing_csrf_token_is_refused(console: Console) -> None:
    client, _ = console.sign_in("admin")
    for data in ({"csrf": "wrong", "prompt": "hi"}, {"prompt": "hi"}):
        assert client.post("/ui/playground/send", data=data).status_code == 403
        assert client.post("/ui/playground/choice", data=data).status_code == 403


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({}, "prompt"),
        ({"prompt": "  "}, "prompt"),
        ({"prompt": "hi", "model_a": "nope", "model_b": "base"}, "model_a"),
        ({"prompt": "hi", "model_a": "base"}, "model_b"),
        ({"prompt": "hi", "model_a": "base", "model_b": "base", "max_tokens": "100000"}, "max_tokens"),
        ({"prompt": "hi", "model_a": "base", "model_b": "base", "temperature": "hot"}, "temperature"),
        ({"prompt": "hi", "model_a": "base", "model_b": "base", "cohort": "martians"}, "cohort"),
    ],
)
def test_bad_send_forms_are_400_naming_the_field(console: Console, form: dict[str, str], field: str) -> None:
    client, csrf = console.sign_in("admin")
    before = console.project.cursor().execute("SELECT count(*) FROM interactions").fetchone()[0]
    reply = client.post("/ui/playground/send", data={"csrf": csrf, **form})
    assert reply.status_code == 400 and f"{field}:" in reply.text
    assert console.project.cursor().execute("SELECT count(*) FROM interactions").fetchone()[0] == before


def test_bad_choices_are_refused_and_store_nothing(console: Console) -> None:
    client, csrf = console.sign_in("admin")
    cur = console.project.cursor()
    before = cur.execute("SELECT count(*) FROM feedback").fetchone()[0]
    product = [r[0] for r in cur.execute("SELECT id FROM interactions ORDER BY id LIMIT 2").fetchall()]
    cases = [
        ({}, 400, "a_id"),
        ({"a_id": product[0], "b_id": product[1]}, 400, "choice"),
        ({"a_id": product[0], "b_id": product[1], "choice": "both"}, 400, "choice"),
        ({"a_id": product[0], "b_id": product[1], "choice": "a"}, 400, "not a playground answer"),
        ({"a_id": "no-such-id", "b_id": product[1], "choice": "a"}, 404, "no interaction"),
    ]
    for form, status, text in cases:
        reply = client.post("/ui/playground/choice", data={"csrf": csrf, **form})
        assert reply.status_code == status and text in html.unescape(reply.text), form
    assert cur.execute("SELECT count(*) FROM feedback").fetchone()[0] == before
