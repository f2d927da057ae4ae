"""The curation report page: built from a real curated version, self-contained and escaped."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from curation.helpers import build_sft, store_accepted
from posttrain.curation import report
from posttrain.project import Project

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

SCRIPT = "<script>alert(1)</script>"
ROWS = [(f"Question {i} about topic {i % 4}: how do I do thing {i}?", f"Do it like this, step {i}.") for i in range(16)]


def _curated(project: Project) -> str:
    store_accepted(project, ROWS[:8], extra={"metadata": {"family": SCRIPT}})
    store_accepted(project, [(f"{SCRIPT} {p}", a) for p, a in ROWS[8:]], prefix="j", cohort="minor")
    select = {"fraction": 0.5, "embedder": "hashing", "strict_cohorts": True}
    version = build_sft(project, "curated", curate={"select": select})
    assert version.stats["curation"]["rows_out"] == 8  # the minors too: strict_cohorts selects among them
    return version.ref


def test_report_of_a_curated_version(project: Project) -> None:
    page = report.render(project, _curated(project))
    assert page.startswith("<!DOCTYPE html>") and "Curation of curated@1" in page
    # the summary and the stage table with its examples and reasons
    assert '<td class="n">16</td>' in page and '<td class="n">8 (50.0% kept)</td>' in page
    assert '<h3 id="stage-select">select</h3>' in page
    assert "not selected: budget 50% of stratum" in page
    # one svg per plot: removed per stage, the map by cohort, by family, the clusters
    assert page.count("<svg") == 4 and page.count("</svg>") == 4
    assert "Rows removed per stage" in page and "Embedding map by cohort" in page
    # the planted markup is escaped everywhere (table cells, details, the plots' legends)
    assert SCRIPT not in page and "<script" not in page.lower()
    assert html_escaped(SCRIPT) in page
    # nothing loaded from anywhere
    assert not re.search(r"(src|href)\s*=\s*[\"']?https?://", page, re.IGNORECASE)
    assert "@import" not in page and "<link" not in page.lower()


def html_escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def test_report_of_a_version_without_curation(project: Project, tmp_path: Path) -> None:
    store_accepted(project, ROWS[:4])
    version = build_sft(project, "plain")
    page = report.render(project, version.ref)
    assert "was built without curation" in page and "<svg" not in page
    written = report.render_to(project, "plain", tmp_path / "out" / "plain.html")
    assert written.read_text(encoding="utf-8") == page


def test_map_sample_is_capped_and_fixed() -> None:
    rows = list(range(0, 40_000, 3))
    sample = report._sample(rows)
    assert len(sample) == report.MAP_POINTS and np.array_equal(sample, report._sample(rows))
    assert np.all(np.diff(sample) > 0) and set(sample.tolist()) <= set(rows)
    assert report._sample([1, 5]).tolist() == [1, 5]
