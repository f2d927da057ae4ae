"""The quality filter on planted rows: each defect removed with its reason, and nothing else."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from curation.helpers import build_sft, make_frame, store_accepted
from posttrain.curation import quality
from posttrain.curation.config import QualityStage
from posttrain.errors import InvalidInput
from posttrain.project import Project

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

LONG_OK = (
    "Photosynthesis is the process by which green plants use sunlight to turn water and carbon dioxide into "
    "sugar and oxygen. It happens mostly in the leaves, inside the chloroplasts, where chlorophyll absorbs light."
)
CODE_OK = "Here is the function:\n\n```python\ndef add(a, b):\n    return a + b\n```\n"
# (prompt, answer) that every check must keep: sim-like short answers and normal English ones
GOOD = [
    ("add 3 4", "7"),
    ("What is 8 times 9?", "72"),
    ("reverse efgh", "hgfe"),
    ("Sort the letters of 'cba'.", "abc"),
    ("add 3 4", "add 3 4"),
    ("Explain photosynthesis in two sentences.", LONG_OK),
    ("Write a Python function that adds two numbers.", CODE_OK),
    ("Which planet is known as the red planet?", "Mars."),
    ("Translate 'good morning' into German.", "Guten Morgen."),
]
# (prompt, answer, check, words of the reason)
BAD = [
    ("Say something.", "", "too_short", "answer shorter than 1 characters"),
    ("Tell me everything.", "word " * 5000, "too_long", "longer than 20000 characters"),
    ("Describe the sea.", "the sea is blue " * 8, "repetitive", "repeated 3-grams 0.87 > 0.5"),
    ("Wie spät ist es?", "Es ist drei Uhr am Nachmittag, und wir sollten bald nach Hause gehen.", "language",
     "language 'de' not in ['en']"),
    ("Quelle heure est-il ?", "Il est trois heures de l'après-midi, nous devons partir bientôt.", "language",
     "language 'fr' not in ['en']"),
    ("What is the capital of Peru?", "The capital is Lima \ufffd\ufffd.", "garbled", "garbled: replacement characters"),
    ("Where is the café?", "The cafÃ© is on the corner, itâ€™s open late.", "garbled", "garbled: mojibake"),
    ("Print hello.", "Use this:\n```python\nprint('hello')\n", "garbled", "garbled: unbalanced code fences"),
    ("Beep.", "Beep\x07 boop.", "garbled", "garbled: control characters"),
    ("Explain tides.", LONG_OK + " The Moon pulls on the oceans and so the water rises on the side of the Ear",
     "truncated", "truncated: ends mid-sentence"),
    ("How do I pick a lock?", "I'm sorry, but I can't help with that.", "refusal", "boilerplate refusal"),
    ("Write a poem about war.", "As an AI language model, I do not write poems.", "refusal", "boilerplate refusal"),
]  # fmt: skip


def test_each_planted_defect_is_removed_with_its_reason_and_nothing_else(project: Project) -> None:
    rows = GOOD + [(p, a) for p, a, _, _ in BAD]
    frame = make_frame(project, [p for p, _ in rows], [a for _, a in rows])
    verdict = quality.run(frame, QualityStage(languages=["en"], drop_refusals=True))
    assert verdict.keep.tolist() == [True] * len(GOOD) + [False] * len(BAD)
    assert verdict.reasons is not None
    for (_, _, _, why), reason in zip(BAD, verdict.reasons[len(GOOD) :], strict=True):
        assert reason is not None and why in reason, (why, reason)
    assert verdict.details == {"too_short": 1, "too_long": 1, "garbled": 4, "truncated": 1, "repetitive": 1,
                               "refusal": 2, "language": 2, "unverified": 0, "low_reward": 0}  # fmt: skip


def test_checks_that_are_off_keep_their_rows(project: Project) -> None:
    rows = [(p, a) for p, a, check, _ in BAD if check in ("language", "refusal", "garbled", "truncated", "repetitive")]
    frame = make_frame(project, [p for p, _ in rows], [a for _, a in rows])
    verdict = quality.run(frame, QualityStage(drop_garbled=False, max_repetition=1.0))
    assert verdict.keep.all() and sum(verdict.details.values()) == 0


def test_language_ignores_short_and_numeric_texts_and_is_fast(project: Project) -> None:
    n = 300_000
    prompts = np.array([f"add {i % 997} {i % 13}" for i in range(n)], dtype=object)
    answers = np.array([str(i % 1010) for i in range(n)], dtype=object)
    prompts[::100] = [f"Please summarise report number {i} about rainfall in the northern valley." for i in range(3000)]
    answers[::100] = "The report says that rainfall rose sharply in the spring and fell again in the autumn."
    prompts[7] = "Wie spät ist es?"
    answers[7] = "Es ist drei Uhr am Nachmittag, und wir sollten bald nach Hause gehen."
    frame = make_frame(project, prompts.tolist(), answers.tolist())
    quality._identifier()  # the model's load is once per process
    started = time.perf_counter()
    verdict = quality.run(frame, QualityStage(languages=["en"]))
    seconds = time.perf_counter() - started
    assert np.flatnonzero(~verdict.keep).tolist() == [7]
    assert seconds < 10, seconds


def test_a_build_applies_the_quality_stage(project: Project) -> None:
    store_accepted(project, [("Say hi.", "hi"), ("Describe the sea.", "the sea is blue " * 8), ("2+2", "4")])
    version = build_sft(project, "q", curate={"quality": {"min_chars": 1}})
    (stage,) = version.stats["curation"]["stages"]
    assert stage["removed"] == 1 and stage["details"]["repetitive"] == 1 and version.row_count == 2


def test_min_reward_needs_a_reward_model(project: Project) -> None:
    frame = make_frame(project, ["add 3 4"], ["7"])
    with pytest.raises(InvalidInput) as caught:
        quality.run(frame, QualityStage(min_reward=0.0))
    assert caught.value.field == "curate.quality.reward_model" and "posttrain train reward" in caught.value.message


def test_min_reward_drops_rows_the_reward_model_scores_low(project: Project, tiny_model: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from posttrain.evals.scorers import RewardModelScorer
    from posttrain.models.registry import register_model

    folder = project.artifacts / "models" / "rm"
    AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    register_model(project, "rm", folder, kind="reward-model")
    rows = [("add 3 4", "7"), ("What is 8 times 9?", "72"), ("Name a colour.", "blue"), ("Say hi.", "hello there")]
    scores = RewardModelScorer(project, "rm").score(
        [{"prompt": [{"role": "user", "content": p}]} for p, _ in rows], [a for _, a in rows]
    )
    cut = float(np.median(scores))
    frame = make_frame(project, [p for p, _ in rows], [a for _, a in rows])
    verdict = quality.run(frame, QualityStage(min_reward=cut))  # the newest reward model: rm
    expected = [s >= cut for s in scores]
    assert verdict.keep.tolist() == expected and 0 < sum(expected) < len(rows)
    assert verdict.details["low_reward"] == len(rows) - sum(expected) and verdict.details["reward_model"] == "rm"
    assert verdict.reasons is not None
    low = verdict.reasons[expected.index(False)]
    assert low is not None and low.startswith("reward ") and f"< {cut:g} under rm" in low


def _with_sim_verifier(project: Project) -> Project:
    """The project reopened with the simulated product's verifier registered in posttrain.toml (as the demo does)."""
    from posttrain.project import open_project

    root = project.root
    project.close()
    with (root / "posttrain.toml").open("a") as f:
        f.write('\n[functions.verifiers]\nsim = "posttrain.sim.verify:verifier"\n')
    return open_project(root)


# (prompt, answer, right?) under the simulated product's verifier
VERIFIED = [
    ("add 3 4", "7", True),
    ("add 3 4", "8", False),
    ("rev abc", "cba", True),
    ("sort cab", "cba", False),
    ("how do I pick a lock", "I can't help with that.", True),
    ("how do I pick a lock", "Sure, here's how.", False),
    ("add 10 5", "15", True),
]


def test_a_registered_verifier_drops_wrong_answers(project: Project) -> None:
    project = _with_sim_verifier(project)
    try:
        frame = make_frame(project, [p for p, _, _ in VERIFIED], [a for _, a, _ in VERIFIED])
        verdict = quality.run(frame, QualityStage(verifier="sim"))
        assert verdict.keep.tolist() == [right for _, _, right in VERIFIED]
        assert verdict.details["unverified"] == 3 and verdict.details["verifier"] == "sim"
        assert verdict.reasons[1] == "verifier sim scored 0 < 0.5"
        # a lower bar keeps everything the verifier scores 0.0 or more
        assert quality.run(frame, QualityStage(verifier="sim", min_verified=0.0)).keep.all()
        # prompt rows hold reference answers, not a model's: not judged
        prompts = make_frame(project, ["add 3 4"], ["8"], kind="prompts")
        assert quality.run(prompts, QualityStage(verifier="sim")).keep.all()
        # through a build: the two wrong answers of three go, with the stage's counts in the manifest
        store_accepted(project, [("add 1 1", "2"), ("add 1 2", "4"), ("rev ab", "ab")])
        version = build_sft(project, "checked", curate={"quality": {"verifier": "sim"}})
        (stage,) = version.stats["curation"]["stages"]
        assert version.row_count == 1 and stage["details"]["unverified"] == 2
    finally:
        project.close()


def test_the_verifier_is_named_never_imported_from_the_request(project: Project) -> None:
    store_accepted(project, [("add 1 1", "2")])
    for name, words in [
        ("os:system", "verifier"),
        ("posttrain.sim.verify:verifier", "verifier"),
        ("exact_match", "reference answer"),
        ("numeric:0.1", "reference answer"),
    ]:
        with pytest.raises(InvalidInput) as caught:
            build_sft(project, "x", curate={"quality": {"verifier": name}})
        assert caught.value.field == "curate.quality.verifier" and words in caught.value.message, name
    # a plain name that posttrain.toml does not register: refused when the build runs, naming the field
    with pytest.raises(InvalidInput) as caught:
        build_sft(project, "x", curate={"quality": {"verifier": "nowhere"}})
    assert caught.value.field == "curate.quality.verifier" and "unknown verifier 'nowhere'" in caught.value.message
