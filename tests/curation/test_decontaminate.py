"""The decontamination stage: training rows that repeat or overlap eval prompts are removed."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation.helpers import build_sft, make_frame, store_accepted
from posttrain import datasets
from posttrain.curation import decontaminate
from posttrain.curation.config import DecontaminateStage
from posttrain.curation.frame import Verdict
from posttrain.errors import InvalidInput
from posttrain.project import Project

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

LONG_EVAL = (
    "A train leaves the station at nine in the morning travelling at sixty miles per hour and a second train "
    "leaves the same station an hour later at eighty miles per hour; when does the second train catch up?"
)
EVAL_PROMPTS = ["What is the capital of France?", "Sort the letters of 'dcba'.", LONG_EVAL]


def write_eval(project: Project, name: str, prompts: list[str]) -> datasets.DatasetVersion:
    """Write an eval version of these prompts (the eval row format)."""
    n = len(prompts)
    table = pa.table({
        "prompt": [[{"role": "user", "content": p}] for p in prompts],
        "answer": [None] * n,
        "completion": ["reference"] * n,
        "cohort": ["adult"] * n,
        "user_id": [f"u{k}" for k in range(n)],
        "session_id": [None] * n,
    })  # fmt: skip
    return datasets.write_version(project, name, "eval", table, recipe={}, sources={})


def reasons_of(verdict: Verdict) -> dict[int, str | None]:
    assert verdict.reasons is not None
    return {int(i): verdict.reasons[i] for i in np.flatnonzero(~verdict.keep)}


def test_whole_matches_and_shared_ngrams_are_removed(project: Project) -> None:
    write_eval(project, "suite", EVAL_PROMPTS)
    words = LONG_EVAL.split()
    shares_13 = "Here is a puzzle for you: " + " ".join(words[5:18]) + " and then tell me what you think of it please."
    shares_12 = "Here is a puzzle for you: " + " ".join(words[5:17]) + " and then tell me what you think of it please."
    prompts = [
        "what is the CAPITAL of   france",  # 0: an eval prompt, other casing, spacing and punctuation
        "Sort the letters of dcba",  # 1: an eval prompt
        "What is the capital of Spain?",  # 2: close, not the same
        shares_13,  # 3: a long prompt with one 13-gram of the long eval prompt
        shares_12,  # 4: only 12 tokens in common: stays
        "leaves the same station an hour later",  # 5: short, inside the long eval prompt: stays (whole match only)
        LONG_EVAL.upper(),  # 6: the long eval prompt itself
    ]
    frame = make_frame(project, prompts)
    verdict = decontaminate.run(frame, DecontaminateStage())
    gone = reasons_of(verdict)
    assert sorted(gone) == [0, 1, 3, 6]
    assert gone[0] == gone[1] == "prompt in eval suite@1 (whole match)"
    n_grams = len(shares_13.split()) + 1 - 13  # its tokens: words, "you:" one token, no punctuation tokens
    assert gone[3] == f"13-gram overlap with suite@1 (1 of {n_grams} n-grams)"
    total = len(decontaminate.tokenise(LONG_EVAL)) - 12
    assert gone[6] == f"13-gram overlap with suite@1 ({total} of {total} n-grams)"
    assert verdict.details == {"against": ["suite@1"], "eval_prompts": 3}
    # nothing left that is an eval prompt
    evals = {" ".join(decontaminate.tokenise(p)) for p in EVAL_PROMPTS}
    kept = frame.prompt[verdict.keep]
    assert all(" ".join(decontaminate.tokenise(p)) not in evals for p in kept)


def test_max_overlap_allows_a_share(project: Project) -> None:
    write_eval(project, "suite", [LONG_EVAL])
    words = LONG_EVAL.split()
    prompt = "Here is a puzzle for you: " + " ".join(words[5:18]) + " and then tell me what you think of it please."
    frame = make_frame(project, [prompt])
    assert not decontaminate.run(frame, DecontaminateStage()).keep[0]
    assert decontaminate.run(frame, DecontaminateStage(max_overlap=0.1)).keep[0]  # 1 of 20 n-grams is 5%


def test_named_versions_and_the_default(project: Project) -> None:
    write_eval(project, "suite", ["What is the capital of France?"])
    write_eval(project, "suite", ["Name a prime number above ten."])  # suite@2
    write_eval(project, "other", ["Spell 'necessary'."])
    write_eval(project, "curated", ["Which planet is red?"])  # the dataset being built: not checked by default
    prompts = ["What is the capital of France?", "Name a prime number above ten", "spell necessary",
               "Which planet is red?"]  # fmt: skip
    frame = make_frame(project, prompts, name="curated")
    verdict = decontaminate.run(frame, DecontaminateStage())
    assert reasons_of(verdict) == {
        0: "prompt in eval suite@1 (whole match)",
        1: "prompt in eval suite@2 (whole match)",
        2: "prompt in eval other@1 (whole match)",
    }
    assert verdict.details["against"] == ["other@1", "suite@1", "suite@2"]
    verdict = decontaminate.run(frame, DecontaminateStage(against=["suite@2", "curated"]))
    assert sorted(reasons_of(verdict)) == [1, 3]
    assert verdict.details == {"against": ["suite@2", "curated@1"], "eval_prompts": 2}


def test_an_unknown_eval_version_names_the_field(project: Project) -> None:
    frame = make_frame(project, ["hello"])
    for ref in ("nope", "nope@2", "nope@x"):
        with pytest.raises(InvalidInput) as caught:
            decontaminate.run(frame, DecontaminateStage(against=[ref]))
        assert caught.value.field == "curate.decontaminate.against" and ref in caught.value.message


def test_no_eval_versions_keeps_everything(project: Project) -> None:
    verdict = decontaminate.run(make_frame(project, ["What is the capital of France?"]), DecontaminateStage())
    assert verdict.keep.all() and verdict.note == "no eval versions to check against"
    assert verdict.details == {"against": [], "eval_prompts": 0}


def test_a_build_drops_the_eval_prompts(project: Project) -> None:
    write_eval(project, "suite", EVAL_PROMPTS)
    rows = [("WHAT is the capital of France", "Paris."), (LONG_EVAL, "At one in the afternoon."),
            ("Translate 'good morning' into German.", "Guten Morgen.")]  # fmt: skip
    store_accepted(project, rows)
    version = build_sft(project, "train", curate={"decontaminate": {}})
    assert version.row_count == 1
    (stage,) = version.stats["curation"]["stages"]
    assert stage["removed"] == 2 and stage["details"] == {"against": ["suite@1"], "eval_prompts": 3}
    assert [e["reason"] for e in stage["examples"]] == [
        "prompt in eval suite@1 (whole match)",
        "13-gram overlap with suite@1 (27 of 27 n-grams)",
    ]
