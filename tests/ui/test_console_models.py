"""The console's models pages over the two-turn project: the registry with where each model serves,
and a model's page (facts, lineage graph and linked columns, experiments and decisions, curves)."""

from __future__ import annotations

import html
import re

import pytest

from posttrain import jobs, routing, versions
from posttrain.experiments.store import list_experiments
from posttrain.models.registry import get_model, list_models
from ui.helpers import Console

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page))).strip()


def _block(page: str, element_id: str) -> str:
    """Return the HTML of the element with ``id`` up to the next closing div/table (for a column or table)."""
    found = re.search(rf'id="{element_id}">(.*?)</(?:table|section)>', page, re.DOTALL)
    assert found, f"no element {element_id}"
    return found.group(1)


def test_registry_lists_every_model_and_where_it_serves(console: Console) -> None:
    client, _ = console.sign_in("viewer")
    page = client.get("/ui/models")
    assert page.status_code == 200
    models = list_models(console.project)
    assert {m.name for m in models} == {"base", "t-t1-sft", "t-t2-sft"}
    routes = routing.list_routes(console.project)
    for model in models:
        row = re.search(rf'<tr data-name="{model.name}">(.*?)</tr>', page.text, re.DOTALL)
        assert row, model.name
        cells = _text(row.group(1))
        assert cells.startswith(f"{model.name} {model.kind} {model.status}")
        for ref in model.dataset_versions:
            assert ref in cells
        mine = [r for r in routes if r.model == model.name]
        for route in mine:
            assert f"({route.name})" in cells
        if not mine:
            assert "not routed" in cells
    assert "t-adult" in page.text and "t-minor" in page.text  # the loop's routes serve t-t2-sft


def test_model_page_shows_lineage_experiments_decisions_and_loss_curve(console: Console) -> None:
    client, _ = console.sign_in("viewer")
    page = client.get("/ui/models/t-t1-sft")
    assert page.status_code == 200
    model = get_model(console.project, "t-t1-sft")
    # facts: its base, its datasets, its run
    assert 'id="base"><a href="/ui/models/base">base</a>' in page.text
    assert model.dataset_versions == ["t-sft@1"]
    datasets = _block(page.text, "lineage-datasets")
    rows = versions.resolve(console.project, "t-sft@1").row_count
    assert 'href="/ui/datasets/t-sft/1"' in datasets and f"{rows} rows" in datasets
    assert f'href="/ui/jobs/{model.run_id}"' in page.text
    # feedback behind the dataset, by kind and source (turn 1's logs: thumbs up and one edit)
    feedback = _text(_block(page.text, "lineage-feedback"))
    assert "thumb (user): 20" in feedback and "edit (user): 1" in feedback and "interactions 21" in feedback
    # the experiments it was in and their decisions
    mine = [e for e in list_experiments(console.project, with_analyses=False)
            if any(v.model == "t-t1-sft" for v in e.config.variants)]  # fmt: skip
    assert {e.name for e in mine} == {"t-t1-ab-adult", "t-t1-ab-minor", "t-t2-ab-adult", "t-t2-ab-minor"}
    for experiment in mine:
        node = re.search(rf'data-experiment="{experiment.name}">(.*?)</div>', page.text, re.DOTALL)
        assert node, experiment.name
        shown = _text(node.group(1))
        assert experiment.decision is not None
        assert f"{experiment.decision.action} {experiment.decision.variant}" in shown
        assert all(reason in shown for reason in experiment.decision.reasons)
        assert f'href="/ui/experiments/{experiment.name}"' in node.group(1)
    # the graph, and the run's loss curve
    assert '<img class="chart" alt="Lineage of t-t1-sft' in page.text
    assert '<img class="chart" alt="Training loss per step of t-t1-sft' in page.text
    history = jobs.get_job(console.project, model.run_id or "").metrics
    assert f"{len(history)} log points" in page.text


def test_model_page_of_the_second_turn_shows_the_base_chain(console: Console) -> None:
    client, _ = console.sign_in("admin")
    page = client.get("/ui/models/t-t2-sft")
    assert page.status_code == 200
    chain = _block(page.text, "lineage-base")
    assert chain.index('href="/ui/models/base"') < chain.index('href="/ui/models/t-t1-sft"')
    assert 'href="/ui/datasets/t-sft/2"' in page.text
    assert "adult · assistant (t-adult)" in page.text  # where it serves


def test_base_model_page_says_it_has_no_run(console: Console) -> None:
    client, _ = console.sign_in("admin")
    page = client.get("/ui/models/base")
    assert page.status_code == 200
    assert 'id="no-run"' in page.text and "base has no training run" in page.text
    assert "Training loss" not in page.text
    assert 'href="/ui/experiments/t-t1-ab-adult"' in page.text  # it was the control arm of turn 1


@pytest.mark.parametrize("url", ["/ui/models/nope", "/ui/models/" + "x" * 600])
def test_unknown_model_is_a_404_page(console: Console, url: str) -> None:
    client, _ = console.sign_in("viewer")
    page = client.get(url)
    assert page.status_code == 404 and "Not found" in page.text


def test_bad_cursor_is_a_400_page(console: Console) -> None:
    client, _ = console.sign_in("viewer")
    page = client.get("/ui/models?cursor=%25%25")
    assert page.status_code == 400 and "<p>cursor: " in page.text


@pytest.mark.parametrize("role", ["annotator", "ingest"])
def test_roles_without_console_read_are_refused(console: Console, role: str) -> None:
    client, _ = console.sign_in(role)
    for url in ("/ui/models", "/ui/models/t-t1-sft", "/ui/models/base"):
        assert client.get(url).status_code == 403, url
