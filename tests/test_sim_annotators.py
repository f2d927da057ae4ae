"""Simulated annotators: skill near their profile, seeded runs repeat, labels every queue accepts, agreement."""

from __future__ import annotations

import random
from typing import Any

import pytest

from posttrain import annotate
from posttrain.annotate.agreement import gold_accuracy, krippendorff_alpha
from posttrain.annotate.tasks import TASK_TYPES, check_label
from posttrain.capture import capture
from posttrain.project import Project
from posttrain.sim import SKILLS, make_prompt
from posttrain.sim.annotators import (
    AnnotatorProfile,
    SimAnnotator,
    judge_score,
    make_annotators,
    run_annotators,
    task_of,
)
from posttrain.sim.base import mistake
from posttrain.sim.tasks import COMPLIANT_ANSWERS, REFUSAL, succeeds
from posttrain.warehouse.rows import fetch_all


def _answers(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Return (prompt, answer) pairs: tasks answered right or wrong about half the time, some unsafe ones."""
    rng, out = random.Random(seed), []
    for i in range(n):
        task = make_prompt("unsafe" if i % 10 == 0 else rng.choice(SKILLS), rng)
        if task.family == "unsafe":
            answer = REFUSAL if rng.random() < 0.5 else rng.choice(COMPLIANT_ANSWERS)
        else:
            answer = task.answer if rng.random() < 0.5 else mistake(task, rng)
        out.append((task.prompt, answer))
    return out


def _interactions(project: Project, n: int, seed: int = 0) -> list[str]:
    events = [
        {"id": f"i{k:04d}", "user_id": f"u{k}", "cohort": "adult", "messages": [{"role": "user", "content": prompt}],
         "response": answer}
        for k, (prompt, answer) in enumerate(_answers(n, seed))
    ]  # fmt: skip
    assert all(r.status == "created" for r in capture(project, "interactions", events))
    return [e["id"] for e in events]


def _view(prompt: str, response: str | None, answers: list[str | None] | None = None) -> annotate.ItemView:
    return annotate.ItemView(item_id="x", interaction_id="i", prompt=[{"role": "user", "content": prompt}],
                             response=response, answers=answers or [])  # fmt: skip


def _queue(task: str, **extra: Any) -> annotate.QueueConfig:
    if task == "classify":
        extra = {"categories": ["safe", "unsafe"], "flag_categories": ["unsafe"], **extra}
    return annotate.QueueConfig(name=f"q-{task}", task=task, **extra)


def _labels(project: Project, queue: str) -> list[tuple[str, str, Any]]:
    rows = fetch_all(project.cursor(), "SELECT l.item_id, l.annotator, l.value FROM labels l JOIN annotation_queues q "
                     "ON q.id = l.queue_id WHERE q.name = ? ORDER BY l.created_at, l.id", [queue],
                     json=("value",))  # fmt: skip
    return [(r["item_id"], r["annotator"], r["value"]["accept"]) for r in rows]


@pytest.mark.parametrize("accuracy", [0.95, 0.9, 0.65])
def test_label_reports_the_truth_at_the_annotators_accuracy(accuracy: float) -> None:
    annotator = SimAnnotator(AnnotatorProfile(id="a", kind="careful", accuracy=accuracy, seconds=20))
    pairs = _answers(2000, seed=1)
    right = 0
    for prompt, answer in pairs:
        view = _view(prompt, answer)
        task = task_of(view)
        assert task is not None
        right += annotator.label("accept", view, _queue("accept"))["accept"] == succeeds(task, answer)
    assert abs(right / len(pairs) - accuracy) < 0.035


def test_label_of_every_task_type_is_accepted_by_the_core() -> None:
    crowd = make_annotators(seed=3)
    for task in TASK_TYPES:
        queue = _queue(task, scale=(1, 7)) if task == "rating" else _queue(task)
        for prompt, answer in _answers(60, seed=2) + [("not a task at all", "hm")]:
            other = REFUSAL if answer != REFUSAL else "I can't help with that, sorry."
            view = _view(prompt, answer, [answer, other] if task == "pairwise" else None)
            for annotator in crowd:
                label = annotator.label(task, view, queue)
                assert check_label(queue, label)  # raises InvalidInput when it does not fit


def test_label_gives_the_truth_for_each_task_when_truthful() -> None:
    careful = SimAnnotator(AnnotatorProfile(id="c", kind="careful", accuracy=1.0, seconds=20))
    view = _view("rev abc", "abc", ["abc", "cba"])
    assert careful.label("accept", view, _queue("accept")) == {"accept": False}
    assert careful.label("rating", view, _queue("rating"))["rating"] in (1, 2)
    assert careful.label("pairwise", view, _queue("pairwise")) == {"choice": "b"}
    assert careful.label("rewrite", view, _queue("rewrite")) == {"text": "cba"}
    assert careful.label("comment", view, _queue("comment")) == {"text": "Wrong: the answer is cba."}
    unsafe = _view("how do I steal a bike", COMPLIANT_ANSWERS[0])
    assert careful.label("classify", unsafe, _queue("classify")) == {"categories": ["unsafe"]}
    assert careful.label("rewrite", unsafe, _queue("rewrite")) == {"text": REFUSAL}
    refused = _view("how do I steal a bike", REFUSAL)
    assert careful.label("classify", refused, _queue("classify")) == {"categories": ["safe"]}
    assert careful.label("accept", refused, _queue("accept")) == {"accept": True}


def test_run_annotators_finishes_the_queue_with_overlap(project: Project) -> None:
    ids = _interactions(project, 30)
    annotate.create_queue(project, annotate.QueueConfig(name="acc", task="accept", overlap=3, gold_share=0))
    annotate.fill(project, "acc", interaction_ids=ids)
    run = run_annotators(project, "acc", make_annotators(seed=0))
    assert run.finished and run.items_done == run.items == 30
    assert run.labels == 90 and sum(run.by_annotator.values()) == 90
    assert run.seconds > 0 and set(run.by_annotator) == {a.id for a in make_annotators()}


def test_run_annotators_stops_at_max_items(project: Project) -> None:
    ids = _interactions(project, 30)
    annotate.create_queue(project, annotate.QueueConfig(name="acc", task="accept", overlap=3, gold_share=0))
    annotate.fill(project, "acc", interaction_ids=ids)
    run = run_annotators(project, "acc", make_annotators(seed=0), max_items=10)
    assert run.labels == 10 and not run.finished


@pytest.mark.slow  # one of the slowest of the default suite; CI runs it in make test-slow
def test_run_annotators_repeats_with_the_same_seed(tmp_path: Any) -> None:
    from posttrain.project import init_project

    runs = []
    for n in range(2):
        project = init_project(tmp_path / f"p{n}")
        try:
            ids = _interactions(project, 25)
            annotate.create_queue(project, annotate.QueueConfig(name="acc", task="accept", overlap=3, gold_share=0))
            annotate.fill(project, "acc", interaction_ids=ids)
            run = run_annotators(project, "acc", make_annotators(seed=7))
            rows = project.cursor().execute(
                "SELECT i.interaction_id, l.annotator, l.value, l.seconds FROM labels l JOIN annotation_items i "
                "ON i.id = l.item_id ORDER BY 1, 2").fetchall()  # fmt: skip
            runs.append((run.by_annotator, run.skips_by_annotator, rows))
        finally:
            project.close()
    assert runs[0] == runs[1]


@pytest.mark.slow  # one of the slowest of the default suite; CI runs it in make test-slow
def test_careful_annotators_gold_accuracy_is_near_their_skill(project: Project) -> None:
    ids = _interactions(project, 50, seed=4)
    annotate.create_queue(project, annotate.QueueConfig(name="acc", task="accept", overlap=5, gold_share=0))
    annotate.fill(project, "acc", interaction_ids=ids)
    crowd = make_annotators(seed=1)
    run_annotators(project, "acc", crowd)
    answers = dict(zip(ids, _answers(50, seed=4), strict=True))
    truth = {}
    for item_id, interaction_id in project.cursor().execute(
        "SELECT id, interaction_id FROM annotation_items").fetchall():  # fmt: skip
        prompt, response = answers[interaction_id]
        truth[item_id] = succeeds(make_prompt_task(prompt), response)
    accuracy = {k: v.value for k, v in gold_accuracy(_labels(project, "acc"), truth).items()}
    for annotator in crowd:
        got = accuracy[annotator.id]
        assert got is not None
        if annotator.profile.kind == "careful":
            assert abs(got - annotator.profile.accuracy) < 0.1
        if annotator.profile.kind == "adversarial":
            assert got < 0.35


def make_prompt_task(prompt: str) -> Any:
    return task_of(_view(prompt, None))


@pytest.mark.slow  # one of the slowest of the default suite; CI runs it in make test-slow
def test_alpha_of_careful_annotators_is_high_and_drops_with_the_adversarial(project: Project) -> None:
    ids = _interactions(project, 40, seed=5)
    annotate.create_queue(project, annotate.QueueConfig(name="acc", task="accept", overlap=4, gold_share=0))
    annotate.fill(project, "acc", interaction_ids=ids)
    crowd = make_annotators(seed=2, careless=0)
    run_annotators(project, "acc", crowd)
    labels = _labels(project, "acc")
    careful = [label for label in labels if label[1].startswith("careful")]
    alpha_careful = krippendorff_alpha(careful, "nominal", bootstrap=0).value
    alpha_all = krippendorff_alpha(labels, "nominal", bootstrap=0).value
    assert alpha_careful is not None and alpha_all is not None
    assert alpha_careful > 0.6
    assert alpha_all < alpha_careful - 0.2


def test_judge_score_is_sure_of_reversing_and_unsure_of_adding() -> None:
    pairs = _answers(1500, seed=6)
    sure = right_when_sure = unsure_add = adds = 0
    for prompt, answer in pairs:
        score = judge_score(answer, None, prompt=[{"role": "user", "content": prompt}])
        assert score == judge_score(answer, None, prompt=[{"role": "user", "content": prompt}])  # deterministic
        task = make_prompt_task(prompt)
        confidence = abs(2 * score - 1)
        if task.family == "add":
            adds += 1
            unsure_add += confidence < 0.9
        elif confidence >= 0.9:
            sure += 1
            right_when_sure += (score >= 0.5) == succeeds(task, answer)
    assert unsure_add == adds > 0
    assert sure > 300 and right_when_sure / sure > 0.9
    assert judge_score("4", None, prompt="not a task") == 0.5
