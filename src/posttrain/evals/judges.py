"""Pairwise judges: which of two responses to the same row is better, asked in both orders.

A judge returns, for each row, how much it prefers the response shown *first* (1 first, 0 second,
0.5 a tie; a probability in between is fine). ``judge_both_orders`` asks (candidate, baseline) and
(baseline, candidate) and averages, so a judge that favours a position cancels out. Specs:

- ``verifier:NAME``: the response the verifier scores higher wins (equal scores tie);
- ``model:NAME``: the same with a registered reward model's scores;
- ``function:NAME``: a judge registered in ``posttrain.toml`` ``[functions.judges]``,
  ``f(first, second, **row) -> float`` in [0, 1], ``row`` holding the dataset row (``prompt``,
  ``answer``, ``cohort`` ...). A module path is never accepted from a request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from posttrain import functions
from posttrain.errors import InvalidInput
from posttrain.evals.scorers import Scorer, build_scorer, check_scorer_name
from posttrain.project import Project


class Judge(Protocol):
    """Prefers the first or the second of two responses per row."""

    name: str

    def prefer(self, rows: Sequence[dict[str, Any]], firsts: Sequence[str], seconds: Sequence[str]) -> list[float]:
        """Return, per row, the preference for ``firsts`` in [0, 1] (0.5 a tie)."""
        ...


class ScoreJudge:
    """The response with the higher score wins; equal scores tie."""

    def __init__(self, name: str, scorer: Scorer) -> None:
        self.name = name
        self._scorer = scorer

    def prefer(self, rows: Sequence[dict[str, Any]], firsts: Sequence[str], seconds: Sequence[str]) -> list[float]:
        """Return 1, 0 or 0.5 per row by comparing the two responses' scores."""
        first = self._scorer.score(rows, firsts)
        second = self._scorer.score(rows, seconds)
        return [1.0 if a > b else 0.0 if a < b else 0.5 for a, b in zip(first, second, strict=True)]


class PythonJudge:
    """A registered ``f(first, second, **row) -> float`` in [0, 1]."""

    def __init__(self, name: str, function: Callable[..., Any]) -> None:
        self.name = name
        self._function = function

    def prefer(self, rows: Sequence[dict[str, Any]], firsts: Sequence[str], seconds: Sequence[str]) -> list[float]:
        """Return the function's preference for each first response."""
        return [self._one(row, a, b) for row, a, b in zip(rows, firsts, seconds, strict=True)]

    def _one(self, row: dict[str, Any], first: str, second: str) -> float:
        return functions.call_score(self._function, f"judge {self.name!r}", first, second, **row)


def check_judge_spec(spec: str) -> None:
    """Raise InvalidInput for a judge spec that is not verifier:NAME, model:NAME or function:NAME."""
    kind, _, name = spec.partition(":")
    if kind == "verifier" and name:
        check_scorer_name(name)
    elif kind == "model" and name:
        return
    elif kind == "function" and name:
        functions.check_name(name, what="judge", field="judge")
    else:
        raise InvalidInput(
            f"judge {spec!r} must be verifier:NAME, model:NAME or function:NAME "
            "(a judge registered in posttrain.toml [functions.judges]); module paths are not accepted",
            field="judge",
        )


def default_judge(scorers: Sequence[str]) -> str:
    """Return the judge a suite uses when it names none: its first scorer, compared pairwise."""
    first = scorers[0]
    return first if first.startswith("model:") else f"verifier:{first}"


def build_judge(project: Project, spec: str) -> Judge:
    """Return the judge ``spec`` names (loading a reward model for ``model:NAME``)."""
    check_judge_spec(spec)
    kind, _, name = spec.partition(":")
    if kind == "function":
        return PythonJudge(spec, functions.load(project.settings.functions.judges, "judges", name, field="judge"))
    return ScoreJudge(spec, build_scorer(project, spec if kind == "model" else name))


def judge_both_orders(
    judge: Judge, rows: Sequence[dict[str, Any]], candidate: Sequence[str], baseline: Sequence[str]
) -> list[float]:
    """Return the candidate's outcome per row, averaged over both presentation orders."""
    shown_first = judge.prefer(rows, candidate, baseline)
    shown_second = judge.prefer(rows, baseline, candidate)
    return [(a + (1.0 - b)) / 2 for a, b in zip(shown_first, shown_second, strict=True)]
