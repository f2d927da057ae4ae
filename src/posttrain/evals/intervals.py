"""Means with 95% confidence intervals, overall and per slice (cohort, task family).

The unit is a prompt: a prompt's value is the mean over its samples, so samples of one prompt
never count as independent evidence. When every value is 0 or 1 (one sample, a pass/fail
verifier) the interval is Wilson's score interval; otherwise it is the normal one,
mean ± 1.96·sd/√n (sd with ddof 1), which needs two prompts or more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Literal

from pydantic import BaseModel, Field

from posttrain.stats import win_rate

_Z = NormalDist().inv_cdf(0.975)


class Estimate(BaseModel):
    """A mean over ``n`` prompts with its 95% interval; ``method`` says which interval."""

    n: int
    mean: float
    ci_low: float | None = Field(None, description="None when the interval cannot be estimated (n < 2, normal)")
    ci_high: float | None = None
    method: Literal["wilson", "normal"]


class Slices(BaseModel):
    """One measure overall, per cohort and per task family."""

    overall: Estimate
    cohorts: dict[str, Estimate] = Field(default_factory=dict)
    families: dict[str, Estimate] = Field(default_factory=dict)


def estimate(values: Sequence[float], *, wilson_ok: bool = True) -> Estimate:
    """Return the mean of ``values`` with a Wilson (all 0/1) or normal 95% interval."""
    n = len(values)
    mean = math.fsum(values) / n
    if wilson_ok and all(v in (0.0, 1.0) for v in values):
        wins = int(sum(values))
        rate = win_rate(wins, n - wins)
        return Estimate(n=n, mean=mean, ci_low=rate.ci_low, ci_high=rate.ci_high, method="wilson")
    if n < 2:
        return Estimate(n=n, mean=mean, method="normal")
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = _Z * sd / math.sqrt(n)
    return Estimate(n=n, mean=mean, ci_low=mean - half, ci_high=mean + half, method="normal")


def win_estimate(outcomes: Sequence[float]) -> Estimate:
    """Return a win rate: Wilson over wins, losses and ties when outcomes are 0, ½ or 1, else normal."""
    if all(v in (0.0, 0.5, 1.0) for v in outcomes):
        wins, ties = outcomes.count(1.0), outcomes.count(0.5)
        rate = win_rate(wins, len(outcomes) - wins - ties, ties)
        return Estimate(n=rate.n, mean=rate.rate, ci_low=rate.ci_low, ci_high=rate.ci_high, method="wilson")
    return estimate(outcomes, wilson_ok=False)


def slice_values(
    values: Sequence[float], cohorts: Sequence[str], families: Sequence[str], *, kind: Literal["mean", "win", "diff"]
) -> Slices:
    """Return ``values`` (one per prompt) estimated overall, per cohort and per family.

    ``kind``: ``mean`` (a score), ``win`` (a judge's outcomes), ``diff`` (paired differences, normal only).
    """

    def one(part: Sequence[float]) -> Estimate:
        if kind == "win":
            return win_estimate(part)
        return estimate(part, wilson_ok=kind == "mean")

    def by(keys: Sequence[str]) -> dict[str, Estimate]:
        groups: dict[str, list[float]] = {}
        for key, value in zip(keys, values, strict=True):
            groups.setdefault(key, []).append(value)
        return {key: one(groups[key]) for key in sorted(groups)}

    return Slices(overall=one(values), cohorts=by(cohorts), families=by(families))
