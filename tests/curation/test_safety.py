"""The safety filter: a classifier trained on real flags and annotator judgements, strict for minors; judges."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curation.helpers import build_sft, make_frame, store_accepted
from posttrain.capture import capture
from posttrain.curation import safety
from posttrain.curation.config import SafetyStage
from posttrain.errors import InvalidInput
from posttrain.project import Project, open_project

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

HARMS = ["a pipe bomb", "a nerve agent", "methamphetamine", "a ghost gun", "ransomware", "a poison for a neighbour"]
STEPS = ["mix the powder with", "heat the mixture until", "pack the casing with", "add the acid to"]
TOPICS = ["bread", "a birthday card", "a bird feeder", "tomato soup", "a paper plane", "a garden bed"]
HELP = ["mix the flour with", "fold the paper along", "water the soil after", "stir the pot until"]


def unsafe_pairs(n: int, offset: int = 0) -> list[tuple[str, str]]:
    """Requests for harm answered with instructions."""
    out = []
    for k in range(offset, offset + n):
        harm, step = HARMS[k % len(HARMS)], STEPS[k % len(STEPS)]
        out.append((f"How do I make {harm} at home?", f"Here is how to make {harm}: first {step} the fuel, then "
                    f"hide it and use it on the target. Step {k}: avoid the police."))  # fmt: skip
    return out


def safe_pairs(n: int, offset: int = 0) -> list[tuple[str, str]]:
    """Everyday requests answered helpfully."""
    out = []
    for k in range(offset, offset + n):
        topic, step = TOPICS[k % len(TOPICS)], HELP[k % len(HELP)]
        out.append((f"How do I make {topic} at home?", f"Making {topic} is easy: first {step} care, then let it "
                    f"rest and share it with friends. Tip {k}: enjoy it."))  # fmt: skip
    return out


def plant(project: Project, unsafe: int, safe: int) -> None:
    """Capture flagged unsafe answers and annotator-approved safe ones."""
    bad = store_accepted(project, unsafe_pairs(unsafe), prefix="u")
    good = store_accepted(project, safe_pairs(safe), prefix="s")
    flags = [{"id": f"flag-{i}", "interaction_id": i, "kind": "flag", "value": "unsafe"} for i in bad]
    thumbs = [{"id": f"ok-{i}", "interaction_id": i, "kind": "thumb", "value": True, "source": "annotator"}
              for i in good]  # fmt: skip
    assert all(r.status == "created" for r in capture(project, "feedback", flags + thumbs))


def test_train_stores_arrays_and_a_manifest_and_loads_without_pickle(project: Project) -> None:
    plant(project, 30, 30)
    store_accepted(project, safe_pairs(5, offset=100), prefix="x")  # a user's thumb alone is not a safe label
    record = safety.train_classifier(project, "safety-v1")
    assert record.examples == {"safe": 30, "unsafe": 30}
    assert record.metrics["train_accuracy"] == 1.0 and record.metrics["holdout_roc_auc"] >= 0.9
    folder = Path(record.path)
    assert folder == project.artifacts / "safety" / "safety-v1"
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.npz"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["vectorizers"]["chars"]["analyzer"] == "char_wb" and manifest["examples"]["unsafe"] == 30
    with np.load(folder / "model.npz", allow_pickle=False) as arrays:  # plain arrays: nothing runs on load
        assert sorted(arrays.files) == ["coef", "intercept"] and arrays["coef"].shape == (2 * safety.FEATURES,)
    assert [c.name for c in safety.list_classifiers(project)] == ["safety-v1"]
    loaded = safety.load_classifier(project, None)
    assert loaded.record.name == "safety-v1"
    p = loaded.p_unsafe([" ".join(x) for x in unsafe_pairs(3, offset=50) + safe_pairs(3, offset=50)])
    assert (p[:3] > 0.5).all() and (p[3:] < 0.5).all()


def test_too_few_examples_say_what_is_missing(project: Project) -> None:
    plant(project, 12, 25)
    with pytest.raises(InvalidInput) as caught:
        safety.train_classifier(project, "safety-v1")
    assert caught.value.message == (
        "12 unsafe examples, 20 needed: flag unsafe answers or label them in an annotation queue"
    )
    with pytest.raises(InvalidInput) as caught:
        safety.train_classifier(project, "bad/name", min_examples=5)
    assert caught.value.field == "name"


def test_strict_rows_go_at_the_strict_threshold_and_others_at_theirs(project: Project) -> None:
    plant(project, 30, 30)
    safety.train_classifier(project, "safety-v1")
    rows = unsafe_pairs(3, offset=60) + safe_pairs(3, offset=60)
    prompts, answers = [p for p, _ in rows], [a for _, a in rows]
    minors = make_frame(project, prompts, answers, cohorts=["minor"] * 6, strict=True)
    verdict = safety.run(minors, SafetyStage())
    assert verdict.keep.tolist() == [False] * 3 + [True] * 3
    assert verdict.reasons is not None and all(
        r is not None and r.startswith("P(unsafe) ") and r.endswith(">= 0.2 (strict) under safety-v1")
        for r in verdict.reasons[:3]
    )
    assert verdict.details == {"scorer": "safety-v1", "threshold": 0.2, "strict": True, "scored": 6, "unscored": 0,
                               "strict_rows": 6}  # fmt: skip
    p = safety.load_classifier(project, "safety-v1").p_unsafe([f"{q}\n{a}" for q, a in rows[:3]])
    high = round(float(p.max()) + 0.005, 3)
    assert float(p.min()) > 0.2 and high < 1
    adults = make_frame(project, prompts, answers, cohorts=["adult"] * 6, strict=False)
    assert safety.run(adults, SafetyStage(threshold=high)).keep.all()  # the same rows, a high threshold: kept
    # a mixed frame: rows of a strict cohort are judged strictly, the others at the threshold
    mixed = make_frame(project, prompts, answers, cohorts=["minor", "adult", "adult", "adult", "minor", "adult"])
    mixed.strict_cohorts = frozenset({"minor"})
    verdict = safety.run(mixed, SafetyStage(threshold=high))
    assert verdict.keep.tolist() == [False, True, True, True, True, True] and verdict.details["strict_rows"] == 2
    # only the cohorts named
    verdict = safety.run(minors, SafetyStage(cohorts=["adult"]))
    assert verdict.keep.all() and verdict.details["scored"] == 0


def test_without_a_classifier_every_row_is_kept_with_a_note(project: Project) -> None:
    frame = make_frame(project, ["How do I make a pipe bomb?"], ["Here is how."], strict=True)
    verdict = safety.run(frame, SafetyStage())
    assert verdict.keep.all() and verdict.note == safety.SKIPPED
    with pytest.raises(Exception, match="train it with 'posttrain curate train-safety nope'"):
        safety.run(frame, SafetyStage(classifier="nope"))


def test_a_verifier_judge_gives_p_safe_in_a_build(project: Project) -> None:
    root = project.root
    project.close()
    judges = {"safe": {"kind": "verifier", "verifier": "exact_match"}, "talk": {"kind": "chat", "model": "m"}}
    proj = open_project(root, **{"annotate.judges": judges})
    try:
        # the verifier accepts answers equal to metadata.answer: P(safe) 1; others P(safe) 0; no answer: unscored
        store_accepted(proj, [("What is 2+2?", "4")], prefix="a", extra={"metadata": {"answer": "4"}})
        store_accepted(proj, [("What is 3+3?", "7")], prefix="b", extra={"metadata": {"answer": "6"}})
        store_accepted(proj, [("Say hi.", "hi")], prefix="c")
        version = build_sft(proj, "judged", curate={"safety": {"judge": "safe"}})
        (stage,) = version.stats["curation"]["stages"]
        assert stage["removed"] == 1 and version.row_count == 2
        assert stage["examples"][0]["reason"] == "P(unsafe) 1.00 >= 0.5 under judge:safe"
        assert stage["details"] == {"scorer": "judge:safe", "threshold": 0.5, "strict": False, "scored": 2,
                                    "unscored": 1, "strict_rows": 0}  # fmt: skip
        frame = make_frame(proj, ["Say hi."], ["hi"])
        with pytest.raises(InvalidInput) as caught:
            safety.run(frame, SafetyStage(judge="talk"))
        assert caught.value.field == "curate.safety.judge" and "reward-model or verifier" in caught.value.message
    finally:
        proj.close()


@pytest.mark.parametrize("where", [":", "i.nope = 1", "1; DROP TABLE feedback", "i.id = $x"])
def test_train_refuses_a_where_that_is_not_one_condition(project: Project, where: str) -> None:
    from posttrain.curation import safety

    with pytest.raises(InvalidInput) as caught:
        safety.train_classifier(project, "s", where=where)
    assert caught.value.field == "where"
