"""Queue statistics read from a real warehouse, labelled through the real core (next_item, submit, skip)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from posttrain import annotate
from posttrain.annotate import work
from posttrain.annotate.records import Assignment, Label
from posttrain.annotate.stats import FREE_TEXT, label_fields, queue_stats
from posttrain.capture import capture
from posttrain.clock import utc_now
from posttrain.errors import InvalidInput, NotFound
from posttrain.ids import new_id
from posttrain.project import Project

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

Answer = Callable[[Assignment], dict[str, Any] | None]


def _interactions(project: Project, responses: list[str], prompt: str | None = None) -> list[str]:
    events = [
        {"id": f"s-{i}-{abs(hash(prompt)) % 1000}", "user_id": f"u{i}",
         "messages": [{"role": "user", "content": prompt or f"question {i}"}], "response": response}
        for i, response in enumerate(responses)
    ]  # fmt: skip
    assert all(r.status == "created" for r in capture(project, "interactions", events))
    return [e["id"] for e in events]


def _work(project: Project, queue: str, annotator: str, answer: Answer, seconds: float = 10.0) -> None:
    """Label (or skip, when ``answer`` gives None) every item the queue serves this annotator."""
    for _ in range(100):
        assignment = annotate.next_item(project, queue, annotator)
        if assignment is None:
            return
        label = answer(assignment)
        if label is None:
            annotate.skip(project, assignment.lease_id, annotator, reason="unsure")
        else:
            annotate.submit(project, assignment.lease_id, annotator, label, seconds=seconds)
    raise AssertionError("the queue never ran out")


def _rating_of(assignment: Assignment) -> int:
    return int((assignment.item.response or "r1").removeprefix("r"))


@pytest.fixture
def rated(project: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    """A rating queue of 6 items + 1 gold, overlap 3: alice and bob rate right, carol always says 3."""
    monkeypatch.setattr(work.random, "random", lambda: 0.0)  # serve the gold item first, deterministically
    ids = _interactions(project, [f"r{1 + i % 5}" for i in range(7)])
    config = annotate.QueueConfig(name="rate", task="rating", overlap=3, gold_share=0.5)
    annotate.create_queue(project, config)
    annotate.fill(project, "rate", interaction_ids=ids[:6])
    annotate.add_gold(project, "rate", ids[6], {"rating": 2})
    _work(project, "rate", "alice", lambda a: {"rating": _rating_of(a)})
    skipped: list[str] = []

    def bob(a: Assignment) -> dict[str, Any] | None:
        if not skipped and _rating_of(a) == 4:  # the gold item is rated 2
            skipped.append(a.item.item_id)
            return None
        return {"rating": _rating_of(a)}

    _work(project, "rate", "bob", bob)
    _work(project, "rate", "carol", lambda a: {"rating": 3}, seconds=30.0)
    return project


def test_label_fields_compares_pairwise_on_the_chosen_interaction() -> None:
    shown_first = {"choice": "a", "chosen": "x1", "swapped": False}
    shown_second = {"choice": "b", "chosen": "x1", "swapped": True}
    assert label_fields("pairwise", shown_first, {}) == label_fields("pairwise", shown_second, {}) == {"chosen": "x1"}
    assert label_fields("pairwise", {"choice": "tie", "chosen": None}, {}) == {"chosen": "tie"}


def test_label_fields_of_each_task() -> None:
    assert label_fields("rating", {"rating": 4, "comment": "ok"}, {"scale": [1, 5]}) == {"rating": 4}
    assert label_fields("accept", {"accept": False}, {}) == {"accept": False}
    assert label_fields("classify", {"categories": ["safe"]}, {"categories": ["safe", "bad"]}) == {"category": "safe"}
    multi = {"categories": ["safe", "bad", "odd"], "multi": True}
    assert label_fields("classify", {"categories": ["bad"]}, multi) == {
        "category:safe": False,
        "category:bad": True,
        "category:odd": False,
    }
    assert label_fields("rewrite", {"text": "better"}, {}) == {}
    assert label_fields("comment", {"text": "note"}, {}) == {}


def test_queue_stats_counts_work(rated: Project) -> None:
    stats = queue_stats(rated, "rate", bootstrap=100)
    counts = stats.counts
    assert (counts.items, counts.gold, counts.skips, counts.expired_leases) == (7, 1, 1, 0)
    assert counts.labels == 3 * 7 - 1
    assert counts.done == 5  # the item bob skipped has two labels of three
    assert counts.judge_labels == 0


def test_queue_stats_rating_agreement_per_level(rated: Project) -> None:
    stats = queue_stats(rated, "rate", bootstrap=100)
    assert stats.agreement_note is None
    [field] = stats.agreement
    assert field.field == "rating"
    assert set(field.alpha) == {"interval", "ordinal"}
    for estimate in field.alpha.values():
        assert estimate.value is not None and 0 < estimate.value < 1  # carol disagrees
        assert estimate.n_items == 6  # gold items do not count towards agreement
    assert field.fleiss.value is not None
    assert field.fleiss.method == "fleiss-kappa-3-raters"


def test_queue_stats_annotators(rated: Project) -> None:
    stats = queue_stats(rated, "rate", bootstrap=100)
    by_name = {a.annotator: a for a in stats.annotators}
    assert set(by_name) == {"alice", "bob", "carol"}
    alice, bob, carol = by_name["alice"], by_name["bob"], by_name["carol"]
    assert (alice.labels, alice.skips, bob.labels, bob.skips, carol.labels) == (7, 0, 6, 1, 7)
    assert alice.median_seconds == 10.0
    assert alice.throughput_per_hour == pytest.approx(360.0)
    assert carol.throughput_per_hour == pytest.approx(120.0)
    assert bob.throughput_per_hour is not None and bob.throughput_per_hour <= 360.0
    alice_kappa, carol_kappa = alice.agreement["rating"].value, carol.agreement["rating"].value
    assert alice_kappa is not None and carol_kappa is not None
    assert carol_kappa < alice_kappa
    assert alice.gold_accuracy is not None and alice.gold_accuracy.value == 1.0
    assert carol.gold_accuracy is not None and carol.gold_accuracy.value == 0.0
    assert carol.gold_accuracy.high is not None and carol.gold_accuracy.high < 1


def _judge(project: Project, queue: str, value: Callable[[Any], dict[str, Any]], confidence: float) -> int:
    """Store a judge label on every resolved item of a queue, from its consensus; return how many."""
    q = annotate.get_queue(project, queue)
    rows = (
        project.cursor()
        .execute(
            "SELECT id, interaction_id, consensus FROM annotation_items WHERE queue_id = ? AND status = 'done'", [q.id]
        )
        .fetchall()
    )
    cur = project.cursor()
    for item_id, interaction_id, stored in rows:
        label = Label(id=new_id(), queue_id=q.id, item_id=item_id, interaction_id=interaction_id,
                      annotator="judge:small", source="judge", value=value(orjson.loads(stored)["value"]),
                      confidence=confidence, queue_version=q.version, guidelines_version=q.guidelines_version,
                      created_at=utc_now())  # fmt: skip
        work.insert_label(cur, label)
    return len(rows)


def test_queue_stats_judge_calibration_and_trust(rated: Project) -> None:
    n = _judge(rated, "rate", lambda consensus: {"rating": consensus}, confidence=0.9)
    assert n == 5
    stats = queue_stats(rated, "rate", bootstrap=0)
    [judge] = stats.judges
    assert judge.judge == "judge:small"
    assert judge.labels == 5
    assert judge.calibration.agreement.value == 1.0
    assert judge.calibration.n == 5
    assert judge.calibration.ece == pytest.approx(0.1)
    assert not judge.trusted  # five items: Wilson's lower bound is about 0.57
    assert queue_stats(rated, "rate", bootstrap=0, trust_threshold=0.5).judges[0].trusted
    assert stats.counts.judge_labels == 5
    assert {a.annotator for a in stats.annotators} == {"alice", "bob", "carol"}


def test_queue_stats_pairwise_agrees_on_the_chosen_answer(project: Project) -> None:
    pairs = []
    for p in range(4):
        good, bad = _interactions(project, [f"good {p}", f"bad {p}"], prompt=f"prompt {p}")
        pairs.append((good, bad) if p % 2 else (bad, good))
    annotate.create_queue(project, annotate.QueueConfig(name="pick", task="pairwise", overlap=2, gold_share=0))
    annotate.fill(project, "pick", pairs=pairs)

    def pick_good(a: Assignment) -> dict[str, Any]:
        return {"choice": "a" if (a.item.answers[0] or "").startswith("good") else "b"}

    _work(project, "pick", "alice", pick_good)
    _work(project, "pick", "bob", pick_good)
    stats = queue_stats(project, "pick", bootstrap=50)
    [field] = stats.agreement
    assert field.field == "chosen"
    assert set(field.alpha) == {"nominal"}
    assert field.alpha["nominal"].value == pytest.approx(1.0)
    assert stats.counts.done == 4


def test_queue_stats_free_text_has_no_agreement(project: Project) -> None:
    ids = _interactions(project, ["one", "two"])
    annotate.create_queue(project, annotate.QueueConfig(name="notes", task="comment", gold_share=0))
    annotate.fill(project, "notes", interaction_ids=ids)
    _work(project, "notes", "alice", lambda a: {"text": "fine"})
    stats = queue_stats(project, "notes")
    assert stats.agreement == []
    assert stats.agreement_note == FREE_TEXT
    assert stats.annotators[0].labels == 2
    assert stats.annotators[0].agreement == {}


def test_queue_stats_multi_classify_has_a_field_per_category(project: Project) -> None:
    ids = _interactions(project, ["a", "b", "c"])
    config = annotate.QueueConfig(name="cls", task="classify", categories=["safe", "rude"], multi=True, overlap=2,
                                  gold_share=0)  # fmt: skip
    annotate.create_queue(project, config)
    annotate.fill(project, "cls", interaction_ids=ids)
    _work(project, "cls", "alice", lambda a: {"categories": ["rude"] if a.item.response == "b" else ["safe"]})
    _work(project, "cls", "bob", lambda a: {"categories": ["safe", "rude"] if a.item.response == "b" else ["safe"]})
    stats = queue_stats(project, "cls", bootstrap=50)
    fields = {f.field: f for f in stats.agreement}
    assert set(fields) == {"category:safe", "category:rude"}
    assert fields["category:rude"].alpha["nominal"].value == pytest.approx(1.0)
    safe = fields["category:safe"].alpha["nominal"].value
    assert safe is not None and safe < 0.5  # they disagree on "safe" for the item alice found only rude


def test_queue_stats_refuses_bad_parameters(project: Project) -> None:
    with pytest.raises(NotFound):
        queue_stats(project, "missing")
    annotate.create_queue(project, annotate.QueueConfig(name="q", task="accept"))
    with pytest.raises(InvalidInput) as error:
        queue_stats(project, "q", trust_threshold=2)
    assert error.value.field == "trust_threshold"
    empty = queue_stats(project, "q")
    assert empty.counts.items == 0
    assert empty.agreement == []
    assert empty.annotators == [] and empty.judges == []
