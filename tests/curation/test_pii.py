"""The PII stage: the regex kinds, the NER pass (names, addresses), the planted set's recall, a real build."""

from __future__ import annotations

import pyarrow as pa
import pytest

from posttrain import curate, datasets
from posttrain.curation import pii
from posttrain.curation.config import PIIStage
from posttrain.curation.planted import KINDS, planted_set, score
from posttrain.project import Project

from .helpers import build_sft, store_accepted

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

REGEX_KINDS = [k for k in KINDS if k not in ("person", "address")]


def test_planted_set_is_deterministic_and_spans_are_exact() -> None:
    planted, clean = planted_set(3, per_kind=25, clean=200)
    again, clean_again = planted_set(3, per_kind=25, clean=200)
    assert [p.text for p in planted] == [p.text for p in again] and clean == clean_again
    assert {p.kind for p in planted} == set(KINDS) and len(planted) == 25 * len(KINDS) and len(clean) == 200
    assert all(p.text[p.start : p.end] == p.value for p in planted)


def test_regex_kinds_recall_and_no_false_positives_on_clean_numbers() -> None:
    planted, clean = planted_set(0)
    table, counts = curate.scrub_table(pa.table({"text": [p.text for p in planted] + clean}))
    out = table.column("text").to_pylist()
    scores = score(planted, clean, out[: len(planted)], out[len(planted) :])
    assert {k: scores.recall(k) for k in REGEX_KINDS} == dict.fromkeys(REGEX_KINDS, 1.0), scores.missed
    assert scores.clean_hits == {} and out[len(planted) :] == clean  # 1,000 number-heavy sentences untouched
    assert counts == {k: 30 for k in REGEX_KINDS}


@pytest.mark.slow  # loads Presidio and spaCy (~10-15 s)
def test_scrub_table_replaces_names_and_addresses_in_messages() -> None:
    table = pa.table({
        "prompt": [
            [{"role": "system", "content": "be brief"},
             {"role": "user", "content": "Please forward this to Maria Lopez before noon."}],
            [{"role": "user", "content": "ship it to 1600 Pennsylvania Ave NW, Apt 4, Washington, DC 20500 today"}],
            [{"role": "user", "content": "What is 12 * 34? Python 3.11.4 says 408."}],
            None,
        ],
        "completion": ["Done, Dr. Anna Smith confirmed.", None, "408", "ok"],
        "interaction_id": ["Maria Lopez", "b", "c", "d"],
    })  # fmt: skip
    scrubbed, counts = pii.scrub_table(table, PIIStage())
    rows = scrubbed.to_pylist()
    assert counts == {"person": 2, "address": 1}
    assert rows[0]["prompt"][0] == {"role": "system", "content": "be brief"}
    assert rows[0]["prompt"][1] == {"role": "user", "content": "Please forward this to <PERSON> before noon."}
    assert rows[1]["prompt"][0]["content"] == "ship it to <ADDRESS> today"
    assert rows[2]["prompt"][0]["content"] == "What is 12 * 34? Python 3.11.4 says 408."
    assert rows[0]["completion"] == "Done, Dr. <PERSON> confirmed."
    assert rows[3]["prompt"] is None and rows[1]["completion"] is None
    assert scrubbed.column("interaction_id").to_pylist() == ["Maria Lopez", "b", "c", "d"]
    assert scrubbed.schema == table.schema
    only_addresses, counts = pii.scrub_table(table, PIIStage(kinds=["address"]))
    assert counts == {"address": 1} and "Maria Lopez" in only_addresses.to_pylist()[0]["prompt"][1]["content"]


@pytest.mark.slow  # loads Presidio and spaCy (~10-15 s)
def test_ner_recall_targets_on_a_planted_slice() -> None:
    planted, clean = planted_set(1, per_kind=12, clean=150)
    texts = [p.text for p in planted] + clean
    table, _ = curate.scrub_table(pa.table({"text": texts}))
    table, _ = pii.scrub_table(table, PIIStage())
    out = table.column("text").to_pylist()
    scores = score(planted, clean, out[: len(planted)], out[len(planted) :])
    assert scores.recall("person") >= 0.8 and scores.recall("address") >= 0.8, scores.missed
    assert all(scores.recall(k) >= 0.95 for k in REGEX_KINDS), scores.missed
    assert scores.clean_touched == 0, scores.clean_hits


@pytest.mark.slow  # loads Presidio and spaCy (~10-15 s)
def test_build_with_the_pii_stage_stores_no_planted_name_or_address(project: Project) -> None:
    store_accepted(project, [
        ("Please forward the invoice to Maria Lopez before noon.", "Sure, I sent it to her."),
        ("I live at 221 Baker Street, Springfield, IL 62704, what is my tax zone?", "Zone B."),
        ("What is 12 * 34?", "12 * 34 = 408"),
        ("Call me on (555) 201-1234", "Noted, Mr. David Kowalski."),
    ])  # fmt: skip
    version = build_sft(project, "pii-ner", curate={"pii": {}})
    text = str(datasets.read_rows(version).to_pylist())
    assert version.stats["pii_scrubbed"]["person"] == 2 and version.stats["pii_scrubbed"]["address"] == 1
    assert version.stats["pii_scrubbed"]["phone"] == 1
    for value in ("Maria Lopez", "Baker Street", "David Kowalski", "201-1234"):
        assert value not in text
    assert "<PERSON>" in text and "<ADDRESS>" in text and "12 * 34 = 408" in text
