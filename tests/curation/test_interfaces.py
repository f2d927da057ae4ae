"""Curation through every interface: the library's build, the CLI, the HTTP API and the loop recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from curation.helpers import NEAR_DUPLICATES as ROWS
from curation.helpers import build_sft, store_accepted
from posttrain import datasets, loop
from posttrain.cli import app
from posttrain.errors import InvalidInput
from posttrain.project import Project

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")


def test_build_records_each_stage_in_the_manifest_and_details(project: Project) -> None:
    store_accepted(project, ROWS)
    version = build_sft(project, "curated", curate={"dedup": {"threshold": 0.7}})
    curation = version.stats["curation"]
    assert curation["rows_in"] == 8 and curation["rows_out"] == version.row_count == 6
    (dedup,) = curation["stages"]
    assert dedup["stage"] == "dedup" and dedup["removed"] == 2 and dedup["rows_in"] == 8
    assert all("duplicate" in e["reason"] for e in dedup["examples"])
    manifest = json.loads(Path(version.manifest_path).read_text())
    assert manifest["stats"]["curation"]["stages"][0]["removed"] == 2
    details = pq.read_table(Path(version.path).parent / "curation.parquet").to_pylist()
    assert len(details) == 8 and sum(d["kept"] for d in details) == 6
    assert sorted(d["removed_by"] for d in details if not d["kept"]) == ["dedup", "dedup"]
    # the lineage names only the rows kept
    assert version.source_ids["interactions"] == 6


def test_bad_curation_recipe_names_the_field(project: Project) -> None:
    store_accepted(project, ROWS)
    with pytest.raises(InvalidInput) as caught:
        build_sft(project, "x", curate={"select": {"fraction": 0.3, "rows": 10}})
    assert caught.value.field == "curate.select" and "exactly one budget" in caught.value.message
    with pytest.raises(InvalidInput) as caught:
        build_sft(project, "x", curate={"dedupe": {}})
    assert caught.value.field == "curate.dedupe"


def test_a_minors_dataset_is_strict_by_default(project: Project) -> None:
    store_accepted(project, ROWS[3:], cohort="minor")
    version = build_sft(project, "minors", cohort=["minor"])
    curation = version.stats["curation"]
    assert curation["strict"] is True
    (safety,) = curation["stages"]
    assert safety["stage"] == "safety" and "no safety classifier" in (safety["note"] or "")
    store_accepted(project, ROWS[3:], cohort="adult", prefix="a")
    adults = build_sft(project, "adults", cohort=["adult"])
    assert "curation" not in adults.stats  # not a strict cohort, no recipe: nothing to curate


def test_cli_build_show_and_report(project: Project, cli: CliRunner, tmp_path: Path) -> None:
    store_accepted(project, ROWS)
    project.close()
    where = ["--project", str(project.root)]
    recipe = tmp_path / "curate.yaml"
    recipe.write_text("dedup: {threshold: 0.7}\nselect: {rows: 4, embedder: hashing}\n")
    built = cli.invoke(app, ["datasets", "build", "sft", "chat", "--curate", str(recipe), *where])
    assert built.exit_code == 0, built.output
    assert "curation: 8 rows in, 4 kept (dedup -2, select -2)" in built.output
    shown = cli.invoke(app, ["datasets", "show", "chat", "--rows", "0", *where])
    assert shown.exit_code == 0, shown.output
    assert "Curation" in shown.output and "dedup" in shown.output and "select" in shown.output
    inline = cli.invoke(app, ["datasets", "build", "sft", "chat", "--curate", '{"dedup": {"threshold": 0.7}}', *where])
    assert "curation: 8 rows in, 6 kept (dedup -2)" in inline.output, inline.output
    page = tmp_path / "report.html"
    written = cli.invoke(app, ["datasets", "report", "chat@1", "--output", str(page), *where])
    assert written.exit_code == 0, written.output
    assert "<svg" in page.read_text()
    bad = cli.invoke(app, ["datasets", "build", "sft", "chat", "--curate", "{select: [}", *where])
    assert isinstance(bad.exception, InvalidInput) and bad.exception.exit_code == 2  # main() prints it as one line
    assert bad.exception.field == "curate" and "not valid YAML or JSON" in bad.exception.message


def test_api_build_with_curation_and_report(project: Project, client: TestClient) -> None:
    store_accepted(project, ROWS)
    body = {"kind": "sft", "name": "api", "config": {"curate": {"dedup": {"threshold": 0.7}}}}
    built = client.post("/api/datasets/build", json=body)
    assert built.status_code == 201, built.text
    assert built.json()["stats"]["curation"]["rows_out"] == 6
    page = client.get("/api/datasets/api/report")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    bad = client.post("/api/datasets/build", json={**body, "config": {"curate": {"dedup": {"threshold": 2}}}})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "curate.dedup.threshold"
    missing = client.get("/api/datasets/nothing/report")
    assert missing.status_code == 404


def test_loop_recipe_curates_every_build(project: Project) -> None:
    recipe = loop.Recipe.model_validate({"curate": {"dedup": {}, "select": {"fraction": 0.3}}})
    assert recipe.curate is not None and recipe.curate.active() == ["dedup", "select"]
    with pytest.raises(InvalidInput) as caught:
        loop.load_recipe(None, curate={"select": {"fraction": 2}})
    assert caught.value.field == "curate.select.fraction"
    cohort = loop.Recipe.model_validate({"specialise": {"minor": {"curate": {"quality": {}}}}})
    assert cohort.specialise["minor"].curate is not None


def test_versions_built_without_curation_keep_their_hash(project: Project) -> None:
    store_accepted(project, ROWS)
    first = datasets.build(project, "sft", "plain")
    again = datasets.build(project, "sft", "plain")
    assert "curation" not in first.stats and first.content_hash == again.content_hash
