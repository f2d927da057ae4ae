"""Selection under a budget: exact budgets per stratum, k-center diversity, quality, the hardest prompts."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from curation.helpers import make_frame, store_accepted
from posttrain.capture import capture
from posttrain.curation import embed as embedding
from posttrain.curation import select
from posttrain.curation.config import SelectStage
from posttrain.project import Project

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

# five tight groups of near-identical prompts (eight each), far apart from one another
TOPICS = [
    "How do I reset my password on the billing portal",
    "Translate good morning into German please",
    "Write a haiku about rain falling on a tin roof",
    "Which planet of the solar system is known as the red planet",
    "Sort these numbers in ascending order: 9 4 7 1",
]
GROUPED = [f"{topic}{'?' * (1 + k % 3)}{' thanks' if k >= 4 else ''}" for topic in TOPICS for k in range(8)]
GROUP = np.repeat(np.arange(len(TOPICS)), 8)


def _stage(**values: object) -> SelectStage:
    return SelectStage.model_validate({"embedder": "hashing", **values})


def _strata_frame(project: Project, answer_words: int = 2):
    """36 rows: adult/add 20, adult/sub 10, minor/add 6; every row 3 + answer_words tokens."""
    cohorts = ["adult"] * 30 + ["minor"] * 6
    families = ["add"] * 20 + ["sub"] * 10 + ["add"] * 6
    prompts = [f"{f} question {i}" for i, f in enumerate(families)]
    answers = [" ".join(["word"] * answer_words) for _ in prompts]
    return make_frame(project, prompts, answers, cohorts=cohorts, families=families)


def _kept_per_stratum(frame, keep: np.ndarray) -> dict[str, int]:
    keys = [f"{c}/{f}" for c, f in zip(frame.cohort, frame.family, strict=True)]
    return {key: int(sum(k for k, kk in zip(keep, keys, strict=True) if kk == key)) for key in sorted(set(keys))}


def test_fraction_is_shared_over_strata_by_size(project: Project) -> None:
    frame = _strata_frame(project)
    choice = select.run(frame, _stage(fraction=0.5))
    assert _kept_per_stratum(frame, choice.verdict.keep) == {"adult/add": 10, "adult/sub": 5, "minor/add": 3}
    assert choice.verdict.details["strata"] == {"adult/add": [10, 20], "adult/sub": [5, 10], "minor/add": [3, 6]}
    assert choice.verdict.details["budget"] == "50%" and choice.verdict.details["embedder"] == "hashing"
    dropped = [r for r, k in zip(choice.verdict.reasons, choice.verdict.keep, strict=True) if not k]
    assert len(dropped) == 18 and "not selected: budget 50% of stratum adult/sub (5 of 10)" in dropped
    assert all(r is None for r, k in zip(choice.verdict.reasons, choice.verdict.keep, strict=True) if k)
    assert len(choice.x) == len(choice.y) == len(choice.cluster) == 36 and not np.isnan(choice.x).any()


def test_strict_cohorts_are_kept_whole_unless_the_stage_says_otherwise(project: Project) -> None:
    frame = _strata_frame(project)
    frame.strict_cohorts = frozenset({"minor"})
    choice = select.run(frame, _stage(fraction=0.5))
    # the minors' 6 rows all stay; the budget is half of the 30 others, shared by size
    assert _kept_per_stratum(frame, choice.verdict.keep) == {"adult/add": 10, "adult/sub": 5, "minor/add": 6}
    assert choice.verdict.details["kept_strict_cohorts"] == 6
    assert "minor/add" not in choice.verdict.details["strata"]
    assert "6 rows of strict cohorts kept whole" in (choice.verdict.note or "")
    assert all(r is None for r, c in zip(choice.verdict.reasons, frame.cohort, strict=True) if c == "minor")
    # a dataset of minors alone keeps every row
    minors = frame.take(np.asarray(frame.cohort == "minor"))
    assert select.run(minors, _stage(fraction=0.3)).verdict.keep.all()
    assert select.run(minors, _stage(tokens=6, by="quality")).verdict.keep.all()
    # said so: the minors are selected among like everyone else
    choice = select.run(frame, _stage(fraction=0.5, strict_cohorts=True))
    assert _kept_per_stratum(frame, choice.verdict.keep) == {"adult/add": 10, "adult/sub": 5, "minor/add": 3}
    assert "kept_strict_cohorts" not in choice.verdict.details and choice.verdict.note is None


def test_rows_use_the_largest_remainder_and_every_stratum_gets_one(project: Project) -> None:
    frame = _strata_frame(project)
    # 7 * (20, 10, 6) / 36 = 3.89, 1.94, 1.17: floors 3, 1, 1 and the two extra rows to the largest remainders
    choice = select.run(frame, _stage(rows=7))
    assert _kept_per_stratum(frame, choice.verdict.keep) == {"adult/add": 4, "adult/sub": 2, "minor/add": 1}
    # 3 rows: proportionally 1.67, 0.83, 0.5, but every stratum gets one when the budget allows
    choice = select.run(frame, _stage(rows=3))
    assert _kept_per_stratum(frame, choice.verdict.keep) == {"adult/add": 1, "adult/sub": 1, "minor/add": 1}
    assert (
        "budget 3 rows of stratum adult/add (1 of 20)"
        in choice.verdict.reasons[np.flatnonzero(~choice.verdict.keep)[0]]
    )
    # more rows than there are: everything
    assert select.run(frame, _stage(rows=1000)).verdict.keep.all()
    # by family only: 'add' has 26 rows, 'sub' 10
    choice = select.run(frame, _stage(rows=18, stratify=["family"]))
    assert choice.verdict.details["strata"] == {"add": [13, 26], "sub": [5, 10]}


def test_tokens_budget_per_stratum(project: Project) -> None:
    frame = _strata_frame(project)  # 5 tokens a row: strata of 100, 50 and 30 tokens
    choice = select.run(frame, _stage(tokens=90))
    assert _kept_per_stratum(frame, choice.verdict.keep) == {"adult/add": 10, "adult/sub": 5, "minor/add": 3}
    assert select.token_counts(frame)[choice.verdict.keep].sum() == 90
    # a budget that is not a multiple of the row size: never over it
    choice = select.run(frame, _stage(tokens=33, by="quality"))
    assert select.token_counts(frame)[choice.verdict.keep].sum() <= 33
    assert _kept_per_stratum(frame, choice.verdict.keep) == {"adult/add": 3, "adult/sub": 1, "minor/add": 1}


def test_token_budget_passes_over_a_row_too_long_for_what_is_left(project: Project) -> None:
    answers = ["a " * 3, "a " * 50, "a " * 3, "a " * 3]
    frame = make_frame(project, ["p one", "p two", "p three", "p four"], answers, quality=[0.9, 0.8, 0.7, 0.6])
    choice = select.run(frame, _stage(tokens=16, by="quality", stratify=[]))
    # 5 tokens each except row 1 (52): rows 0, 2 and 3 fit in 16
    assert choice.verdict.keep.tolist() == [True, False, True, True]


def test_diversity_covers_every_planted_group(project: Project) -> None:
    frame = make_frame(project, GROUPED)
    choice = select.run(frame, _stage(rows=5, stratify=[], quality_weight=0.0))
    assert sorted(GROUP[choice.verdict.keep]) == [0, 1, 2, 3, 4]
    # quality order with no judgements is row order: the first group only (what a prefix or bad luck gives)
    by_quality = select.run(frame, _stage(rows=5, stratify=[], by="quality"))
    assert set(GROUP[by_quality.verdict.keep]) == {0}
    # and the map separates the groups: each group's points lie together
    assert len(set(choice.cluster)) > 1


def test_diversity_starts_from_the_best_judged_and_weighs_quality(project: Project) -> None:
    quality = np.full(len(GROUPED), np.nan)
    quality[[3, 11]] = 1.0  # one row of group 0 and one of group 1 judged best
    quality[[20, 21]] = 0.0
    frame = make_frame(project, GROUPED, quality=quality.tolist())
    picks = select.k_center(select.embed(GROUPED, "hashing"), np.nan_to_num(quality, nan=0.5), 0.3, k=5)
    assert picks[0] == 3  # the best judged first (ties: row order)
    choice = select.run(frame, _stage(rows=5, stratify=[], quality_weight=0.3))
    assert choice.verdict.keep[[3, 11]].all() and sorted(GROUP[choice.verdict.keep]) == [0, 1, 2, 3, 4]
    assert not choice.verdict.keep[[20, 21]].any()  # group 2's pick is one judged 0.5, not the 0.0 ones


def test_quality_picks_the_best_judged(project: Project) -> None:
    quality = [0.2, np.nan, 0.9, 0.4, 1.0, 0.9, 0.0, 0.6]
    frame = make_frame(project, [f"prompt {i}" for i in range(8)], quality=quality)
    choice = select.run(frame, _stage(rows=4, by="quality", stratify=[]))
    # 1.0, 0.9 (row 2), 0.9 (row 5), 0.6; unjudged counts 0.5 and is left out
    assert np.flatnonzero(choice.verdict.keep).tolist() == [2, 4, 5, 7]


def test_hardest_picks_the_prompts_the_model_fails_most(project: Project) -> None:
    prompts = ["Prove that sqrt 2 is irrational", "What is 2 + 2", "Name a prime above 100", "Spell cat", "Say hi"]
    store_accepted(project, [(p, "an answer") for p in prompts])  # one success each
    # more interactions with the same prompts, judged by users: fails on 0 (3 of 4), 2 (2 of 3), 3 (1 of 3)
    verdicts = {0: ["thumb-", "rating1", "flag"], 2: ["thumb-", "rating2"], 3: ["rating5", "thumb-"]}
    interactions, feedback = [], []
    for row, kinds in verdicts.items():
        for k, signal in enumerate(kinds):
            iid = f"h{row}{k}"
            interactions.append({"id": iid, "messages": [{"role": "user", "content": prompts[row]}], "response": "x",
                                 "user_id": "u", "cohort": "adult"})  # fmt: skip
            kind, value = {"thumb-": ("thumb", False), "rating1": ("rating", 1), "rating2": ("rating", 2),
                           "rating5": ("rating", 5), "flag": ("flag", "wrong")}[signal]  # fmt: skip
            feedback.append({"id": f"f{iid}", "interaction_id": iid, "kind": kind, "value": value})
    assert all(r.status == "created" for r in capture(project, "interactions", interactions))
    assert all(r.status == "created" for r in capture(project, "feedback", feedback))
    frame = make_frame(project, prompts + ["Never seen before"])
    failures, judged = select.failure_counts(frame)
    assert failures.tolist() == [3, 0, 2, 1, 0, 0] and judged.tolist() == [4, 1, 3, 3, 1, 0]
    choice = select.run(frame, _stage(rows=2, by="hardest", stratify=[]))
    assert np.flatnonzero(choice.verdict.keep).tolist() == [0, 2]
    assert choice.verdict.details["rows_with_evidence"] == 5
    # the row with no evidence comes last: 5 rows keep it out
    assert not select.run(frame, _stage(rows=5, by="hardest", stratify=[])).verdict.keep[5]


def test_deterministic_given_the_seed(project: Project) -> None:
    frame = make_frame(project, GROUPED * 3, cohorts=["adult", "minor"] * 60)
    first = select.run(frame, _stage(fraction=0.3, seed=7))
    again = select.run(frame, _stage(fraction=0.3, seed=7))
    assert first.verdict.keep.tolist() == again.verdict.keep.tolist()
    assert first.verdict.reasons == again.verdict.reasons
    assert np.array_equal(first.x, again.x) and np.array_equal(first.y, again.y)
    assert np.array_equal(first.cluster, again.cluster)


def test_big_strata_split_by_cluster_keep_the_budget(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(select, "PIECE_LIMIT", 40)  # 40 rows x 5 picks is over it: the per-cluster path
    frame = make_frame(project, GROUPED)
    choice = select.run(frame, _stage(rows=5, stratify=[], quality_weight=0.0))
    assert choice.verdict.keep.sum() == 5 and choice.verdict.details["split_by_cluster"] == 1
    assert sorted(GROUP[choice.verdict.keep]) == [0, 1, 2, 3, 4]
    tokens = select.run(frame, _stage(tokens=60, stratify=[]))
    assert select.token_counts(frame)[tokens.verdict.keep].sum() <= 60


def test_share_gives_each_part_one_when_the_budget_allows() -> None:
    assert select.share(np.array([100, 1, 1]), 3, np.ones(3)).tolist() == [1, 1, 1]
    assert select.share(np.array([100, 1, 1]), 2, np.ones(3)).tolist() == [2, 0, 0]
    assert select.share(np.array([5, 0, 3]), 100, np.ones(3)).tolist() == [5, 0, 3]


def test_no_rows(project: Project) -> None:
    choice = select.run(make_frame(project, []), _stage(fraction=0.5))
    assert len(choice.verdict.keep) == 0 and choice.verdict.note == "no rows to select from"


def test_hashing_embeddings_are_unit_rows_and_each_text_encoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real = embedding._hashing
    monkeypatch.setattr(embedding, "_hashing", lambda texts: seen.append(len(texts)) or real(texts))
    vectors = embedding.embed(["a cat", "a dog", "a cat", ""], "hashing")
    assert seen == [3] and vectors.shape == (4, 256) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors[:3], axis=1), 1) and np.array_equal(vectors[0], vectors[2])
    assert not vectors[3].any()


@pytest.mark.slow
def test_minilm_covers_paraphrased_groups(project: Project) -> None:
    frame = make_frame(project, GROUPED)
    choice = select.run(frame, _stage(rows=5, stratify=[], quality_weight=0.0, embedder="minilm"))
    assert sorted(GROUP[choice.verdict.keep]) == [0, 1, 2, 3, 4]
    vectors = embedding.embed(["How do I change my password?", "How can I reset my password?", "Bake bread"], "minilm")
    assert vectors.shape == (3, 384) and vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


@pytest.mark.slow
def test_static_is_distilled_once_offline(project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the static embedder tried the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    frame = make_frame(project, GROUPED)
    choice = select.run(frame, _stage(rows=5, stratify=[], quality_weight=0.0, embedder="static"))
    assert sorted(GROUP[choice.verdict.keep]) == [0, 1, 2, 3, 4]
    assert (tmp_path / "cache" / "static-minilm" / "model.safetensors").is_file()
    monkeypatch.setattr(embedding, "distill_static", lambda target: pytest.fail("distilled a second time"))
    embedding._static_model.cache_clear()
    vectors = embedding.embed(["a cat", "a cat"], "static")
    assert vectors.shape == (2, 256) and np.allclose(np.linalg.norm(vectors, axis=1), 1)
