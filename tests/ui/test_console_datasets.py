"""The console's datasets pages over the two-turn project: the list, a dataset's versions, a version
(manifest, curation counts, sample rows, models), and the diff between two versions."""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from curation.helpers import NEAR_DUPLICATES, build_sft, store_accepted
from posttrain import versions
from posttrain.records import DatasetVersion
from ui.helpers import Console

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

# three near-copies of one answer (an edit apart) and five distinct rows: dedup at 0.7 removes two
PLANTED = NEAR_DUPLICATES
MORE = [("Name a prime number above ten.", "Eleven."), ("Spell 'cat' backwards.", "tac"), ("What is 7 times 6?", "42")]


def _text(page: str) -> str:
    """Return a page's visible text (tags dropped, entities decoded, spaces collapsed)."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def _row(page: str, attr: str, value: str) -> str:
    """Return the text of the table row marked ``attr="value"``."""
    found = re.search(rf'<tr {attr}="{re.escape(value)}">(.*?)</tr>', page, re.DOTALL)
    assert found, f"no row {attr}={value}"
    return _text(found.group(1)).strip()


def _curated(console: Console) -> DatasetVersion:
    store_accepted(console.project, PLANTED, cohort="planted", prefix="planted-")
    return build_sft(console.project, "curated", curate={"dedup": {"threshold": 0.7}}, cohort=["planted"])


def test_list_shows_every_dataset_with_its_versions_and_rows(console: Console) -> None:
    client, _ = console.sign_in("viewer")
    page = client.get("/ui/datasets")
    assert page.status_code == 200
    by_name: dict[str, list[DatasetVersion]] = {}
    for version in versions.list_versions(console.project):
        by_name.setdefault(version.name, []).append(version)
    assert set(by_name) == {"suite", "t-sft", "t-pairs", "t-prompts"}
    for name, found in by_name.items():
        latest = max(found, key=lambda v: v.version)
        cells = _row(page.text, "data-name", name).split()
        assert cells[:5] == [name, latest.kind, str(len(found)), f"v{latest.version}", str(latest.row_count)]
        assert f'href="/ui/datasets/{name}/{latest.version}"' in page.text


def test_dataset_page_lists_versions_and_a_diff_form(console: Console) -> None:
    client, _ = console.sign_in("admin")
    page = client.get("/ui/datasets/t-sft")
    assert page.status_code == 200
    for version in versions.list_versions(console.project, name="t-sft"):
        cells = _row(page.text, "data-version", str(version.version))
        assert cells.startswith(f"v{version.version} {version.row_count} {version.content_hash[:12]}")
        assert f"interactions {version.source_ids['interactions']}" in cells
        assert f"accepted {version.stats['by_source']['accepted']}" in cells
    assert 'action="/ui/datasets/t-sft/diff"' in page.text and 'name="a"' in page.text and 'name="b"' in page.text


def test_version_page_shows_manifest_curation_counts_and_chart(console: Console) -> None:
    version = _curated(console)
    manifest = json.loads(Path(version.manifest_path or "").read_text())
    curation = manifest["stats"]["curation"]
    (dedup,) = curation["stages"]
    assert dedup["stage"] == "dedup" and dedup["removed"] == 2  # the planted duplicates
    client, _ = console.sign_in("viewer")
    page = client.get(f"/ui/datasets/curated/{version.version}")
    assert page.status_code == 200
    assert f'id="row-count">{manifest["row_count"]}<' in page.text
    assert _row(page.text, "data-stage", "dedup").split()[:3] == ["dedup", str(dedup["rows_in"]), str(dedup["removed"])]
    assert f"{curation['rows_in']} rows in, {curation['rows_out']} kept" in _text(page.text)
    assert '<img class="chart" alt="Rows removed per curation stage"' in page.text
    # per cohort, from curation.parquet: 8 in, 6 kept
    cohorts = re.search(r'<table class="data" id="cohorts">(.*?)</table>', page.text, re.DOTALL)
    assert cohorts and "planted 8 6" in _text(cohorts.group(1))
    # the removed examples, the manifest in a pre block, the sample rows
    assert all(html.escape(e["prompt"], quote=True) in page.text for e in dedup["examples"])
    shown = re.search(r'<pre class="block" id="manifest">(.*?)</pre>', page.text, re.DOTALL)
    assert shown and json.loads(html.unescape(shown.group(1)))["content_hash"] == version.content_hash
    sample = re.search(r'<table class="data" id="sample">(.*?)</table>', page.text, re.DOTALL)
    assert sample and sample.group(1).count("<tr>") == 1 + version.row_count


def test_version_page_pages_rows_and_names_the_models_trained_on_it(console: Console) -> None:
    client, _ = console.sign_in("admin")
    pairs = versions.resolve(console.project, "t-pairs@1")
    n = pairs.row_count
    assert 20 < n <= 40
    first = client.get("/ui/datasets/t-pairs/1")
    assert f"1–20 of {n}" in _text(first.text) and 'href="/ui/datasets/t-pairs/1?offset=20#rows"' in first.text
    second = client.get("/ui/datasets/t-pairs/1?offset=20")
    assert f"21–{n} of {n}" in _text(second.text) and "End of the list" in second.text
    rows = versions.read_rows(pairs).slice(20, n - 20).to_pylist()
    assert all(f'href="/ui/interactions/{r["interaction_ids"][0]}"' in second.text for r in rows)
    sft = client.get("/ui/datasets/t-sft/1")
    assert 'href="/ui/models/t-t1-sft"' in sft.text and 'href="/ui/models/t-t2-sft"' not in sft.text
    assert "built without curation" in sft.text


def _expected_diff(old: DatasetVersion, new: DatasetVersion) -> tuple[int, int]:
    """Return (added, removed): rows compared by every column but the interaction ids, with multiplicity."""

    def content(version: DatasetVersion) -> Counter[str]:
        rows = versions.read_rows(version).to_pylist()
        return Counter(
            json.dumps({k: v for k, v in r.items() if k not in ("interaction_id", "interaction_ids")}, sort_keys=True)
            for r in rows
        )

    a, b = content(old), content(new)
    return sum((b - a).values()), sum((a - b).values())


def test_diff_shows_exact_added_and_removed_counts(console: Console) -> None:
    v1 = _curated(console)  # 6 of the 8 planted rows
    store_accepted(console.project, MORE, cohort="planted", prefix="more-")
    v2 = build_sft(console.project, "curated", cohort=["planted"])  # no curation: all 11 rows
    assert (v1.row_count, v2.row_count) == (6, 11)
    assert _expected_diff(v1, v2) == (5, 0)
    client, _ = console.sign_in("viewer")
    page = client.get("/ui/datasets/curated/diff", params={"a": 1, "b": 2})
    assert page.status_code == 200
    assert 'id="added">5<' in page.text and 'id="removed">0<' in page.text
    by_source = re.search(r'<table class="data" id="by-source">(.*?)</table>', page.text, re.DOTALL)
    assert by_source and "accepted planted capture 5 0" in _text(by_source.group(1))
    assert "Tac" not in page.text and "tac" in page.text  # a new row shown as an example
    back = client.get("/ui/datasets/curated/diff", params={"a": 2, "b": 1})
    assert 'id="added">0<' in back.text and 'id="removed">5<' in back.text
    same = client.get("/ui/datasets/curated/diff", params={"a": 2, "b": 2})
    assert 'id="added">0<' in same.text and "hold the same rows" in same.text


def test_diff_of_the_loop_versions_matches_the_rows(console: Console) -> None:
    client, _ = console.sign_in("admin")
    for name in ("t-sft", "t-pairs"):
        old, new = (versions.resolve(console.project, f"{name}@{v}") for v in (1, 2))
        added, removed = _expected_diff(old, new)
        page = client.get(f"/ui/datasets/{name}/diff?a=1&b=2")
        assert f'id="added">{added}<' in page.text and f'id="removed">{removed}<' in page.text
        assert old.row_count - removed + added == new.row_count


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/ui/datasets/t-sft/diff", "a"),
        ("/ui/datasets/t-sft/diff?a=1", "b"),
        ("/ui/datasets/t-sft/diff?b=1", "a"),
        ("/ui/datasets/t-sft/diff?a=x&b=1", "a"),
        ("/ui/datasets/t-sft/diff?a=1&b=-2", "b"),
        ("/ui/datasets/t-sft/1?offset=abc", "offset"),
        ("/ui/datasets/t-sft/1?offset=10001", "offset"),
        ("/ui/datasets?cursor=%21%21", "cursor"),
    ],
)
def test_bad_parameters_are_a_400_page_naming_them(console: Console, url: str, field: str) -> None:
    client, _ = console.sign_in("viewer")
    page = client.get(url)
    assert page.status_code == 400, page.text
    assert f"<p>{field}: " in page.text


@pytest.mark.parametrize(
    "url",
    [
        "/ui/datasets/nope",
        "/ui/datasets/nope/1",
        "/ui/datasets/nope/diff?a=1&b=2",
        "/ui/datasets/nope/diff",
        "/ui/datasets/t-sft/99",
        "/ui/datasets/t-sft/abc",
        "/ui/datasets/t-sft/0",
        "/ui/datasets/t-sft/diff?a=1&b=99",
        "/ui/datasets/..%2e/1",
    ],
)
def test_unknown_names_and_versions_are_a_404_page(console: Console, url: str) -> None:
    client, _ = console.sign_in("admin")
    page = client.get(url)
    assert page.status_code == 404, page.text
    assert "Not found" in page.text


@pytest.mark.parametrize("role", ["annotator", "ingest"])
def test_roles_without_console_read_are_refused(console: Console, role: str) -> None:
    client, _ = console.sign_in(role)
    for url in ("/ui/datasets", "/ui/datasets/t-sft", "/ui/datasets/t-sft/1", "/ui/datasets/t-sft/diff?a=1&b=2"):
        assert client.get(url).status_code == 403, url


def test_signed_out_is_sent_to_sign_in(console: Console) -> None:
    reply = console.new_client().get("/ui/datasets/t-sft")
    assert reply.status_code == 303 and reply.headers["location"].startswith("/ui/login")
