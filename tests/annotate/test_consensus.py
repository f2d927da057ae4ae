"""Majority vote and Dawid-Skene on hand-built and synthetic labels."""

from __future__ import annotations

import numpy as np
import pytest

from posttrain.annotate.consensus import dawid_skene, majority

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")


def test_majority_picks_the_most_common_value() -> None:
    labels = [("i1", "a", "yes"), ("i1", "b", "yes"), ("i1", "c", "no"), ("i2", "a", "no")]
    result = majority(labels)
    assert result["i1"].value == "yes"
    assert result["i1"].support == 2 / 3
    assert result["i1"].n == 3
    assert result["i2"].value == "no"
    assert result["i2"].support == 1.0


def test_majority_non_numeric_tie_is_unresolved() -> None:
    result = majority([("i1", "a", "x"), ("i1", "b", "y")])
    assert result["i1"].value is None
    assert result["i1"].support == 0.5


def test_majority_numeric_tie_takes_the_median_vote() -> None:
    # votes 1, 1, 4, 4, 5: 1 and 4 tie at two votes each; the median of all votes, 4, wins
    result = majority([("i", "a", 1), ("i", "b", 1), ("i", "c", 4), ("i", "d", 4), ("i", "e", 5)])
    assert result["i"].value == 4
    assert result["i"].support == 2 / 5
    # votes 2 and 5: median 3.5 is nearer neither; the lower wins, deterministically
    tie = majority([("j", "a", 5), ("j", "b", 2)])
    assert tie["j"].value == 2
    assert tie["j"].support == 0.5


def test_majority_keeps_bools_apart_from_ints() -> None:
    result = majority([("i", "a", True), ("i", "b", 1), ("i", "c", 1)])
    assert result["i"].value == 1
    assert not isinstance(result["i"].value, bool)


def test_majority_accepts_tuples_of_categories() -> None:
    result = majority([("i", "a", ("x", "y")), ("i", "b", ("x", "y")), ("i", "c", ("x",))])
    assert result["i"].value == ("x", "y")


def _synthetic(seed: int = 7, n_items: int = 300) -> tuple[list[tuple[str, str, int]], dict[str, int]]:
    rng = np.random.default_rng(seed)
    truth = {f"item{i}": int(rng.integers(0, 2)) for i in range(n_items)}
    labels = []
    for item, true in truth.items():
        for annotator in ("good1", "good2", "good3"):
            correct = rng.random() < 0.9
            labels.append((item, annotator, true if correct else 1 - true))
        labels.append((item, "adversary", 1 - true))
    return labels, truth


def test_dawid_skene_beats_majority_with_an_adversary() -> None:
    labels, truth = _synthetic()
    ds = dawid_skene(labels)
    mv = majority(labels)
    ds_correct = sum(ds.items[item].value == true for item, true in truth.items())
    mv_correct = sum(mv[item].value == true for item, true in truth.items())
    assert ds_correct > mv_correct
    assert ds_correct >= 0.95 * len(truth)
    assert min(ds.reliability, key=lambda name: ds.reliability[name]) == "adversary"
    assert ds.reliability["adversary"] < 0.1
    assert all(ds.reliability[name] > 0.8 for name in ("good1", "good2", "good3"))
    assert 1 <= ds.iterations <= 100


def test_dawid_skene_on_unanimous_data_equals_majority() -> None:
    labels = [(f"i{i}", name, ["a", "b", "c"][i % 3]) for i in range(12) for name in ("x", "y", "z")]
    ds = dawid_skene(labels)
    mv = majority(labels)
    assert {item: r.value for item, r in ds.items.items()} == {item: r.value for item, r in mv.items()}
    assert all(r.support > 0.99 and r.n == 3 for r in ds.items.values())


def test_dawid_skene_on_no_labels_is_empty() -> None:
    result = dawid_skene([])
    assert result.items == {}
    assert result.iterations == 0


def test_dawid_skene_with_one_class_resolves_to_it() -> None:
    result = dawid_skene([("i", "a", "only"), ("j", "b", "only")])
    assert result.items["i"].value == "only"
    assert result.items["i"].support == 1.0
