"""The annotator's workspace in a real browser (Debian's chromium via Playwright) against `posttrain serve`.

Queues of every task type are labelled with the keyboard only; one item is skipped, one lease
expires on the page, and two annotators share a queue. The stored labels are read back through
the API's SQL route. Screenshots of every view land in the test's tmp_path (printed).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from conftest import LiveServer
from posttrain import annotate, keys
from posttrain.capture import capture
from posttrain.project import Project, init_project

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("chromium is not on PATH (CI installs Debian's chromium; locally: apt-get install chromium)",
                allow_module_level=True)  # fmt: skip
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")

GUIDELINES = "# Rating\n\nRate **helpfulness** from 1 to 5.\n\n<script>x</script>"
QUEUES: dict[str, dict[str, Any]] = {
    "rate": {"task": "rating", "n": 2, "guidelines": GUIDELINES},
    "ok": {"task": "accept", "n": 1},
    "fix": {"task": "rewrite", "n": 1},
    "pair": {"task": "pairwise", "n": 2},
    "cls": {"task": "classify", "n": 1, "categories": ["safe", "rude", "unsafe"], "multi": True},
    "note": {"task": "comment", "n": 1},
    "short": {"task": "rating", "n": 2, "lease_seconds": 5},
    "both": {"task": "accept", "n": 4, "overlap": 1},
}


def _setup(project: Project) -> None:
    for name, spec in QUEUES.items():
        spec = dict(spec)
        n = spec.pop("n")
        events = [
            {"id": f"{name}-{i}", "user_id": f"u{i}", "response": f"{name} answer {i}",
             "messages": [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": f"{name} question {i}?"}]}
            for i in range(n)
        ]  # fmt: skip
        assert all(r.status == "created" for r in capture(project, "interactions", events))
        annotate.create_queue(project, annotate.QueueConfig(name=name, gold_share=0, **spec))
        ids = [e["id"] for e in events]
        if spec["task"] == "pairwise":
            annotate.fill(project, name, pairs=[(ids[0], ids[1])])
        else:
            annotate.fill(project, name, interaction_ids=ids)


class Setup:
    def __init__(self, live: LiveServer, annotators: list[keys.NewApiKey], shots: Path) -> None:
        self.live, self.annotators, self.shots = live, annotators, shots

    def sql(self, query: str) -> list[dict[str, Any]]:
        with self.live.http() as http:
            reply = http.post("/api/sql", json={"sql": query})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        return [dict(zip(body["columns"], row, strict=True)) for row in body["rows"]]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    proj = init_project(tmp_path / "live")
    admin = keys.create_key(proj, "admin").key
    annotators = [keys.create_key(proj, "annotator", name=f"annotator {i}") for i in range(2)]
    _setup(proj)
    proj.close()
    live = LiveServer(root=proj.root, admin_key=admin).start()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"\nscreenshots: {shots}")
    try:
        yield Setup(live, annotators, shots)
    finally:
        live.stop()


def _sign_in(page: Any, url: str, key: str) -> None:
    page.goto(f"{url}/ui/annotate")
    page.wait_for_url("**/ui/login**")
    page.fill("#key", key)
    page.keyboard.press("Enter")
    page.wait_for_url(lambda u: urlsplit(u).path == "/ui/annotate")


def _lease(page: Any) -> str:
    return str(page.get_attribute("#item", "data-lease") or "")


def _press(page: Any, *presses: str) -> None:
    """Press keys on the current item and wait until the next item (or the done view) replaced it."""
    before = _lease(page)
    for key in presses:
        page.keyboard.press(key)
    page.wait_for_function("b => (document.getElementById('item')?.dataset.lease || '') !== b", arg=before)


def _open(page: Any, url: str, queue: str) -> None:
    page.goto(f"{url}/ui/annotate/{queue}")
    page.wait_for_selector("#item")


def test_annotator_labels_every_task_type_with_the_keyboard(setup: Setup) -> None:
    url, shots = setup.live.url, setup.shots
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            one = browser.new_context(viewport={"width": 1280, "height": 860})
            page = one.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{url}/ui/login")
            page.screenshot(path=shots / "login.png")
            _sign_in(page, url, setup.annotators[0].key)
            assert page.locator("table.queues tbody tr").count() == len(QUEUES)
            page.screenshot(path=shots / "queues.png")

            _open(page, url, "rate")  # rating: wait a second so the timer shows, then 4; skip the second
            assert page.locator(".prose h1").inner_text() == "Rating" and "<script>" in page.inner_text(".prose")
            page.wait_for_timeout(1100)
            assert page.inner_text("#timer") != "0:00"
            page.screenshot(path=shots / "rating.png")
            _press(page, "4")
            assert page.inner_text("#labelled") == "1"
            _press(page, "s")
            assert page.locator("#item[data-state=done]").is_visible()
            page.screenshot(path=shots / "done.png")

            _open(page, url, "ok")
            page.screenshot(path=shots / "accept.png")
            _press(page, "y")

            _open(page, url, "fix")
            page.keyboard.press("e")
            page.keyboard.type(" Sources: the manual.")
            page.screenshot(path=shots / "rewrite.png")
            _press(page, "Control+Enter")

            _open(page, url, "pair")
            shown_a = page.inner_text(".answer-a .msg-text")
            page.screenshot(path=shots / "pairwise.png")
            _press(page, "a")

            _open(page, url, "cls")
            page.keyboard.press("1")
            page.keyboard.press("3")
            page.screenshot(path=shots / "classify.png")
            _press(page, "Enter")

            _open(page, url, "note")
            page.keyboard.press("?")
            assert page.locator("#help").is_visible()
            page.screenshot(path=shots / "help.png")
            page.keyboard.press("Escape")
            page.keyboard.press("e")
            page.keyboard.type("Needs a source.")
            page.screenshot(path=shots / "comment.png")
            _press(page, "Control+Enter")

            _open(page, url, "short")  # a lease of 5 s runs out on the page
            expired_prompt = page.inner_text(".msg-user .msg-text")
            expired_lease = _lease(page)
            page.wait_for_selector("#expired", state="visible", timeout=9000)
            page.screenshot(path=shots / "lease-expired.png")
            _press(page, "Enter")
            assert "expired" in page.inner_text(".notice")
            assert page.inner_text(".msg-user .msg-text") != expired_prompt
            page.screenshot(path=shots / "after-expiry.png")
            assert errors == []

            # a second annotator: the expired item went back to the pool; the shared queue is split
            two = browser.new_context(viewport={"width": 1280, "height": 860})
            other = two.new_page()
            _sign_in(other, url, setup.annotators[1].key)
            _open(other, url, "short")
            assert other.inner_text(".msg-user .msg-text") == expired_prompt

            _open(page, url, "both")
            _open(other, url, "both")
            seen: list[list[str]] = [[], []]
            for _ in range(4):
                for who, (tab, key) in enumerate([(page, "y"), (other, "n")]):
                    if tab.locator("#item[data-state=item]").count():
                        seen[who].append(tab.inner_text(".msg-user .msg-text"))
                        _press(tab, key)
            other.screenshot(path=shots / "second-annotator.png")
        finally:
            browser.close()

    assert not set(seen[0]) & set(seen[1]) and len(seen[0]) + len(seen[1]) == 4, seen
    rows = setup.sql(
        "SELECT q.name AS queue, l.annotator, l.value, l.seconds, l.interaction_id FROM labels l "
        "JOIN annotation_queues q ON q.id = l.queue_id ORDER BY l.created_at"
    )
    mine = [r for r in rows if r["annotator"] == setup.annotators[0].id]
    values = {r["queue"]: orjson.loads(r["value"]) if isinstance(r["value"], str) else r["value"] for r in mine}
    assert values["rate"] == {"rating": 4}
    assert values["ok"] == {"accept": True}
    assert values["fix"] == {"text": "fix answer 0 Sources: the manual."}
    assert values["cls"] == {"categories": ["safe", "unsafe"]}
    assert values["note"] == {"text": "Needs a source."}
    assert values["pair"]["choice"] == "a" and values["pair"]["chosen"] == f"pair-{shown_a.split()[-1]}"
    assert all(r["seconds"] > 0 for r in rows), rows
    assert next(r["seconds"] for r in mine if r["queue"] == "rate") >= 1.0
    assert len([r for r in rows if r["queue"] == "both"]) == 4
    leases = setup.sql(f"SELECT state FROM annotation_leases WHERE id = '{expired_lease}'")
    assert leases == [{"state": "expired"}]
    skipped = setup.sql("SELECT count(*) AS n FROM annotation_leases WHERE state = 'skipped'")
    assert skipped == [{"n": 1}]
