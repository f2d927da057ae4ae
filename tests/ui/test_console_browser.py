"""The console in a real browser (Debian's chromium via Playwright) against `posttrain serve`.

The project ran two turns of the loop (``flywheel``). Each role signs in and opens every page its
navigation offers (an admin and a viewer all nine, an annotator two); every page loads without a
script error or a Content-Security-Policy violation, and a screenshot of each lands in
``$POSTTRAIN_SCREENSHOTS`` (or the test's tmp folder; printed). Then, as a user would: the numbers
on the overview match the API's SQL; a click path interaction → dataset → model → experiment and
back; a side-by-side comparison in the playground whose choice is found stored; an admin promotes
an experiment through its confirmation page while a viewer sees no button and is refused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from conftest import LiveServer

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("chromium is not on PATH (CI installs Debian's chromium; locally: apt-get install chromium)",
                allow_module_level=True)  # fmt: skip
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")

PAGES = ["overview", "interactions", "datasets", "models", "jobs", "experiments", "evals", "playground", "annotate"]


@dataclass
class Site:
    live: LiveServer
    keys: dict[str, str]
    shots: Path

    def sql(self, query: str) -> list[list[Any]]:
        with self.live.http() as http:
            reply = http.post("/api/sql", json={"sql": query})
        assert reply.status_code == 200, reply.text
        return list(reply.json()["rows"])


@pytest.fixture
def site(flywheel: Path, tmp_path: Path) -> Iterator[Site]:
    root = tmp_path / "proj"
    shutil.copytree(flywheel, root)
    role_keys = json.loads((flywheel.parent / "keys.json").read_text())
    shots = Path(os.environ.get("POSTTRAIN_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {shots}")
    live = LiveServer(root=root, admin_key=role_keys["admin"]).start()
    try:
        yield Site(live, role_keys, shots)
    finally:
        live.stop()


class Browser:
    """One signed-in browser context; collects script errors and CSP violations of every page."""

    def __init__(self, browser: Any, url: str, key: str) -> None:
        self.url = url
        self.context = browser.new_context(viewport={"width": 1360, "height": 900})
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("pageerror", lambda exc: self.problems.append(f"script error: {exc}"))
        self.page.on("console", self._console)
        self.page.goto(f"{url}/ui")
        self.page.wait_for_url("**/ui/login**")
        self.page.fill("#key", key)
        self.page.keyboard.press("Enter")
        self.page.wait_for_url(lambda u: urlsplit(u).path not in ("/ui/login", "/ui"))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.problems.append(f"console: {message.text}")

    def open(self, path: str) -> Any:
        """Go to ``path``; assert it answered 200 with no problem so far; return the response."""
        reply = self.page.goto(f"{self.url}{path}")
        assert reply is not None and reply.status == 200, f"{path}: {reply.status if reply else 'no response'}"
        assert not self.problems, f"{path}: {self.problems}"
        return reply

    def nav(self) -> list[str]:
        return [str(a.get_attribute("href")) for a in self.page.locator("nav.sections a").all()]

    def path(self) -> str:
        return urlsplit(self.page.url).path


@pytest.fixture
def chromium() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def test_every_page_for_every_role_loads_cleanly_with_a_screenshot(site: Site, chromium: Any) -> None:
    expected = {"admin": PAGES, "viewer": PAGES, "annotator": ["interactions", "annotate"]}
    for role, pages in expected.items():
        tab = Browser(chromium, site.live.url, site.keys[role])
        assert tab.nav() == [f"/ui/{p}" for p in pages], role
        for name in pages:
            tab.open(f"/ui/{name}")
            assert tab.page.locator("nav.sections a.active").inner_text().lower() == name
            tab.page.screenshot(path=site.shots / f"{role}-{name}.png", full_page=True)
        if role == "annotator":  # the rest of the console is refused, with a page that says so
            reply = tab.page.goto(f"{site.live.url}/ui/models")
            assert reply is not None and reply.status == 403 and "Not allowed" in tab.page.inner_text("main")
        tab.context.close()


def test_overview_numbers_match_the_api(site: Site, chromium: Any) -> None:
    tab = Browser(chromium, site.live.url, site.keys["viewer"])
    tab.open("/ui/overview")
    text = tab.page.inner_text("main")
    [[interactions]] = site.sql("SELECT count(*) FROM interactions")
    [[feedback]] = site.sql("SELECT count(*) FROM feedback")
    assert f"{interactions:,}" in text and f"{feedback:,}" in text
    for cohort, model in site.sql("SELECT cohort, model FROM routes WHERE cohort IS NOT NULL ORDER BY cohort"):
        assert cohort in text and model in text
    assert tab.page.locator("img.chart").count() >= 2
    tab.context.close()


def test_click_through_interaction_dataset_model_experiment_and_back(site: Site, chromium: Any) -> None:
    tab = Browser(chromium, site.live.url, site.keys["viewer"])
    tab.open("/ui/datasets/t-sft/1")  # the first turn's SFT data: one of its rows' interactions
    tab.page.locator('main a[href^="/ui/interactions/"]').first.click()
    tab.page.wait_for_load_state()
    assert re.match(r"^/ui/interactions/s0-\d+$", tab.path()), tab.path()
    visited = [tab.path()]
    for pattern in (r"^/ui/datasets/t-sft/\d+$", r"^/ui/models/[^/]+$", r"^/ui/experiments/[^/]+$"):
        links = [a for a in tab.page.locator("main a").all() if re.match(pattern, a.get_attribute("href") or "")]
        assert links, f"no link matching {pattern} on {tab.path()}"
        links[0].click()
        tab.page.wait_for_load_state()
        assert re.match(pattern, tab.path()), tab.path()
        assert not tab.problems, tab.problems
        visited.append(tab.path())
        tab.page.screenshot(path=site.shots / f"click-{len(visited)}.png", full_page=True)
    for expected in reversed(visited[:-1]):
        tab.page.go_back()
        tab.page.wait_for_load_state()
        assert tab.path() == expected
    tab.context.close()


def test_side_by_side_in_the_playground_stores_the_choice(site: Site, chromium: Any) -> None:
    tab = Browser(chromium, site.live.url, site.keys["admin"])
    tab.open("/ui/playground")
    tab.page.select_option("select[name=model_a]", "base")
    tab.page.select_option("select[name=model_b]", "t-t1-sft")
    tab.page.fill("input[name=max_tokens]", "8")
    tab.page.fill("#prompt", "add 2 3")
    tab.page.screenshot(path=site.shots / "playground-form.png", full_page=True)
    tab.page.click("#playground-form button[type=submit]")
    tab.page.wait_for_selector("#choice-form", timeout=180_000)  # the first send loads both models
    assert not tab.problems, tab.problems
    a_id = tab.page.get_attribute("#choice-form input[name=a_id]", "value")
    b_id = tab.page.get_attribute("#choice-form input[name=b_id]", "value")
    tab.page.screenshot(path=site.shots / "playground-answers.png", full_page=True)
    tab.page.check("#choice-form input[name=choice][value=b]")
    tab.page.fill("#comment", "b is right")
    tab.page.click("#choice-form button[type=submit]")
    tab.page.wait_for_load_state()
    assert "Saved" in tab.page.inner_text("main")
    tab.page.screenshot(path=site.shots / "playground-saved.png", full_page=True)
    pair = f"('{a_id}', '{b_id}')"
    stored = site.sql(f"SELECT interaction_id, kind, value ->> '$', text FROM feedback WHERE interaction_id IN {pair}")
    assert stored == [[a_id, "choice", b_id, "b is right"]]  # on the losing answer, naming the chosen one
    models = site.sql(f"SELECT model, list_contains(tags, 'playground') FROM interactions WHERE id IN {pair}")
    assert sorted(m for m, _ in models) == ["base", "t-t1-sft"] and all(tagged for _, tagged in models)
    tab.context.close()


def test_an_admin_promotes_through_the_confirmation_and_a_viewer_is_refused(site: Site, chromium: Any) -> None:
    variants = [{"name": "serving", "model": "t-t2-sft", "share": 0.5},
                {"name": "candidate", "model": "t-t1-sft", "share": 0.5}]  # fmt: skip
    with site.live.http() as http:
        assert (
            http.post(
                "/api/experiments", json={"name": "ui-ab", "variants": variants, "cohorts": ["adult"]}
            ).status_code
            == 201
        )
        assert http.post("/api/experiments/ui-ab/start").status_code == 200
        route = {"name": "ui-ab-route", "cohort": "adult", "requested": "ui-asks", "experiment": "ui-ab"}
        assert http.post("/api/routes", json=route).status_code == 201
    viewer = Browser(chromium, site.live.url, site.keys["viewer"])
    viewer.open("/ui/experiments/ui-ab")
    assert viewer.page.locator("a[data-action]").count() == 0
    refused = viewer.page.request.post(f"{site.live.url}/ui/experiments/ui-ab/promote", form={"confirm": "yes"})
    assert refused.status == 403
    viewer.page.screenshot(path=site.shots / "viewer-experiment.png", full_page=True)
    admin = Browser(chromium, site.live.url, site.keys["admin"])
    admin.open("/ui/experiments/ui-ab")
    assert [a.get_attribute("data-action") for a in admin.page.locator("a[data-action]").all()] == [
        "stop", "promote", "rollback"]  # fmt: skip
    admin.page.screenshot(path=site.shots / "admin-experiment.png", full_page=True)
    admin.page.click("a[data-action=promote]")
    admin.page.wait_for_load_state()
    assert "/confirm/promote" in admin.path()
    admin.page.screenshot(path=site.shots / "admin-confirm-promote.png", full_page=True)
    admin.page.locator("main form button[type=submit]").click()
    admin.page.wait_for_load_state()
    assert admin.path() == "/ui/experiments/ui-ab" and not admin.problems
    [[state]] = site.sql("SELECT state FROM experiments WHERE name = 'ui-ab'")
    assert state == "promoted"
    viewer.page.reload()
    assert "promoted" in viewer.page.inner_text("main")
    viewer.context.close()
    admin.context.close()


def test_a_running_job_updates_on_its_page_until_it_finishes(site: Site, chromium: Any) -> None:
    body = {"model": "base", "dataset": "t-sft@1", "output": "ui-live", "max_steps": 300, "logging_steps": 10,
            "learning_rate": 1e-3}  # fmt: skip
    with site.live.http() as http:
        started = http.post("/api/train/sft", json=body)
    assert started.status_code == 202, started.text
    job = started.json()["job_id"]
    tab = Browser(chromium, site.live.url, site.keys["viewer"])
    tab.open(f"/ui/jobs/{job}")
    if tab.page.get_attribute(".live", "data-finished") == "false":  # still running: the page's script polls
        tab.page.screenshot(path=site.shots / "job-running.png", full_page=True)
        first = tab.page.inner_text(".live")
        tab.page.wait_for_selector('.live[data-finished="true"]', timeout=120_000)
        assert tab.page.inner_text(".live") != first  # swapped in without a reload
    assert tab.page.get_attribute(".live", "data-state") == "succeeded"
    assert tab.page.locator(".live img.chart").count() >= 1 and not tab.problems, tab.problems
    tab.page.screenshot(path=site.shots / "job-finished.png", full_page=True)
    tab.context.close()


def test_an_admin_rolls_back_through_the_confirmation(site: Site, chromium: Any) -> None:
    variants = [{"name": "serving", "model": "t-t2-sft", "share": 0.5},
                {"name": "candidate", "model": "t-t1-sft", "share": 0.5}]  # fmt: skip
    with site.live.http() as http:
        assert http.post("/api/experiments", json={"name": "ui-back", "variants": variants}).status_code == 201
        assert http.post("/api/experiments/ui-back/start").status_code == 200
    admin = Browser(chromium, site.live.url, site.keys["admin"])
    admin.open("/ui/experiments/ui-back")
    admin.page.click("a[data-action=rollback]")
    admin.page.wait_for_load_state()
    assert "/confirm/rollback" in admin.path()
    admin.page.locator("main form button[type=submit]").click()
    admin.page.wait_for_load_state()
    assert admin.path() == "/ui/experiments/ui-back" and not admin.problems
    [[state]] = site.sql("SELECT state FROM experiments WHERE name = 'ui-back'")
    assert state == "rolled_back"
    admin.context.close()
