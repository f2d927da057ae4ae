"""Active selection on a real warehouse: what is worth a label, cohorts, judges alone, the random baseline."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from posttrain import annotate
from posttrain.annotate import active, judges
from posttrain.capture import capture
from posttrain.clock import utc_now
from posttrain.errors import InvalidInput
from posttrain.project import Project, open_project
from posttrain.warehouse.rows import fetch_all

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

JUDGES = {
    "good": {"kind": "verifier", "verifier": "exact_match"},
    "noisy": {"kind": "verifier", "verifier": "contains"},
}


def add(project: Project, rows: list[tuple[str, str, str | None]], *, cohort: str | None = "adult") -> list[str]:
    """Capture (id, response, metadata answer) rows, each its own prompt."""
    events = [
        {"id": i, "cohort": cohort, "messages": [{"role": "user", "content": f"what is {i}?"}], "response": response,
         "metadata": {} if answer is None else {"answer": answer}}
        for i, response, answer in rows
    ]  # fmt: skip
    assert all(r.status == "created" for r in capture(project, "interactions", events))
    return [e["id"] for e in events]


@pytest.fixture
def judged(project: Project) -> Iterator[Project]:
    """A project whose accept queue 'acc' has two judges: exact_match (good) and contains (noisy)."""
    root = project.root
    project.close()
    proj = open_project(root, **{"annotate.judges": JUDGES})
    annotate.create_queue(proj, annotate.QueueConfig(name="acc", task="accept", judges=["good", "noisy"],
                                                     gold_share=0, priority="active"))  # fmt: skip
    yield proj
    proj.close()


def queued(project: Project, queue: str = "acc") -> list[dict[str, object]]:
    return fetch_all(project.cursor(), "SELECT i.interaction_id, i.reason, i.status, i.resolved_by, i.priority "
                     "FROM annotation_items i JOIN annotation_queues q ON q.id = i.queue_id WHERE q.name = ? "
                     "ORDER BY i.priority DESC, i.interaction_id", [queue])  # fmt: skip


def test_select_picks_conflicted_and_uncertain_items_over_sure_ones(judged: Project) -> None:
    add(judged, [(f"sure{i}", str(i), str(i)) for i in range(10)])  # both judges accept, sure
    add(judged, [("split1", "1 and 2", "1"), ("split2", "3 or 4", "3")])  # exact_match rejects, contains accepts
    capture(judged, "feedback", [{"interaction_id": "sure0", "kind": "thumb", "value": 1},
                                 {"interaction_id": "sure0", "kind": "thumb", "value": -1}])  # fmt: skip
    result = active.select(judged, "acc", 3)
    assert (result.added, result.judge_resolved, result.candidates) == (3, 0, 12)
    assert result.reasons == {"judges-disagree": 2, "feedback-conflict": 1}
    rows = queued(judged)
    assert [r["interaction_id"] for r in rows] == ["split1", "split2", "sure0"]
    assert rows[0]["priority"] == pytest.approx(0.35 / 0.8) and rows[2]["priority"] == pytest.approx(0.2 / 0.8)
    labels = fetch_all(judged.cursor(), "SELECT annotator FROM labels WHERE source = 'judge'")
    assert len(labels) == 6  # the judges' verdicts on what was added are kept, for calibration later
    assert active.select(judged, "acc", 3).reasons == {"none": 3}  # the chosen ones are not chosen twice


def test_select_leaves_to_a_trusted_judge_what_it_is_sure_of(judged: Project) -> None:
    add(judged, [(f"r{i}", str(i), str(i)) for i in range(15)] + [(f"w{i}", f"{i}x", str(i)) for i in range(15)])
    annotate.fill(judged, "acc", where="true")
    judges.prelabel(judged, "acc")
    while (assignment := annotate.next_item(judged, "acc", "human")) is not None:
        annotate.submit(judged, assignment.lease_id, "human", {"accept": assignment.item.interaction_id[0] == "r"})
    assert judges.calibrate(judged, "acc")["good"].trusted
    add(judged, [("n1", "5", "5"), ("n2", "6", "7"), ("open1", "no answer to check", None)])
    result = active.select(judged, "acc", 5)
    assert (result.added, result.judge_resolved) == (1, 2)
    rows = {r["interaction_id"]: r for r in queued(judged) if r["interaction_id"] in ("n1", "n2", "open1")}
    assert rows["n1"]["resolved_by"] == "judge" and rows["n1"]["reason"] == "judge-sure"
    assert rows["open1"]["status"] == "open"
    feedback = fetch_all(judged.cursor(), "SELECT interaction_id, source, score FROM feedback WHERE source = 'judge' "
                         "ORDER BY interaction_id")  # fmt: skip
    assert [(f["interaction_id"], f["score"]) for f in feedback] == [("n1", 1.0), ("n2", -1.0)]
    served = annotate.next_item(judged, "acc", "another")
    assert served is not None and served.item.interaction_id == "open1"
    assert annotate.next_item(judged, "acc", "another") is None  # n1, n2 never reach people


def test_select_stratifies_the_budget_across_cohorts(project: Project) -> None:
    add(project, [(f"a{i}", "x", None) for i in range(30)], cohort="a")
    add(project, [(f"b{i}", "x", None) for i in range(10)], cohort="b")
    add(project, [("c0", "x", None)], cohort="c")
    add(project, [("n0", "x", None)], cohort=None)
    annotate.create_queue(project, annotate.QueueConfig(name="acc", task="accept"))
    result = active.select(project, "acc", 8)
    assert result.by_cohort == {"a": 5, "b": 1, "c": 1, "(none)": 1} and result.added == 8
    assert active._allocate({"a": 30, "b": 10, "c": 1}, 8) == {"a": 5, "b": 2, "c": 1}
    assert active._allocate({"a": 3, "b": 1}, 10) == {"a": 3, "b": 1}


def test_select_random_is_seeded(project: Project) -> None:
    add(project, [(f"i{i:02d}", "x", None) for i in range(40)])
    for name in ("one", "two", "three"):
        annotate.create_queue(project, annotate.QueueConfig(name=name, task="accept"))
    picks = {}
    for name, seed in (("one", 7), ("two", 7), ("three", 8)):
        result = active.select(project, name, 5, strategy="random", seed=seed)
        assert result.added == 5 and result.reasons == {"random": 5}
        picks[name] = {r["interaction_id"] for r in queued(project, name)}
    assert picks["one"] == picks["two"] and picks["one"] != picks["three"]


def test_select_with_where_and_since_only_takes_matching_answered_interactions(project: Project) -> None:
    add(project, [("old", "x", None), ("pro", "x", None)], cohort="pro")
    add(project, [("free", "x", None)], cohort="free")
    capture(project, "interactions", [{"id": "unanswered", "messages": [{"role": "user", "content": "?"}]}])
    annotate.create_queue(project, annotate.QueueConfig(name="acc", task="accept"))
    assert active.select(project, "acc", 10, since=utc_now() + timedelta(days=1)).candidates == 0
    result = active.select(project, "acc", 10, where="i.cohort = 'pro' OR i.id = 'unanswered'")
    assert result.candidates == 2 and result.by_cohort == {"pro": 2}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"budget": 0}, "budget"), ({"budget": 100_001}, "budget"), ({"where": "true; drop table x"}, "where"),
     ({"where": "no_such_column = 1"}, "where"), ({"samples": 3}, "model"), ({"samples": 99}, "samples")],
)  # fmt: skip
def test_select_refuses_bad_inputs_naming_the_field(project: Project, kwargs: dict[str, object], field: str) -> None:
    annotate.create_queue(project, annotate.QueueConfig(name="acc", task="accept"))
    with pytest.raises(InvalidInput) as caught:
        active.select(project, "acc", **{"budget": 5, **kwargs})  # type: ignore[arg-type]
    assert caught.value.field == field


def test_select_on_a_pairwise_queue_picks_pairs_users_could_not_order(project: Project) -> None:
    events, thumbs = [], []
    for p in range(6):  # six prompts, two different answers each
        for a in range(2):
            iid = f"p{p}-{a}"
            events.append({"id": iid, "cohort": "adult", "messages": [{"role": "user", "content": f"prompt {p}"}],
                           "response": f"answer {a} to {p}"})  # fmt: skip
            if p < 2:  # prompts 0 and 1: users liked both answers, so they cannot tell which is better
                thumbs.append({"interaction_id": iid, "kind": "thumb", "value": "up"})
            elif p < 4:  # prompts 2 and 3: one liked, one disliked: users ordered them already
                thumbs.append({"interaction_id": iid, "kind": "thumb", "value": "up" if a == 0 else "down"})
    capture(project, "interactions", events)
    capture(project, "feedback", thumbs)
    annotate.create_queue(project, annotate.QueueConfig(name="pw", task="pairwise", gold_share=0))
    result = active.select(project, "pw", 2)
    assert (result.candidates, result.added, result.reasons) == (6, 2, {"feedback-conflict": 2})
    items = (
        project.cursor()
        .execute("SELECT interaction_id, second_interaction_id FROM annotation_items ORDER BY interaction_id")
        .fetchall()
    )
    assert items == [("p0-0", "p0-1"), ("p1-0", "p1-1")]
    again = active.select(project, "pw", 10)  # what is queued is not offered again
    assert again.candidates == 4 and again.added == 4
    got = annotate.next_item(project, "pw", "ann-1")
    assert got is not None and len(got.item.answers) == 2


def test_select_self_consistency_samples_a_causal_lm(project: Project, tiny_model: Path) -> None:
    from posttrain.models.registry import register_model

    register_model(project, "tiny", tiny_model)
    add(project, [("s1", "x", None), ("s2", "y", None)])
    annotate.create_queue(project, annotate.QueueConfig(name="acc", task="accept"))
    result = active.select(project, "acc", 2, samples=3, model="tiny")
    assert result.added == 2 and result.reasons == {"self-inconsistent": 2}  # a random tiny model never agrees
    assert all(0 < float(r["priority"]) <= 1 for r in queued(project))  # type: ignore[arg-type]
