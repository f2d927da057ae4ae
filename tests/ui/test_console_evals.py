"""The console's evals pages over a project that ran two loop turns: runs, one run, two models compared."""

from __future__ import annotations

import html
import re

import orjson
import pytest

from posttrain import evals
from posttrain.evals import SuiteConfig
from ui.helpers import Console

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

RUN_IDS = re.compile(r'<tr data-run="([^"]+)">\s*<td rowspan')
ITEM = re.compile(
    r'<tr class="item-diff differ"><td class="num">(\d+)</td>.*?<pre class="block answer-a">(.*?)</pre></td>'
    r'<td><pre class="block answer-b">(.*?)</pre>',
    re.S,
)


def _interval(est: evals.Estimate) -> str:
    return f"{est.mean:.3f} [{est.ci_low:.3f}, {est.ci_high:.3f}]"


def test_the_list_matches_the_eval_runs_with_intervals_a_chart_and_the_form(console: Console) -> None:
    client, _ = console.sign_in("viewer")
    runs = evals.list_runs(console.project)
    ids = [r[0] for r in console.project.cursor().execute(
        "SELECT id FROM eval_runs ORDER BY created_at DESC, id DESC").fetchall()]  # fmt: skip
    assert len(runs) == 4
    page = client.get("/ui/evals").text
    assert RUN_IDS.findall(page) == ids == [r.id for r in runs]
    for run in runs:
        row = page[page.index(f'<tr data-run="{run.id}">') :].split("</tr>")[0]
        scores = run.scores["exact_match"]
        assert f'<a href="/ui/models/{run.model}">{run.model}</a>' in row and run.dataset in row
        assert f'<td class="overall">{_interval(scores.overall)}</td>' in row
        for cohort, est in scores.cohorts.items():
            assert f"<div>{cohort}: {_interval(est)}</div>" in row
        for family, est in scores.families.items():
            assert f"<div>{family}: {_interval(est)}</div>" in row
    assert '<img class="chart" alt="exact_match on suite@1 per model, overall and per cohort' in page
    assert 'action="/ui/evals/compare"' in page and '<option value="t-t1-sft">' in page
    only = client.get("/ui/evals", params={"model": "t-t1-sft"}).text
    assert RUN_IDS.findall(only) == [r.id for r in runs if r.model == "t-t1-sft"]


def test_a_run_page_shows_its_slices_scorers_and_items(console: Console) -> None:
    client, _ = console.sign_in("admin")
    run = evals.list_runs(console.project, model="base")[0]
    page = client.get(f"/ui/evals/{run.id}").text
    assert '<td id="scorers">exact_match</td>' in page
    slices = run.scores["exact_match"]
    for kind, label, est in [("overall", "all prompts", slices.overall),
                             *[("cohort", c, e) for c, e in slices.cohorts.items()],
                             *[("family", f, e) for f, e in slices.families.items()]]:  # fmt: skip
        row = page[page.index(f'<tr data-slice="{kind}:{label}">') :].split("</tr>")[0]
        assert f'<td class="num">{est.n}</td><td class="num">{est.mean:.3f}</td>' in row
        assert f"{est.ci_low:.3f} – {est.ci_high:.3f}" in row
    scores = evals.read_scores(run)
    assert page.count('<tr class="item">') == min(25, scores.num_rows) == 16
    assert "add 0 0" in page and f"{run.job_id}" in page
    two = client.get(f"/ui/evals/{run.id}", params={"limit": "5"}).text
    assert two.count('<tr class="item">') == 5 and 'rel="next"' in two
    nxt = html.unescape(re.search(r'<a class="button" href="([^"]+)" rel="next">', two).group(1))  # type: ignore[union-attr]
    assert client.get(nxt).text.count('<tr class="item">') == 5


def test_compare_shows_the_pair_side_by_side_with_the_gate_verdict(console: Console) -> None:
    client, _ = console.sign_in("viewer")
    page = client.get("/ui/evals/compare", params={"a": "base", "b": "t-t1-sft"}).text
    gate = orjson.loads(
        console.project.cursor().execute("SELECT gate FROM eval_comparisons ORDER BY created_at").fetchone()[0]
    )
    verdicts = page[page.index('<section id="verdicts">') :].split("</section>")[0]
    assert verdicts.count('<tr class="verdict">') == 2  # the stored comparison and the loop's turn 1
    assert "eval comparison" in verdicts and "loop t, turn 1" in verdicts
    assert gate["passed"] and verdicts.count('<span class="state pass">pass</span>') == 2
    assert "<td>t-t1-sft</td><td>base</td>" in verdicts
    assert "0 of 16" in page and 'id="no-differences"' in page  # greedy: both gave the same answers
    row = page[page.index('<tr data-slice="overall:all prompts">') :].split("</tr>")[0]
    assert '<td class="diff">0.000 [0.000, 0.000]</td>' in row
    assert '<img class="chart" alt="Difference in exact_match, t-t1-sft minus base' in page


def test_compare_shows_the_items_where_two_models_differ(console: Console) -> None:
    suite = SuiteConfig(dataset="suite", temperature=1.0, max_new_tokens=6, seed=3)
    verdict = evals.gate(console.project, "t-t1-sft", "base", suite, margin=1.0, rule="mean")
    cand, base = verdict.comparison.candidate, verdict.comparison.baseline
    a_rows, b_rows = evals.read_scores(base).to_pylist(), evals.read_scores(cand).to_pylist()
    differ = [i for i, (x, y) in enumerate(zip(a_rows, b_rows, strict=True)) if x["completion"] != y["completion"]]
    assert differ, "sampling at temperature 1 should make two different models answer differently"
    client, _ = console.sign_in("admin")
    page = client.get("/ui/evals/compare", params={"a": "base", "b": "t-t1-sft", "limit": "100"}).text
    shown = ITEM.findall(page)
    assert [int(i) for i, _, _ in shown] == differ
    for index, answer_a, answer_b in shown:
        assert html.unescape(answer_a) == a_rows[int(index)]["completion"]
        assert html.unescape(answer_b) == b_rows[int(index)]["completion"]
    assert f"{len(differ)} of 16" in page
    assert f"eval comparison {verdict.comparison.id}" in page  # the newest verdict, on these runs
    assert f'<a href="/ui/evals/{base.id}">' in page and f'<a href="/ui/evals/{cand.id}">' in page
    every = client.get("/ui/evals/compare", params={"a": "base", "b": "t-t1-sft", "show": "all", "limit": "100"}).text
    assert every.count('<tr class="item-diff') == 16


def test_compare_without_models_is_the_form(console: Console) -> None:
    client, _ = console.sign_in("viewer")
    reply = client.get("/ui/evals/compare")
    assert reply.status_code == 200 and 'id="compare-form"' in reply.text and "verdict" not in reply.text


@pytest.mark.parametrize(
    ("params", "status", "text"),
    [({"a": "base"}, 400, "<p>b:"), ({"b": "base"}, 400, "<p>a:"), ({"a": "base", "b": "base"}, 400, "<p>b:"),
     ({"a": "base", "b": "nope"}, 404, "nope"), ({"a": "nope", "b": "base"}, 404, "nope"),
     ({"a": "base", "b": "t-t1-sft", "show": "some"}, 400, "<p>show:"),
     ({"a": "base", "b": "t-t1-sft", "suite": "no spaces"}, 400, "<p>suite:"),
     ({"a": "base", "b": "t-t1-sft", "cursor": "%%%"}, 400, "<p>cursor:"),
     ({"a": "base", "b": "t-t1-sft", "limit": "1000"}, 400, "<p>limit:"),
     ({"a": "x" * 300, "b": "base"}, 400, "<p>a:")],
)  # fmt: skip
def test_compare_checks_its_parameters(console: Console, params: dict[str, str], status: int, text: str) -> None:
    client, _ = console.sign_in("admin")
    reply = client.get("/ui/evals/compare", params=params)
    assert reply.status_code == status and text in reply.text


def test_compare_on_a_suite_neither_ran_says_so(console: Console) -> None:
    client, _ = console.sign_in("viewer")
    page = client.get("/ui/evals/compare", params={"a": "base", "b": "t-t1-sft", "suite": "other"}).text
    assert 'id="no-common-suite"' in page


@pytest.mark.parametrize(
    ("url", "status", "text"),
    [("/ui/evals?suite=a b", 400, "<p>suite:"), ("/ui/evals?cursor=!", 400, "<p>cursor:"),
     ("/ui/evals?model=nope", 404, "nope"), ("/ui/evals/01NOSUCHRUN", 404, "01NOSUCHRUN"),
     ("/ui/evals/{run}?limit=0", 400, "<p>limit:"), ("/ui/evals/{run}?cursor=e30", 400, "<p>cursor:")],
)  # fmt: skip
def test_bad_parameters_and_unknown_runs(console: Console, url: str, status: int, text: str) -> None:
    client, _ = console.sign_in("viewer")
    run = evals.list_runs(console.project)[0]
    reply = client.get(url.replace("{run}", run.id))
    assert reply.status_code == status and text in reply.text


@pytest.mark.parametrize("role", ["annotator", "ingest"])
def test_annotators_and_ingest_keys_are_refused(console: Console, role: str) -> None:
    client, _ = console.sign_in(role)
    run = evals.list_runs(console.project)[0]
    for url in ("/ui/evals", f"/ui/evals/{run.id}", "/ui/evals/compare?a=base&b=t-t1-sft", "/ui/evals/compare"):
        reply = client.get(url)
        assert reply.status_code == 403, url
        assert "exact_match" not in reply.text
