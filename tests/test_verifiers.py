"""Verifiers: built-in names, numeric tolerance, Python verifiers, and one-line errors."""

from __future__ import annotations

import pytest

from posttrain.errors import InvalidInput
from posttrain.evals.verifiers import get_verifier, list_verifiers


def half(completion: str, answer: str | None, **row: object) -> float:
    """A Python verifier for the python:MODULE:FUNCTION form."""
    return 0.5


def too_big(completion: str, answer: str | None, **row: object) -> float:
    return 2.0


@pytest.mark.parametrize(
    ("name", "completion", "answer", "score"),
    [
        ("exact_match", " 46\n", "46", 1.0),
        ("exact_match", "46.", "46", 0.0),
        ("exact_match", "46", None, 0.0),
        ("numeric", "the sum is 46", "46", 1.0),
        ("numeric", "46.0000001", "46", 1.0),
        ("numeric", "45 or 47", "46", 0.0),
        ("numeric", "no number", "46", 0.0),
        ("numeric", "-1.5e2", "-150", 1.0),
        ("numeric:0.5", "4.3", "4", 1.0),
        ("numeric:0.1", "4.3", "4", 0.0),
        ("regex", "abc123", r"^abc\d+$", 1.0),
        ("regex", "xabc", "^abc", 0.0),
        ("contains", "it is 7!", "7", 1.0),
        ("contains", "it is 8", "7", 0.0),
        (f"python:{__name__}:half", "x", None, 0.5),
    ],
)
def test_get_verifier_scores(name: str, completion: str, answer: str | None, score: float) -> None:
    assert get_verifier(name)(completion, answer) == score


def test_numeric_row_tolerance_overrides_default() -> None:
    assert get_verifier("numeric")("4.3", "4", tolerance=0.5) == 1.0
    assert get_verifier("numeric:0.5")("4.3", "4", tolerance=0.1) == 0.0
    assert get_verifier("numeric:0.5")("4.3", "4", tolerance=None) == 1.0


def test_verifier_ignores_extra_row_columns() -> None:
    assert get_verifier("exact_match")("a", "a", prompt=[], cohort="x") == 1.0


def test_list_verifiers_names_builtins() -> None:
    assert list_verifiers() == ["exact_match", "numeric", "regex", "contains"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("fuzzy", r"unknown verifier 'fuzzy'; use one of exact_match, numeric, regex, contains"),
        ("numeric:loose", "tolerance must be a number, as in numeric:0.01"),
        ("python:nope_module_xyz:f", "cannot import module 'nope_module_xyz'"),
        ("python:.relative:f", "cannot import module '.relative'"),
        ("python:posttrain.errors:missing", "has no function 'missing'"),
        ("python:only_module", "must look like python:MODULE:FUNCTION"),
    ],
)
def test_get_verifier_bad_name_one_line(name: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        get_verifier(name)
    assert "\n" not in info.value.message


@pytest.mark.parametrize(
    ("name", "answer", "message"),
    [
        ("numeric", "forty", "answer 'forty' is not a number; use exact_match"),
        ("regex", "(", "is not a valid pattern"),
    ],
)
def test_verifier_bad_answer_names_fix(name: str, answer: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        get_verifier(name)("1", answer)


def test_python_verifier_outside_unit_interval_rejected() -> None:
    with pytest.raises(InvalidInput, match=r"returned 2.0, outside \[0, 1\]"):
        get_verifier(f"python:{__name__}:too_big")("x", None)
