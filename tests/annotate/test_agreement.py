"""Agreement, gold accuracy and calibration against textbook values and the libraries' own numbers."""

from __future__ import annotations

import math

import krippendorff
import numpy as np
import pytest

from posttrain.annotate.agreement import (
    alpha_of_counts,
    annotator_agreement,
    calibration,
    cohen_kappa,
    fleiss_kappa,
    fleiss_of_weights,
    gold_accuracy,
    krippendorff_alpha,
)
from posttrain.errors import InvalidInput

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

NAN = math.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 coders x 12 units, nominal alpha 0.743
PAPER = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
]


def _labels(matrix: list[list[float]]) -> list[tuple[str, str, int]]:
    return [
        (f"u{unit}", f"coder{coder}", int(value))
        for coder, row in enumerate(matrix)
        for unit, value in enumerate(row)
        if not math.isnan(value)
    ]


def _noisy(n_items: int, accuracy: float, seed: int, raters: int = 3) -> list[tuple[str, str, str]]:
    rng = np.random.default_rng(seed)
    labels = []
    for i in range(n_items):
        truth = str(rng.choice(["a", "b", "c"]))
        for r in range(raters):
            value = truth if rng.random() < accuracy else str(rng.choice(["a", "b", "c"]))
            labels.append((f"i{i}", f"r{r}", value))
    return labels


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_krippendorff_alpha_equals_the_package_on_the_paper_example(level: str) -> None:
    expected = krippendorff.alpha(reliability_data=PAPER, level_of_measurement=level)
    estimate = krippendorff_alpha(_labels(PAPER), level, bootstrap=200)  # type: ignore[arg-type]
    assert estimate.value == pytest.approx(expected)
    assert estimate.n_items == 11  # unit 12 has one label and is not pairable
    assert estimate.n_labels == 40
    assert estimate.low is not None and estimate.high is not None
    assert estimate.low <= estimate.value <= estimate.high


def test_krippendorff_alpha_nominal_matches_the_textbook_value() -> None:
    estimate = krippendorff_alpha(_labels(PAPER), "nominal", bootstrap=0)
    assert estimate.value == pytest.approx(0.743, abs=0.0005)
    assert estimate.low is None


def test_krippendorff_alpha_codes_string_values() -> None:
    as_text = [(item, coder, f"v{value}") for item, coder, value in _labels(PAPER)]
    assert krippendorff_alpha(as_text, "nominal", bootstrap=0).value == pytest.approx(0.743421, abs=1e-6)
    with pytest.raises(InvalidInput) as error:
        krippendorff_alpha(as_text, "interval")
    assert error.value.field == "level"


def test_krippendorff_alpha_perfect_agreement_is_one() -> None:
    labels = [(f"i{i}", coder, i % 3) for i in range(9) for coder in ("a", "b", "c")]
    estimate = krippendorff_alpha(labels, "nominal", bootstrap=100)
    assert estimate.value == pytest.approx(1.0)
    assert estimate.low == pytest.approx(1.0)
    assert estimate.high == pytest.approx(1.0)


def test_krippendorff_alpha_is_none_on_small_or_constant_data() -> None:
    assert krippendorff_alpha([], "nominal").value is None
    assert krippendorff_alpha([("i", "a", 1), ("i", "b", 2)], "nominal").value is None
    constant = [(f"i{i}", coder, "same") for i in range(5) for coder in ("a", "b")]
    estimate = krippendorff_alpha(constant, "nominal")
    assert estimate.value is None
    assert estimate.n_items == 5


def test_krippendorff_alpha_interval_narrows_with_more_items() -> None:
    small = krippendorff_alpha(_noisy(30, 0.7, seed=1), "nominal", bootstrap=300)
    large = krippendorff_alpha(_noisy(600, 0.7, seed=1), "nominal", bootstrap=300)
    for estimate in (small, large):
        assert estimate.low is not None and estimate.high is not None and estimate.value is not None
        assert estimate.low <= estimate.value <= estimate.high
    assert large.high - large.low < (small.high - small.low) / 2  # type: ignore[operator]


def test_cohen_kappa_matches_the_hand_computation() -> None:
    # 2x2 table [[20, 5], [10, 15]] of 50 items: po = 35/50 = 0.7, pe = (25*30 + 25*20)/50^2 = 0.5 -> 0.4
    cells = [("yes", "yes", 20), ("yes", "no", 5), ("no", "yes", 10), ("no", "no", 15)]
    labels = []
    n = 0
    for first, second, count in cells:
        for _ in range(count):
            labels += [(f"i{n}", "x", first), (f"i{n}", "y", second)]
            n += 1
    estimate = cohen_kappa(labels, "x", "y")
    assert estimate.value == pytest.approx(0.4)
    assert estimate.n_items == 50
    assert estimate.low is not None and estimate.high is not None
    assert estimate.low < 0.4 < estimate.high


def test_cohen_kappa_weighted_uses_value_distances() -> None:
    # x and y differ by one point on every item of 1..5: quadratic kappa stays high, unweighted is negative
    labels = []
    for i, value in enumerate([1, 2, 3, 4, 5, 1, 2, 3, 4, 5]):
        labels += [(f"i{i}", "x", value), (f"i{i}", "y", min(value + 1, 5))]
    weighted = cohen_kappa(labels, "x", "y", weights="quadratic")
    plain = cohen_kappa(labels, "x", "y")
    assert weighted.value is not None and plain.value is not None
    assert weighted.value > 0.75
    assert plain.value < 0.2


def test_cohen_kappa_is_none_with_fewer_than_two_shared_items() -> None:
    estimate = cohen_kappa([("i", "x", 1), ("i", "y", 1), ("j", "x", 2)], "x", "y")
    assert estimate.value is None
    assert estimate.n_items == 1


def test_fleiss_kappa_on_synthetic_raters() -> None:
    good = fleiss_kappa(_noisy(200, 0.9, seed=3), bootstrap=200)
    poor = fleiss_kappa(_noisy(200, 0.2, seed=3), bootstrap=200)
    assert good.value is not None and poor.value is not None
    assert good.value > 0.7
    assert abs(poor.value) < 0.15
    assert good.low is not None and good.high is not None
    assert good.low <= good.value <= good.high
    assert good.n_items == 200
    assert good.method == "fleiss-kappa-3-raters"


def test_fleiss_kappa_keeps_only_items_with_the_common_rater_count() -> None:
    labels = _noisy(50, 0.9, seed=4) + [("extra", "r0", "a"), ("extra", "r1", "b")]
    estimate = fleiss_kappa(labels, bootstrap=0)
    assert estimate.n_items == 50
    assert fleiss_kappa([("i", "a", "x")]).value is None


def test_annotator_agreement_singles_out_the_random_annotator() -> None:
    rng = np.random.default_rng(5)
    labels = []
    for i in range(120):
        truth = int(rng.integers(1, 6))
        for name in ("a", "b", "c"):
            labels.append((f"i{i}", name, truth))
        labels.append((f"i{i}", "random", int(rng.integers(1, 6))))
    result = annotator_agreement(labels, "ordinal", bootstrap=200)
    assert set(result) == {"a", "b", "c", "random"}
    assert result["random"].value is not None and result["a"].value is not None
    assert abs(result["random"].value) < 0.25
    assert result["a"].value > result["random"].value
    assert result["random"].high is not None and result["random"].high < result["a"].value
    assert result["random"].low is not None and result["random"].low <= result["random"].value


def test_annotator_agreement_without_partners_is_none() -> None:
    result = annotator_agreement([("i", "a", "x"), ("j", "b", "y")], "nominal")
    assert result["a"].value is None
    assert result["b"].value is None


def test_gold_accuracy_with_wilson_bounds() -> None:
    gold = {f"g{i}": "yes" for i in range(10)}
    labels = [(f"g{i}", "alice", "yes") for i in range(10)]
    labels += [(f"g{i}", "bob", "yes" if i < 5 else "no") for i in range(10)]
    labels += [("other", "carol", "yes")]
    result = gold_accuracy(labels, gold)
    assert set(result) == {"alice", "bob"}
    assert result["alice"].value == 1.0
    assert result["alice"].high == pytest.approx(1.0)
    assert result["alice"].low == pytest.approx(0.7225, abs=1e-3)  # Wilson lower bound of 10/10
    assert result["bob"].value == 0.5
    assert result["bob"].low == pytest.approx(0.2366, abs=1e-3)
    assert result["bob"].high == pytest.approx(0.7634, abs=1e-3)


def _judge(n: int, overconfident: bool, seed: int) -> list[tuple[int, float, int]]:
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        confidence = float(rng.uniform(0.5, 1.0))
        truth = int(rng.integers(0, 2))
        accuracy = 0.5 if overconfident else confidence
        judged = truth if rng.random() < accuracy else 1 - truth
        pairs.append((judged, 0.99 if overconfident else confidence, truth))
    return pairs


def test_calibration_of_a_calibrated_judge_has_a_small_ece() -> None:
    result = calibration(_judge(4000, overconfident=False, seed=6))
    assert result.ece is not None and result.ece < 0.05
    assert result.n == 4000
    assert sum(b.count for b in result.bins) == 4000
    assert all(0.5 <= b.low < b.high <= 1.0 for b in result.bins)
    assert result.agreement.value is not None and 0.7 < result.agreement.value < 0.8


def test_calibration_of_an_overconfident_judge_has_a_large_ece() -> None:
    result = calibration(_judge(2000, overconfident=True, seed=6))
    assert result.ece is not None and result.ece > 0.2
    assert len(result.bins) == 1
    assert result.bins[0].count == 2000


def test_calibration_without_confidences_has_no_ece() -> None:
    result = calibration([("a", None, "a"), ("b", None, "a")])
    assert result.ece is None
    assert result.bins == []
    assert result.agreement.value == 0.5
    assert calibration([]).agreement.value is None


def test_annotator_agreement_of_two_equals_their_cohen_kappa() -> None:
    labels = _labels(PAPER[:2])
    pair = annotator_agreement(labels, "interval", bootstrap=0)
    weighted = cohen_kappa(labels, "coder0", "coder1", weights="quadratic")
    assert pair["coder0"].value == pytest.approx(weighted.value)
    assert pair["coder1"].value == pytest.approx(weighted.value)
    nominal = annotator_agreement(labels, "nominal", bootstrap=0)
    assert nominal["coder0"].value == pytest.approx(cohen_kappa(labels, "coder0", "coder1").value)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_alpha_of_counts_equals_the_package_on_random_data(level: str) -> None:
    rng = np.random.default_rng(11)
    data = rng.integers(1, 6, size=(4, 40)).astype(float)
    data[rng.random(data.shape) < 0.3] = np.nan
    pairable = data[:, (~np.isnan(data)).sum(axis=0) >= 2]
    counts = np.stack([(pairable == v).sum(axis=0) for v in range(1, 6)], axis=1).astype(float)
    codes = np.arange(1, 6, dtype=float)
    expected = krippendorff.alpha(reliability_data=pairable, level_of_measurement=level, value_domain=codes)
    assert alpha_of_counts(counts, codes, level, np.ones(len(counts))) == pytest.approx(expected)  # type: ignore[arg-type]
    # drawing an item twice is the same as listing it twice
    twice = np.concatenate([counts, counts[:5]])
    weights = np.ones(len(counts))
    weights[:5] = 2
    again = alpha_of_counts(twice, codes, level, np.ones(len(twice)))  # type: ignore[arg-type]
    assert alpha_of_counts(counts, codes, level, weights) == pytest.approx(again)  # type: ignore[arg-type]


def test_fleiss_of_weights_equals_statsmodels() -> None:
    from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss

    rng = np.random.default_rng(12)
    table = np.stack([rng.multinomial(4, [0.5, 0.3, 0.2]) for _ in range(30)]).astype(float)
    [kappa] = fleiss_of_weights(table, np.ones((1, 30)))
    assert kappa == pytest.approx(statsmodels_fleiss(table, method="fleiss"))
