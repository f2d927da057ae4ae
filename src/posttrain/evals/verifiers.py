"""Verifiers: score a completion against a reference answer, in [0, 1].

A verifier is ``f(completion, answer, **row) -> float``; ``row`` carries the dataset row's other
columns. Names are what ``prompts`` datasets store in their ``verifier`` column and what
``--verifier`` / ``--reward verifier:NAME`` take:

- ``exact_match``: 1 when the stripped completion equals the stripped answer.
- ``numeric`` (or ``numeric:TOL``): 1 when the last number in the completion is within ``TOL``
  (absolute, default 1e-6) of the answer; a row's ``tolerance`` column overrides ``TOL``.
- ``regex``: 1 when the answer, read as a regular expression, is found in the completion
  (anchor it with ``^...$`` for a full match).
- ``contains``: 1 when the answer occurs in the completion.
- ``python:MODULE:FUNCTION``: any importable function with the verifier signature.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable
from functools import partial
from typing import Any

from posttrain.errors import InvalidInput

Verifier = Callable[..., float]

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def exact_match(completion: str, answer: str | None, **row: Any) -> float:
    """Score 1 when the completion equals the answer, ignoring surrounding whitespace."""
    return float(answer is not None and completion.strip() == str(answer).strip())


def numeric(
    completion: str, answer: str | None, *, tolerance: float | None = None, default_tolerance: float = 1e-6, **row: Any
) -> float:
    """Score 1 when the completion's last number is within ``tolerance`` (else ``default_tolerance``) of the answer."""
    if answer is None:
        return 0.0
    found = _NUMBER.findall(completion)
    try:
        expected = float(str(answer).strip())
    except ValueError:
        raise InvalidInput(
            f"numeric verifier: answer {answer!r} is not a number; use exact_match", field="answer"
        ) from None
    if not found:
        return 0.0
    return float(
        math.isclose(
            float(found[-1]), expected, rel_tol=0.0, abs_tol=default_tolerance if tolerance is None else tolerance
        )
    )


def regex(completion: str, answer: str | None, **row: Any) -> float:
    """Score 1 when the answer, as a regular expression, is found in the completion."""
    if answer is None:
        return 0.0
    try:
        return float(re.search(str(answer), completion) is not None)
    except re.error as exc:
        raise InvalidInput(
            f"regex verifier: answer {answer!r} is not a valid pattern ({exc})", field="answer"
        ) from None


def contains(completion: str, answer: str | None, **row: Any) -> float:
    """Score 1 when the answer occurs in the completion."""
    return float(answer is not None and str(answer) in completion)


VERIFIERS: dict[str, Verifier] = {
    "exact_match": exact_match,
    "numeric": numeric,
    "regex": regex,
    "contains": contains,
}


def _import_verifier(name: str) -> Verifier:
    _, module_name, function_name = (name.split(":", 2) + ["", ""])[:3]
    if not module_name or not function_name:
        raise InvalidInput(f"verifier {name!r} must look like python:MODULE:FUNCTION", field="verifier")
    return import_callable(module_name, function_name, what=f"verifier {name!r}")


def import_callable(module_name: str, function_name: str, *, what: str) -> Callable[..., Any]:
    """Import ``module_name.function_name``; raise InvalidInput naming the fix when it cannot."""
    try:
        module = importlib.import_module(module_name)
    except (ImportError, TypeError, ValueError) as exc:  # TypeError/ValueError: a relative or empty module name
        raise InvalidInput(
            f"{what}: cannot import module {module_name!r} ({exc}); install it or add its folder to PYTHONPATH",
            field="reward",
        ) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise InvalidInput(f"{what}: module {module_name!r} has no function {function_name!r}", field="reward")
    return function  # type: ignore[no-any-return]


def _checked(verifier: Verifier, name: str, completion: str, answer: str | None, **row: Any) -> float:
    score = float(verifier(completion, answer, **row))
    if not 0.0 <= score <= 1.0:
        raise InvalidInput(f"verifier {name!r} returned {score}, outside [0, 1]; make it return a score in [0, 1]")
    return score


def get_verifier(name: str) -> Verifier:
    """Return the verifier called ``name``; raise InvalidInput naming the known ones."""
    if name.startswith("python:"):
        return partial(_checked, _import_verifier(name), name)
    base, _, tolerance = name.partition(":")
    if base == "numeric" and tolerance:
        try:
            return partial(numeric, default_tolerance=float(tolerance))
        except ValueError:
            raise InvalidInput(f"verifier {name!r}: tolerance must be a number, as in numeric:0.01") from None
    if name not in VERIFIERS:
        known = ", ".join([*VERIFIERS, "numeric:TOL", "python:MODULE:FUNCTION"])
        raise InvalidInput(f"unknown verifier {name!r}; use one of {known}", field="verifier")
    return VERIFIERS[name]


def list_verifiers() -> list[str]:
    """Return the names of the built-in verifiers."""
    return list(VERIFIERS)
