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
- ``NAME``: a function registered in ``posttrain.toml`` ``[functions.verifiers]`` (see
  ``posttrain.functions``); a module path is never accepted from a request.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from posttrain import functions
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


def _registered(function: Verifier, name: str, completion: str, answer: str | None, **row: Any) -> float:
    return functions.call_score(function, f"verifier {name!r}", completion, answer, **row)


def _numeric_with(name: str, tolerance: str) -> Verifier:
    try:
        return partial(numeric, default_tolerance=float(tolerance))
    except ValueError:
        message = f"verifier {name!r}: tolerance must be a number, as in numeric:0.01"
        raise InvalidInput(message, field="verifier") from None


def check_verifier_name(name: str) -> None:
    """Refuse a verifier name that is neither built in, ``numeric:TOL`` nor a plain registered name."""
    base, colon, tolerance = name.partition(":")
    if base == "numeric" and colon:
        _numeric_with(name, tolerance)
    elif name not in VERIFIERS:
        functions.check_name(name, what="verifier", field="verifier")


def validated_name(value: str | None) -> str | None:
    """A pydantic field validator's body: ``value`` if it is a verifier name ``check_verifier_name`` takes,
    else ValueError with its message (pydantic names the field)."""
    if value is not None:
        try:
            check_verifier_name(value)
        except InvalidInput as exc:
            raise ValueError(exc.message) from None
    return value


def get_verifier(name: str, registry: Mapping[str, str] | None = None) -> Verifier:
    """Return the verifier called ``name``: built in, ``numeric:TOL``, or registered in ``registry``."""
    check_verifier_name(name)
    base, colon, tolerance = name.partition(":")
    if base == "numeric" and colon:
        return _numeric_with(name, tolerance)
    if name in VERIFIERS:
        return VERIFIERS[name]
    if registry and name in registry:
        return partial(_registered, functions.load(registry, "verifiers", name, field="verifier"), name)
    known = ", ".join([*VERIFIERS, "numeric:TOL", *(registry or {})])
    raise InvalidInput(
        f"unknown verifier {name!r}; use one of {known}, or register one in posttrain.toml [functions.verifiers]",
        field="verifier",
    )


def list_verifiers() -> list[str]:
    """Return the names of the built-in verifiers."""
    return list(VERIFIERS)
