"""The dedup stage: exact and near-duplicates (MinHash LSH) removed, the best-judged copy kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.helpers import build_sft, make_frame, store_accepted
from posttrain.curation import dedup
from posttrain.curation.config import DedupStage
from posttrain.curation.frame import Verdict
from posttrain.project import Project

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

ANSWER = (
    "Open Settings, choose Security, then Reset password. A link arrives by email within five minutes; "
    "it works once and expires after an hour."
)
PROMPT = "How do I reset my password on the billing portal? I forgot it after the last update and cannot log in."


def removed(verdict: Verdict) -> dict[int, str | None]:
    """Return row -> reason of the rows the verdict removes."""
    assert verdict.reasons is not None
    return {int(i): verdict.reasons[i] for i in np.flatnonzero(~verdict.keep)}


def test_planted_edits_are_removed_and_the_best_judged_copy_stays(project: Project) -> None:
    prompts = [
        PROMPT,  # 0
        PROMPT.replace("billing", "payments"),  # 1: a changed word, judged best: stays
        PROMPT.replace("?", "!!"),  # 2: punctuation
        PROMPT.upper().replace(" ", "   "),  # 3: casing and spacing: row 0's text once normalised
        PROMPT + " Thanks a lot.",  # 4: an extra sentence
        "Write a haiku about rain on a tin roof.",  # 5: unrelated
        "Which planet is known as the red planet?",  # 6
        "Which planet is known as the red planet?",  # 7: exact copy of 6, same quality: the first stays
    ]
    answers = [ANSWER] * 5 + ["Drops drum on the tin, small hands applaud.", "Mars.", "Mars."]
    quality = [0.5, 0.9, np.nan, 0.3, 0.2, np.nan, 0.5, 0.5]
    verdict = dedup.run(make_frame(project, prompts, answers, quality=quality), DedupStage())
    assert list(np.flatnonzero(verdict.keep)) == [1, 5, 6]
    gone = removed(verdict)
    assert sorted(gone) == [0, 2, 3, 4, 7]
    for row in (0, 2, 3, 4):
        assert gone[row] is not None and gone[row].startswith("near-duplicate of i000001 (jaccard 0.")
    assert gone[7] == "exact duplicate of i000006"
    assert verdict.details == {"clusters": 2, "largest": 5}


def test_ties_go_to_the_longest_answer_then_the_first_row(project: Project) -> None:
    prompts = ["Name three primary colours.", "name three primary colours", "Name three primary colours!"]
    answers = ["Red, blue.", "Red, yellow and blue are the three primary colours.", "Red, yellow, blue."]
    verdict = dedup.run(make_frame(project, prompts, answers), DedupStage(on="prompt"))
    assert list(np.flatnonzero(verdict.keep)) == [1]  # nobody judged them: the longest answer
    # the same answers: the first row
    verdict = dedup.run(make_frame(project, prompts, ["Red."] * 3), DedupStage(on="prompt"))
    assert list(np.flatnonzero(verdict.keep)) == [0]
    gone = removed(verdict)
    assert gone[1] is not None and gone[1].startswith("near-duplicate of i000000 (jaccard ")


def test_a_different_answer_is_kept_when_comparing_whole_rows(project: Project) -> None:
    prompts = [PROMPT, PROMPT]
    answers = [ANSWER, "Ask your administrator: the billing portal's passwords are managed by single sign-on."]
    assert dedup.run(make_frame(project, prompts, answers), DedupStage(on="row")).keep.all()
    assert list(dedup.run(make_frame(project, prompts, answers), DedupStage(on="prompt")).keep) == [True, False]


def test_a_shared_template_with_different_numbers_stays(project: Project) -> None:
    template = "What is {} plus {}? Reply with the number only."
    sums = [(17, 25), (342, 981), (5, 7004), (61, 38)]
    prompts = [template.format(a, b) for a, b in sums]
    answers = [str(a + b) for a, b in sums]
    frame = make_frame(project, prompts, answers)
    verdict = dedup.run(frame, DedupStage(threshold=0.8))
    assert verdict.keep.all() and verdict.details == {"clusters": 0, "largest": 1}
    # the template alone is half of each text: at a loose threshold they would read as one
    assert not dedup.run(frame, DedupStage(threshold=0.3)).keep.all()


def test_word_shingles(project: Project) -> None:
    prompts = [PROMPT, PROMPT.replace("billing", "payments"), "Which planet is known as the red planet?"]
    verdict = dedup.run(make_frame(project, prompts, [ANSWER] * 3), DedupStage(unit="words", shingle=2))
    assert list(np.flatnonzero(verdict.keep)) == [0, 2]
    assert removed(verdict)[1].startswith("near-duplicate of i000000")  # type: ignore[union-attr]


def test_empty_and_short_texts(project: Project) -> None:
    prompts = ["", "", "hi", "Hi", "ok", "a much longer prompt than the others here"]
    verdict = dedup.run(make_frame(project, prompts, [""] * 6), DedupStage(on="prompt"))
    assert list(np.flatnonzero(verdict.keep)) == [0, 2, 4, 5]
    verdict = dedup.run(make_frame(project, [], []), DedupStage())
    assert len(verdict.keep) == 0 and verdict.details == {"clusters": 0, "largest": 0}


def test_many_rows_with_planted_near_duplicates(project: Project) -> None:
    """Thousands of rows, sketched in several chunks (and threads): exactly the planted copies go."""
    rng = np.random.default_rng(7)
    words = [f"w{k}" for k in range(400)]
    n = 25_000
    prompts = [" ".join(rng.choice(words, rng.integers(30, 60))) for _ in range(n)]
    planted = rng.choice(np.arange(1, n), 300, replace=False)
    for k in sorted(planted.tolist()):  # a copy of an earlier row with one word changed
        source = prompts[k - 1].split()
        source[len(source) // 2] = "changed"
        prompts[k] = " ".join(source) + "."
    frame = make_frame(project, prompts, [""] * n, quality=[0.5] * n)
    verdict = dedup.run(frame, DedupStage(on="prompt", threshold=0.7, num_perm=128))
    gone = set(np.flatnonzero(~verdict.keep).tolist())
    # each pair keeps its first row (same quality, same answer); a chain of copies keeps its first
    assert gone == set(planted.tolist())


def test_against_earlier_drops_rows_near_the_previous_version(project: Project) -> None:
    first = [(PROMPT, ANSWER), ("Which planet is known as the red planet?", "Mars.")]
    store_accepted(project, first, prefix="a")
    v1 = build_sft(project, "support")
    assert v1.row_count == 2
    later = [
        (PROMPT.replace("billing", "payments"), ANSWER),  # near a row of v1
        ("Translate 'good morning' into German.", "Guten Morgen."),  # new
    ]
    store_accepted(project, later, prefix="b")
    v2 = build_sft(project, "support", curate={"dedup": {"against_earlier": True}})
    assert v2.row_count == 1
    (stage,) = v2.stats["curation"]["stages"]
    assert stage["stage"] == "dedup" and stage["removed"] == 3
    details = pq.read_table(Path(v2.path).parent / "curation.parquet").to_pylist()
    reasons = {d["interaction_id"]: d["reason"] for d in details}
    assert reasons["b00001"] is None
    for gone in ("a00000", "a00001", "b00000"):  # v1's own rows again, and the edited copy
        assert reasons[gone].startswith("near-duplicate of support@1 (jaccard ")
    # without against_earlier only the edited copy goes (v1's rows are not read)
    assert build_sft(project, "support", curate={"dedup": {}}).row_count == 3


def test_normalise_collapses_whitespace_and_case() -> None:
    texts = pa.array(["  Hello\n\tWorld  ", "a\u00a0 b", None, "plain text"])
    assert dedup.normalise(texts).to_pylist() == ["hello world", "a b", "", "plain text"]
