"""The console's overview over a project that ran two loop turns: tiles, served models, figures, turns, jobs."""

from __future__ import annotations

import base64
import re
from datetime import timedelta

import pytest

from posttrain import jobs, loop, routing
from posttrain.clock import utc_now
from ui.helpers import Console

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

TILE = re.compile(r'<div class="label">([^<]+)</div><div class="value">([^<]+)</div>')
CHART = re.compile(r'<img class="chart" alt="([^"]*)" src="data:image/svg\+xml;base64,([^"]+)">')


def _section(page: str, name: str) -> str:
    return page[page.index(f'<section id="{name}"') :].split("</section>")[0]


def _overview(console: Console, role: str = "admin") -> str:
    client, _ = console.sign_in(role)
    reply = client.get("/ui/overview")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-security-policy"].startswith("default-src 'self'")
    return reply.text


def test_tiles_match_the_warehouse(console: Console) -> None:
    cur = console.project.cursor()
    total, recent = cur.execute(
        "SELECT count(*), count(*) FILTER (WHERE timestamp >= ?) FROM interactions", [utc_now() - timedelta(hours=24)]
    ).fetchone()
    feedback = cur.execute("SELECT count(*) FROM feedback").fetchone()[0]
    models = cur.execute("SELECT count(*) FROM models").fetchone()[0]
    running = cur.execute("SELECT count(*) FROM experiments WHERE state = 'running'").fetchone()[0]
    tiles = dict(TILE.findall(_section(_overview(console), "tiles")))
    assert total > 0 and feedback > 0
    assert tiles == {
        "Interactions": f"{total:,}",
        "Feedback": f"{feedback:,}",
        "Models": f"{models:,}",
        "Running experiments": f"{running:,}",
    }
    assert f"{recent:,} in the last 24 h" in _overview(console)


def test_feedback_per_kind_matches_sql(console: Console) -> None:
    since = utc_now().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=29)
    rows = (
        console.project.cursor()
        .execute("SELECT kind, count(*) FROM feedback WHERE timestamp >= ? GROUP BY 1", [since])
        .fetchall()
    )
    shown = dict(re.findall(r'<span data-kind="([^"]+)">[^ ]+ ([\d,]+)</span>', _overview(console)))
    assert shown == {kind: f"{n:,}" for kind, n in rows}
    assert shown["thumb"] != "0"


def test_each_cohort_shows_the_model_its_route_serves_and_why(console: Console) -> None:
    page = _section(_overview(console), "serving")
    table = routing.table(console.project)
    assert table.routes, "the fixture's loop made a route per cohort"
    turns = loop.status(console.project)
    last = turns[-1]
    for route in table.routes:
        assert route.cohort is not None and route.model is not None
        row = page[page.index(f'<tr data-cohort="{route.cohort}">') :].split("</tr>")[0]
        served = row.split('<td class="served">')[1].split("</td>")[0]
        assert f'<a href="/ui/models/{route.model}">{route.model}</a>' in served
        assert route.model == (last.result or {})["serving"][route.cohort]
        decision = (last.result or {})["decisions"][route.cohort]
        assert f"loop {last.loop} turn {last.turn} promoted it" in row
        assert f'<a href="/ui/experiments/{decision["experiment"]}">' in row


def test_last_turns_show_serving_before_and_after_and_decisions(console: Console) -> None:
    page = _section(_overview(console), "turns")
    for turn in loop.status(console.project):
        row = page[page.index(f'<tr data-turn="{turn.loop}-{turn.turn}">') :].split("</tr>")[0]
        for cohort, before in turn.serving.items():
            after = (turn.result or {})["serving"][cohort]
            assert f'{cohort}: <a href="/ui/models/{before}">{before}</a> → <a href="/ui/models/{after}">' in row
        for decision in (turn.result or {})["decisions"].values():
            assert f'<span class="state good">{decision["action"]}</span>' in row
            for reason in decision["reasons"]:
                assert reason in row


def test_charts_are_matplotlib_svg_images(console: Console) -> None:
    charts = CHART.findall(_section(_overview(console), "figures"))
    assert len(charts) == 4
    for alt, data in charts:
        svg = base64.b64decode(data).decode()
        assert svg.startswith("<svg") and 'id="figure_1"' in svg, alt[:40]  # drawn by matplotlib
    alts = " ".join(alt for alt, _ in charts)
    assert "thumbs_up_rate" in alts and "stacked by kind" in alts and "flagged" in alts


def test_running_jobs_are_listed_with_links(console: Console) -> None:
    assert "No job is running." in _overview(console)
    handle = jobs.start_job(console.project, "train.sft", {"model": "base"})
    handle.progress(0.25)
    page = _section(_overview(console), "jobs")
    row = page[page.index(f'<tr data-job="{handle.id}">') :].split("</tr>")[0]
    assert f'<a href="/ui/jobs/{handle.id}">{handle.id}</a>' in row
    assert "train.sft" in row and "25%" in row and 'class="state running"' in row
    done = [j.id for j in jobs.list_jobs(console.project) if j.state == "succeeded"]
    assert done and not any(f'data-job="{j}"' in page for j in done)


@pytest.mark.parametrize(("role", "status"), [("viewer", 200), ("annotator", 403), ("ingest", 403)])
def test_roles(console: Console, role: str, status: int) -> None:
    client, _ = console.sign_in(role)
    reply = client.get("/ui/overview")
    assert reply.status_code == status
    if status == 200:
        assert "Who is served what" in reply.text and console.keys[role] not in reply.text


def test_signed_out_is_sent_to_sign_in(console: Console) -> None:
    reply = console.new_client().get("/ui/overview")
    assert reply.status_code == 303 and reply.headers["location"].startswith("/ui/login")
