"""The console's interactions pages over a project that ran two loop turns: list, filters, paging, one interaction."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from posttrain import annotate
from posttrain.capture import capture
from ui.helpers import Console

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

IDS = re.compile(r'<a href="/ui/interactions/([^"]+)">')
HAS = "EXISTS (SELECT 1 FROM feedback f WHERE f.interaction_id = i.id"
NEXT = re.compile(r'<a class="button" href="([^"]+)" rel="next">')


def _count(console: Console, where: str = "true", params: list[Any] | None = None) -> list[str]:
    """Return the ids SQL finds, in the list's order (newest first)."""
    sql = f'SELECT i.id FROM interactions i WHERE {where} ORDER BY i."timestamp" DESC, i.id DESC'
    return [r[0] for r in console.project.cursor().execute(sql, params or []).fetchall()]


def _walk(client: TestClient, url: str, *, pages: int = 100) -> list[str]:
    """Follow the list's next-page links from ``url``; return every id shown, in order."""
    ids: list[str] = []
    for _ in range(pages):
        reply = client.get(url)
        assert reply.status_code == 200, reply.text
        ids += IDS.findall(reply.text)
        found = NEXT.search(reply.text)
        if found is None:
            return ids
        url = html.unescape(found.group(1))
    raise AssertionError("the list did not end")


def _main(text: str) -> str:
    return text[text.index("<main") :]


def test_the_list_shows_the_newest_interactions_with_their_feedback_counts(console: Console) -> None:
    client, _ = console.sign_in("viewer")
    reply = client.get("/ui/interactions")
    assert reply.status_code == 200
    shown = IDS.findall(reply.text)
    assert shown == _count(console)[:50]
    assert 'rel="next"' in reply.text
    page = client.get("/ui/interactions", params={"user": "u1", "limit": "200"}).text
    row = page[page.index('href="/ui/interactions/s0-1"') :].split("</tr>")[0]
    kinds = dict(console.project.cursor().execute(
        "SELECT kind, count(*) FROM feedback WHERE interaction_id = 's0-1' GROUP BY kind").fetchall())  # fmt: skip
    assert kinds and all(f"{kind} {n}</span>" in row for kind, n in kinds.items())
    assert "add 0 1" in row  # the prompt


@pytest.mark.parametrize(
    ("params", "where", "args"),
    [
        ({"cohort": "adult"}, "i.cohort = ?", ["adult"]),
        ({"feedback": "rating"}, f"{HAS} AND f.kind = 'rating')", []),
        ({"feedback": "thumb", "cohort": "minor"}, f"i.cohort = 'minor' AND {HAS} AND f.kind = 'thumb')", []),
        ({"q": "ADD 3"}, "lower(i.messages::VARCHAR) LIKE '%add 3%' OR lower(i.response) LIKE '%add 3%'", []),
        ({"user": "u1"}, "i.user_id = ?", ["u1"]),
    ],
)  # fmt: skip
def test_each_filter_shows_what_sql_counts(
    console: Console, params: dict[str, str], where: str, args: list[Any]
) -> None:
    client, _ = console.sign_in("annotator")
    expected = _count(console, where, args)
    assert expected  # the fixture has rows for every filter tested
    assert _walk(client, "/ui/interactions?" + urlencode({**params, "limit": 200})) == expected


def test_a_pairwise_choice_is_found_as_choice_or_pairwise(console: Console) -> None:
    capture(console.project, "feedback", [{"interaction_id": "s0-3", "kind": "choice", "value": "s0-3"}])
    client, _ = console.sign_in("viewer")
    expected = _count(console, f"{HAS} AND f.kind = 'choice')")
    assert expected == ["s0-3"]
    assert (
        _walk(client, "/ui/interactions?feedback=pairwise")
        == _walk(client, "/ui/interactions?feedback=choice")
        == expected
    )
    assert 'value="choice" selected' in client.get("/ui/interactions?feedback=pairwise").text


def test_since_until_model_and_tag_filter_like_sql(console: Console) -> None:
    events = [
        {"id": f"mt-{n}", "model": "m-x" if n % 2 else "m-y", "tags": ["gold"] if n < 3 else [], "user_id": "mt",
         "messages": [{"role": "user", "content": f"hello {n}"}], "response": f"hi {n}"}
        for n in range(6)
    ]  # fmt: skip
    assert all(r.status == "created" for r in capture(console.project, "interactions", events))
    client, _ = console.sign_in("admin")
    assert _walk(client, "/ui/interactions?model=m-x") == _count(console, "i.model = 'm-x'") == ["mt-5", "mt-3", "mt-1"]
    assert _walk(client, "/ui/interactions?tag=gold") == _count(console, "list_contains(i.tags, 'gold')")
    moments = [r[0] for r in console.project.cursor().execute(
        'SELECT DISTINCT "timestamp" FROM interactions ORDER BY 1').fetchall()]  # fmt: skip
    middle = moments[len(moments) // 2]
    since = _walk(client, f"/ui/interactions?since={middle.isoformat()}&limit=200")
    assert since == _count(console, 'i."timestamp" >= ?', [middle])
    until = _walk(client, f"/ui/interactions?until={middle.isoformat()}Z&limit=200")  # an offset is taken as UTC
    assert until == _count(console, 'i."timestamp" < ?', [middle])
    assert len(since) + len(until) == len(_count(console))


def test_paging_walks_every_row_exactly_once_in_order(console: Console) -> None:
    client, _ = console.sign_in("viewer")
    walked = _walk(client, "/ui/interactions?limit=37&cohort=minor", pages=40)
    assert len(walked) == len(set(walked))
    assert walked == _count(console, "i.cohort = 'minor'")  # many rows share a timestamp: the id breaks ties
    first = client.get("/ui/interactions?limit=37&cohort=minor").text
    second = client.get(html.unescape(NEXT.search(first).group(1))).text  # type: ignore[union-attr]
    assert 'value="minor"' in second and "cohort=minor" in html.unescape(NEXT.search(second).group(1))  # type: ignore[union-attr]
    assert 'href="/ui/interactions?cohort=minor&amp;limit=37">' in second  # back to the first page, filters kept


def test_an_admin_filters_with_where_and_others_are_refused(console: Console) -> None:
    admin, _ = console.sign_in("admin")
    condition = "i.user_id = 'u1' AND i.response <> ''"
    assert _walk(admin, "/ui/interactions?" + urlencode({"limit": 3, "where": condition})) == _count(console, condition)
    page = admin.get("/ui/interactions", params={"where": condition}).text
    assert 'name="where" value="i.user_id = &#39;u1&#39; AND i.response &lt;&gt; &#39;&#39;"' in page
    for role in ("viewer", "annotator"):
        client, _ = console.sign_in(role)
        reply = client.get("/ui/interactions", params={"where": "true"})
        assert reply.status_code == 403
        assert 'name="where"' not in client.get("/ui/interactions").text
    for bad in [
        "i.id IN (SELECT id FROM api_keys)",
        "EXISTS (SELECT key_hash FROM api_keys)",
        "true); DELETE FROM interactions WHERE (true",
        "i.id IN (SELECT id FROM (DELETE FROM feedback RETURNING id))",
        "i.id IN (SELECT * FROM read_csv('/etc/passwd'))",
        "i.nonexistent = 1",
        "true -- comment",
    ]:
        reply = admin.get("/ui/interactions", params={"where": bad})
        assert reply.status_code == 400, (bad, reply.status_code)
        assert "where" in reply.text
    assert console.project.cursor().execute("SELECT count(*) FROM feedback").fetchone()[0] > 0  # type: ignore[index]


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("since=yesterday", "since"),
        ("until=2026-13-45", "until"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("feedback=bogus", "feedback"),
        ("cursor=not-a-cursor", "cursor"),
        ("cohort=" + "x" * 201, "cohort"),
        ("q=%01", "q"),
    ],
)
def test_bad_query_parameters_are_a_400_page_naming_them(console: Console, query: str, name: str) -> None:
    client, _ = console.sign_in("viewer")
    reply = client.get("/ui/interactions?" + query)
    assert reply.status_code == 400
    assert f"{name}:" in reply.text


def test_ingest_is_refused_and_unknown_ids_are_404(console: Console) -> None:
    ingest, _ = console.sign_in("ingest")
    assert ingest.get("/ui/interactions").status_code == 403
    assert ingest.get("/ui/interactions/s0-1").status_code == 403
    viewer, _ = console.sign_in("viewer")
    assert viewer.get("/ui/interactions/no-such-id").status_code == 404
    assert viewer.get("/ui/interactions/" + "x" * 201).status_code == 404
    signed_out = console.new_client()
    assert signed_out.get("/ui/interactions").status_code == 303


def test_an_interaction_shows_its_messages_feedback_datasets_and_models(console: Console) -> None:
    capture(console.project, "feedback", [
        {"interaction_id": "s0-1", "kind": "edit", "text": "an edit by dana", "author": "dana"},
        {"interaction_id": "s0-1", "kind": "comment", "text": "an annotator's note", "source": "annotator"},
    ])  # fmt: skip
    [[events]] = (
        console.project.cursor().execute("SELECT count(*) FROM feedback WHERE interaction_id = 's0-1'").fetchall()
    )
    client, _ = console.sign_in("viewer")
    page = _main(client.get("/ui/interactions/s0-1").text)
    assert '<div class="msg user">' in page and "add 0 1" in page
    for kind in ("thumb", "rating", "edit", "comment"):
        assert f'<span class="state {kind}">{kind}</span>' in page
    assert "an edit by dana" in page and "an annotator&#39;s note" in page and "dana" in page
    assert ">4</td>" in page  # the rating's value
    feedback = page[page.index('id="feedback"') :].split("</table>")[0]
    assert feedback.count("<tr><td>") == events == 6  # the fixture's thumb, rating, edit, comment and these two
    # which dataset versions were built from it (their sources.parquet), and the models trained on them
    uses = page[page.index('id="datasets"') :].split("</table>")[0]
    assert '<a href="/ui/datasets/t-sft/1">t-sft@1</a>' in uses
    assert '<a href="/ui/models/t-t1-sft">t-t1-sft</a>' in uses
    assert "t-sft@2" not in uses  # turn 2's data came from turn 2's logs
    flagged = _main(client.get("/ui/interactions/s0-2").text)
    assert '<span class="state flag">flag</span>' in flagged and "unsafe" in flagged


def test_an_annotator_sees_names_but_no_links_to_pages_it_cannot_open(console: Console) -> None:
    client, _ = console.sign_in("annotator")
    page = _main(client.get("/ui/interactions/s0-1").text)
    assert "t-sft@1" in page and "t-t1-sft" in page
    assert "/ui/datasets/" not in page and "/ui/models/" not in page


def test_the_serving_decision_and_an_experiment_link(console: Console) -> None:
    row = console.project.cursor().execute(
        "SELECT id, experiment, variant, assignment_prob FROM interactions WHERE experiment IS NOT NULL "
        "AND assignment_prob IS NOT NULL LIMIT 1").fetchone()  # fmt: skip
    if row is None:  # the simulated traffic may not record the probability: capture one served by the gateway
        capture(console.project, "interactions", [{
            "id": "gw-1", "messages": [{"role": "user", "content": "hi"}], "response": "hello", "model": "t-t1-sft",
            "experiment": "t-t1-ab-adult", "variant": "candidate", "assignment_prob": 0.5, "cohort": "adult",
            "metadata": {"route": "adults", "backend": "local", "temperature": 0.2}}])  # fmt: skip
        row = ("gw-1", "t-t1-ab-adult", "candidate", 0.5)
    client, _ = console.sign_in("admin")
    page = _main(client.get(f"/ui/interactions/{row[0]}").text)
    serving = page[page.index('id="serving"') :].split("</table>")[0]
    assert f'<a href="/ui/experiments/{row[1]}">{row[1]}</a>' in serving
    assert f"<td>{row[2]}</td>" in serving and f"<td>{row[3]:.3g}</td>" in serving


def test_parts_tool_calls_route_and_labels_are_shown(console: Console) -> None:
    image = "data:image/png;base64," + "A" * 500
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}}
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                     {"type": "image_url", "image_url": {"url": "https://example.org/cat.png"}},
                                     {"type": "image_url", "image_url": {"url": image}}]},
        {"role": "assistant", "content": None,
         "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
    ]  # fmt: skip
    event = {"id": "mm-1", "messages": messages, "response": "A cat.", "model": "t-t2-sft", "cohort": "adult",
             "metadata": {"route": "adults-route", "backend": "local", "temperature": 0.3}}  # fmt: skip
    assert capture(console.project, "interactions", [event])[0].status == "created"
    queue = annotate.create_queue(console.project, annotate.QueueConfig(name="rate", task="rating", gold_share=0))
    annotate.fill(console.project, queue.name, interaction_ids=["mm-1"])
    held = annotate.next_item(console.project, "rate", "key-ann-1")
    assert held is not None
    annotate.submit(console.project, held.lease_id, "key-ann-1", {"rating": 5})
    client, _ = console.sign_in("viewer")
    page = _main(client.get("/ui/interactions/mm-1").text)
    assert "what is this?" in page
    assert "[image_url: https://example.org/cat.png]" in page
    assert "[image_url: 522 characters of data]" in page and "AAAA" not in page
    assert '<pre class="block">' in page and "&#34;name&#34;: &#34;lookup&#34;" in page  # tool calls whole, as JSON
    assert "answers call_1" in page and "a cat" in page
    assert "adults-route" in page and "(local)" in page and "&#34;temperature&#34;: 0.3" in page
    labels = page[page.index('id="labels"') :].split("</table>")[0]
    assert "<td>rate</td>" in labels and "key-ann-1" in labels and '<span class="state annotator">' in labels
    assert "&#34;rating&#34;: 5" in labels
    listed = client.get("/ui/interactions", params={"model": "t-t2-sft"}).text
    assert IDS.findall(listed) == ["mm-1"]
    assert 'title="what is this?">what is this?</td>' in listed  # the row's prompt: the last user message


def test_html_in_a_prompt_is_shown_escaped(console: Console) -> None:
    event = {"id": "xss-1", "user_id": "<b>eve</b>", "cohort": "adult",
             "messages": [{"role": "user", "content": "<script>alert('x')</script> hello"}],
             "response": "<img src=x onerror=alert(1)>"}  # fmt: skip
    assert capture(console.project, "interactions", [event])[0].status == "created"
    client, _ = console.sign_in("admin")
    for url in ("/ui/interactions?user=%3Cb%3Eeve%3C/b%3E", "/ui/interactions/xss-1"):
        page = client.get(url).text
        assert "xss-1" in page
        assert "<script>alert" not in page and "<img src=x" not in page and "<b>eve" not in page
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; hello" in page
        assert "&lt;img src=x onerror=alert(1)&gt;" in page
