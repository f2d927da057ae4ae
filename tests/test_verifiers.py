"""Verifiers: built-in names, numeric tolerance, registered Python verifiers, and one-line errors."""

from __future__ import annotations

import sys

import pytest

from posttrain.errors import InvalidInput
from posttrain.evals.verifiers import get_verifier, list_verifiers


def half(completion: str, answer: str | None, **row: object) -> float:
    """A Python verifier, registered by name."""
    return 0.5


def too_big(completion: str, answer: str | None, **row: object) -> float:
    return 2.0


def nothing(completion: str, answer: str | None, **row: object) -> None:
    return None


def no_kwargs(completion: str) -> float:
    return 1.0


REGISTRY = {
    "half": f"{__name__}:half",
    "too_big": f"{__name__}:too_big",
    "nothing": f"{__name__}:nothing",
    "no_kwargs": f"{__name__}:no_kwargs",
    "missing": "posttrain.errors:missing",
    "nope": "nope_module_xyz:f",
}


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
        ("half", "x", None, 0.5),
    ],
)
def test_get_verifier_scores(name: str, completion: str, answer: str | None, score: float) -> None:
    assert get_verifier(name, REGISTRY)(completion, answer) == score


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
        ("nope", "cannot import 'nope_module_xyz'"),
        ("missing", "no function 'missing'"),
        ("python:posttrain.errors:missing", "module paths are not accepted"),
        ("python:.relative:f", "module paths are not accepted"),
        ("os:system", "module paths are not accepted"),
        ("os.system", "module paths are not accepted"),
        ("a b", "a name is letters"),
    ],
)
def test_get_verifier_bad_name_one_line(name: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        get_verifier(name, REGISTRY)
    assert "\n" not in info.value.message


@pytest.mark.parametrize("name", ["python:pt_never_imported_a:f", "pt_never_imported_b:f", "python:pt_never_imported"])
def test_module_path_is_refused_before_any_import(name: str) -> None:
    with pytest.raises(InvalidInput, match="module paths are not accepted"):
        get_verifier(name, {})
    assert not [m for m in sys.modules if m.startswith("pt_never_imported")]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("too_big", r"returned 2.0, outside \[0, 1\]"),
        ("nothing", "returned NoneType, not a number"),
        ("no_kwargs", "could not be called with these arguments"),
    ],
)
def test_registered_verifier_misbehaving_is_invalid_input(name: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        get_verifier(name, REGISTRY)("x", None, cohort="a")


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
