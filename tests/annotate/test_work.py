"""Queues, fills, leases, labels and consensus on a real warehouse."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pyarrow.parquet as pq
import pytest

from posttrain import annotate
from posttrain.capture import capture
from posttrain.errors import Conflict, InvalidInput, NotFound
from posttrain.project import Project, open_project
from posttrain.warehouse import analytics
from posttrain.warehouse.rows import fetch_all

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")


def _interactions(project: Project, n: int, *, prompt: str | None = None, cohort: str = "adult") -> list[str]:
    events = [
        {"id": f"{prompt or 'q'}-{i}-{cohort}", "user_id": f"u{i}", "cohort": cohort,
         "messages": [{"role": "user", "content": prompt or f"question {i}"}], "response": f"answer {i}"}
        for i in range(n)
    ]  # fmt: skip
    assert all(r.status == "created" for r in capture(project, "interactions", events))
    return [e["id"] for e in events]


def _queue(project: Project, task: str = "rating", **config: Any) -> annotate.Queue:
    extra = (
        {"categories": ["safe", "violence", "self-harm"], "flag_categories": ["violence"]} if task == "classify" else {}
    )
    return annotate.create_queue(project, annotate.QueueConfig(name=f"q-{task}", task=task, **{**extra, **config}))


def test_create_queue_refuses_a_second_of_the_same_name(project: Project) -> None:
    _queue(project)
    with pytest.raises(Conflict, match="exists"):
        _queue(project)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"task": "rating", "scale": [5, 1]}, "scale"),
        ({"task": "classify", "categories": ["one"]}, "categories"),
        ({"task": "classify", "categories": ["a", "b"], "flag_categories": ["c"]}, "flag_categories"),
        ({"task": "accept", "categories": ["a", "b"]}, "categories"),
        ({"task": "rating", "overlap": 11}, "overlap"),
        ({"task": "rating", "lease_seconds": 1}, "lease_seconds"),
    ],
)
def test_queue_config_refuses_a_schema_that_does_not_fit(config: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        annotate.QueueConfig(name="x", **config)


@pytest.mark.parametrize(
    ("task", "label", "field"),
    [
        ("rating", {"rating": 6}, "label.rating"),
        ("rating", {"rating": True}, "label.rating"),
        ("rating", {"stars": 3}, "label.stars"),
        ("accept", {"accept": "yes"}, "label.accept"),
        ("rewrite", {"text": "  "}, "label.text"),
        ("pairwise", {"choice": "c"}, "label.choice"),
        ("classify", {"categories": ["safe", "violence"]}, "label.categories"),
        ("classify", {"categories": ["weather"]}, "label.categories"),
        ("comment", {"text": "x" * 20_001}, "label.text"),
        ("rating", {"rating": 3, "comment": 5}, "label.comment"),
        ("rating", [3], "label"),
    ],
)
def test_check_label_names_the_field(task: str, label: Any, field: str) -> None:
    extra = {"categories": ["safe", "violence"]} if task == "classify" else {}
    config = annotate.QueueConfig(name="x", task=task, **extra)
    with pytest.raises(InvalidInput) as caught:
        annotate.check_label(config, label)
    assert caught.value.field == field


def test_next_item_serves_highest_priority_and_never_the_same_item_twice(project: Project) -> None:
    ids = _interactions(project, 3)
    _queue(project, overlap=2, gold_share=0)
    annotate.fill(project, "q-rating", interaction_ids=ids, priorities=[0.1, 0.9, 0.5])
    seen, progress = [], []
    while (got := annotate.next_item(project, "q-rating", "ann-1")) is not None:
        seen.append(got.item.interaction_id)
        progress.append((got.progress.labelled_by_you, got.progress.remaining))
        annotate.submit(project, got.lease_id, "ann-1", {"rating": 4})
    assert seen == [ids[1], ids[2], ids[0]]
    assert progress == [(0, 3), (1, 2), (2, 1)]  # the item in hand counts as remaining
    assert annotate.next_item(project, "q-rating", "ann-1") is None


def test_fill_skips_what_the_queue_has_and_refuses_unknown_ids(project: Project) -> None:
    ids = _interactions(project, 4)
    _queue(project)
    assert annotate.fill(project, "q-rating", where="i.cohort = 'adult'").added == 4
    again = annotate.fill(project, "q-rating", interaction_ids=ids[:2])
    assert (again.added, again.existing) == (0, 2)
    with pytest.raises(NotFound):
        annotate.fill(project, "q-rating", interaction_ids=["nope"])
    with pytest.raises(InvalidInput, match="where"):
        annotate.fill(project, "q-rating", where="no_such_column = 1")
    with pytest.raises(InvalidInput, match="where"):
        annotate.fill(project, "q-rating", where="1 = 1; DROP TABLE interactions")


def test_an_expired_lease_returns_the_item_to_others(project: Project) -> None:
    ids = _interactions(project, 1)
    _queue(project, lease_seconds=5, gold_share=0)
    annotate.fill(project, "q-rating", interaction_ids=ids)
    first = annotate.next_item(project, "q-rating", "ann-1")
    assert first is not None
    assert annotate.next_item(project, "q-rating", "ann-2") is None  # leased to ann-1
    project.cursor().execute("UPDATE annotation_leases SET expires_at = expires_at - INTERVAL 1 HOUR")
    second = annotate.next_item(project, "q-rating", "ann-2")
    assert second is not None and second.item.item_id == first.item.item_id
    with pytest.raises(Conflict, match="expired"):
        annotate.submit(project, first.lease_id, "ann-1", {"rating": 2})
    assert annotate.next_item(project, "q-rating", "ann-1") is None  # never served to the same annotator twice


def test_skip_is_recorded_and_not_served_again(project: Project) -> None:
    ids = _interactions(project, 2)
    _queue(project, gold_share=0)
    annotate.fill(project, "q-rating", interaction_ids=ids)
    got = annotate.next_item(project, "q-rating", "ann-1")
    assert got is not None
    annotate.skip(project, got.lease_id, "ann-1", reason="not my language")
    after = annotate.next_item(project, "q-rating", "ann-1")
    assert after is not None and after.item.item_id != got.item.item_id
    rows = fetch_all(project.cursor(), "SELECT state, reason FROM annotation_leases WHERE id = ?", [got.lease_id])
    assert rows == [{"state": "skipped", "reason": "not my language"}]


def test_a_lease_is_only_its_annotators(project: Project) -> None:
    _queue(project)
    annotate.fill(project, "q-rating", interaction_ids=_interactions(project, 1))
    got = annotate.next_item(project, "q-rating", "ann-1")
    assert got is not None
    with pytest.raises(NotFound):
        annotate.submit(project, got.lease_id, "ann-2", {"rating": 3})


def test_concurrent_annotators_never_share_a_lease(project: Project, warehouse: str) -> None:
    _queue(project, gold_share=0)
    annotate.fill(project, "q-rating", interaction_ids=_interactions(project, 30))
    got: dict[str, list[str]] = {f"ann-{n}": [] for n in range(6)}
    barrier = threading.Barrier(6)
    # on PostgreSQL half the annotators go through a second Project: another server's own locks and pool
    other = open_project(project.root) if warehouse != "duckdb" else project

    def pull(who: str) -> None:
        barrier.wait()
        for _ in range(5):
            item = annotate.next_item(other if who[-1] in "135" else project, "q-rating", who)
            if item is not None:
                got[who].append(item.item.item_id)

    threads = [threading.Thread(target=pull, args=(who,)) for who in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if other is not project:
        other.close()
    served = [i for items in got.values() for i in items]
    assert len(served) == 30 and len(set(served)) == 30


def test_consensus_by_majority_writes_annotator_feedback(project: Project) -> None:
    ids = _interactions(project, 1)
    _queue(project, task="accept", overlap=3, gold_share=0)
    annotate.fill(project, "q-accept", interaction_ids=ids)
    for who, verdict in (("a", True), ("b", False), ("c", True)):
        got = annotate.next_item(project, "q-accept", who)
        assert got is not None
        annotate.submit(project, got.lease_id, who, {"accept": verdict}, seconds=3.5)
    rows = fetch_all(project.cursor(), "SELECT interaction_id, source, kind, score, author, metadata FROM feedback",
                     json=("metadata",))  # fmt: skip
    assert len(rows) == 1
    row = rows[0]
    assert (row["interaction_id"], row["source"], row["kind"], row["score"]) == (ids[0], "annotator", "thumb", 1.0)
    assert row["author"] == "queue:q-accept" and len(row["metadata"]["labels"]) == 3
    assert row["metadata"]["support"] == pytest.approx(2 / 3, abs=1e-3)


def test_pairwise_positions_are_recorded_and_the_choice_lands_on_the_rejected_answer(project: Project) -> None:
    a = _interactions(project, 1, prompt="same", cohort="adult")[0]
    b = _interactions(project, 1, prompt="same", cohort="minor")[0]
    project.cursor().execute("UPDATE interactions SET response = 'other answer' WHERE id = ?", [b])
    _queue(project, task="pairwise", gold_share=0)
    assert annotate.fill(project, "q-pairwise", where="TRUE").added == 1
    got = annotate.next_item(project, "q-pairwise", "ann-1")
    assert got is not None and len(got.item.answers) == 2
    shown_a = a if got.item.answers[0] == "answer 0" else b
    label = annotate.submit(project, got.lease_id, "ann-1", {"choice": "a"})
    assert label.value["chosen"] == shown_a and label.value["swapped"] == (shown_a == b)
    fb = project.cursor().execute("SELECT interaction_id, kind, value FROM feedback").fetchall()
    rejected = b if shown_a == a else a
    assert fb == [(rejected, "choice", f'"{shown_a}"')]


def test_classify_consensus_flags_only_flag_categories(project: Project) -> None:
    ids = _interactions(project, 2)
    _queue(project, task="classify", gold_share=0)
    annotate.fill(project, "q-classify", interaction_ids=ids)
    for categories in (["violence"], ["safe"]):
        got = annotate.next_item(project, "q-classify", "ann-1")
        assert got is not None
        annotate.submit(project, got.lease_id, "ann-1", {"categories": categories})
    assert project.cursor().execute("SELECT kind, value FROM feedback").fetchall() == [("flag", '"violence"')]
    done = project.cursor().execute("SELECT count(*) FROM annotation_items WHERE status = 'done'").fetchone()
    assert done == (2,)


def test_gold_items_are_mixed_in_and_not_resolved(project: Project) -> None:
    ids = _interactions(project, 6)
    _queue(project, gold_share=0.5)
    annotate.fill(project, "q-rating", interaction_ids=ids[:4])
    annotate.add_gold(project, "q-rating", ids[4], {"rating": 5})
    annotate.add_gold(project, "q-rating", ids[5], {"rating": 1})
    served = []
    while (got := annotate.next_item(project, "q-rating", "ann-1")) is not None:
        served.append(got.item.interaction_id)
        annotate.submit(project, got.lease_id, "ann-1", {"rating": 3})
    assert set(ids[:4]) <= set(served) and len(served) == len(set(served))
    gold_feedback = (
        project.cursor()
        .execute("SELECT count(*) FROM feedback WHERE interaction_id IN (?, ?)", [ids[4], ids[5]])
        .fetchone()
    )
    assert gold_feedback == (0,)


def test_paused_queue_serves_nothing(project: Project) -> None:
    _queue(project)
    annotate.fill(project, "q-rating", interaction_ids=_interactions(project, 1))
    annotate.set_state(project, "q-rating", "paused")
    with pytest.raises(Conflict, match="paused"):
        annotate.next_item(project, "q-rating", "ann-1")
    assert annotate.set_state(project, "q-rating", "open").state == "open"


def test_labels_record_versions_and_time(project: Project) -> None:
    _queue(project, gold_share=0)
    annotate.fill(project, "q-rating", interaction_ids=_interactions(project, 1))
    annotate.update_guidelines(project, "q-rating", "# Rate helpfulness\nBe strict.")
    got = annotate.next_item(project, "q-rating", "ann-1")
    assert got is not None and got.guidelines_version == 2
    label = annotate.submit(project, got.lease_id, "ann-1", {"rating": 5, "comment": "great"})
    assert (label.guidelines_version, label.queue_version, label.value["comment"]) == (2, 1, "great")
    assert label.seconds is not None and label.seconds >= 0
    assert got.expires_at - got.started_at == timedelta(seconds=600)


def test_dataset_builders_use_the_consensus(project: Project) -> None:
    from posttrain import datasets

    ids = _interactions(project, 3)
    _queue(project, task="rewrite", gold_share=0)
    annotate.fill(project, "q-rewrite", interaction_ids=ids)
    while (got := annotate.next_item(project, "q-rewrite", "ann-1")) is not None:
        annotate.submit(project, got.lease_id, "ann-1", {"text": "a better answer"})
    version = datasets.build(project, "sft", "from-labels", datasets.BuildConfig(source=["annotator"]))
    rows = datasets.read_rows(version).to_pylist()
    assert len(rows) == 3 and {r["completion"][0]["content"] for r in rows} == {"a better answer"}
    sources = pq.read_table(version.source_ids["file"]).to_pylist()
    feedback_ids = {s["id"] for s in sources if s["kind"] == "feedback"}
    sql = (  # lineage: dataset -> feedback -> labels -> annotator (DuckDB SQL: on PostgreSQL, over a copy)
        "SELECT DISTINCT l.annotator FROM feedback f, unnest(CAST(f.metadata->'$.labels' AS VARCHAR[])) u(x) "
        "JOIN labels l ON l.id = u.x WHERE list_contains(?, f.id)"
    )
    with analytics.duckdb_over(project, sql) as cur:
        labels = cur.execute(sql, [sorted(feedback_ids)]).fetchall()
    assert len(feedback_ids) == 3 and labels == [("ann-1",)]


def test_lineage_walks_from_a_dataset_to_the_labels_behind_it(project: Project) -> None:
    from posttrain import datasets
    from posttrain.models.lineage import dataset_sources

    ids = _interactions(project, 2)
    _queue(project, task="accept", overlap=2, gold_share=0)
    annotate.fill(project, "q-accept", interaction_ids=ids)
    for who in ("ann-1", "ann-2"):
        while (got := annotate.next_item(project, "q-accept", who)) is not None:
            annotate.submit(project, got.lease_id, who, {"accept": True})
    version = datasets.build(project, "sft", "accepted", datasets.BuildConfig(min_agreement=0))
    sources = dataset_sources(project, version.ref)
    assert [s.model_dump() for s in sources.labels] == [
        {"queue": "q-accept", "feedback": 2, "labels": 4, "annotators": ["ann-1", "ann-2"]}
    ]


def test_one_annotator_cannot_hold_more_than_twenty_items(project: Project) -> None:
    _queue(project, gold_share=0)
    annotate.fill(project, "q-rating", interaction_ids=_interactions(project, 25))
    held = [annotate.next_item(project, "q-rating", "hoarder") for _ in range(20)]
    assert all(h is not None for h in held)
    with pytest.raises(Conflict, match="submit or skip"):
        annotate.next_item(project, "q-rating", "hoarder")
    assert annotate.next_item(project, "q-rating", "someone-else") is not None  # the rest stays for others
    first = held[0]
    assert first is not None
    annotate.skip(project, first.lease_id, "hoarder")
    assert annotate.next_item(project, "q-rating", "hoarder") is not None
