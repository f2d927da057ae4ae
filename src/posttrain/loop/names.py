"""Cohorts, and the names the loop derives from them for datasets, models, experiments and routes.

A cohort is free text, as it comes on the wire (a gateway header, ``metadata.cohort``): 1–128
characters without control characters. A derived name must pass the name rule (``posttrain.names``),
so it holds the cohort's *part*: the cohort itself when it already is a valid name (``adult`` →
``t-sft-adult``), else a slug with a short hash of the full text, so two cohorts never share one
(``o'brien`` → ``o-brien-1c0e3f2a``).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

from posttrain.errors import InvalidInput
from posttrain.names import name_problem

MAX_COHORT = 128
_SLUG_LENGTH = 40


def _no_control(value: str) -> str:
    bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None:
        raise ValueError(f"cohort {value[:40]!r} holds the control character {bad!r}; remove it")
    return value


Cohort = Annotated[str, StringConstraints(min_length=1, max_length=MAX_COHORT), AfterValidator(_no_control)]
"""A Pydantic field type holding a cohort: 1–128 characters of free text, no control characters."""


def cohort_part(cohort: str) -> str:
    """Return the file-safe form of ``cohort`` that derived names hold: itself when valid, else slug + hash."""
    if name_problem(cohort) is None:
        return cohort
    folded = unicodedata.normalize("NFKD", cohort).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", folded).strip("-").lower()[:_SLUG_LENGTH].strip("-")
    digest = hashlib.sha256(cohort.encode()).hexdigest()[:8]
    return f"{slug}-{digest}" if slug else digest


def loop_name(*parts: str) -> str:
    """Join ``parts`` into the name of something the loop makes; raise InvalidInput when it breaks the rule."""
    name = "-".join(parts)
    if (problem := name_problem(name)) is not None:
        raise InvalidInput(f"the loop cannot name something {name[:60]!r}: {problem}; shorten the recipe's name",
                           field="name")  # fmt: skip
    return name


def route_name(loop: str, cohort: str) -> str:
    """Return the name of the route that serves ``cohort`` for the loop ``loop``."""
    return loop_name(loop, cohort_part(cohort))
