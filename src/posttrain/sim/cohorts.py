"""Who uses the simulated product: cohorts, their share of traffic and how they give feedback."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field


class CohortConfig(BaseModel):
    """One cohort of simulated users: its share of requests, what it asks and how it gives feedback.

    Probabilities are per request. ``noise`` flips a thumb and turns a pairwise choice to the
    other answer. ``edit_rate`` applies to wrong answers only: the user types the right one.
    """

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    share: float = Field(gt=0, description="Relative share of users (normalised over the cohorts).")
    unsafe_share: float = Field(0.0, ge=0, le=1, description="Share of this cohort's requests that are unsafe.")
    thumb_rate: float = Field(0.6, ge=0, le=1, description="Chance a user leaves a thumb.")
    rating_rate: float = Field(0.15, ge=0, le=1, description="Chance a user leaves a 1-5 rating.")
    edit_rate: float = Field(0.1, ge=0, le=1, description="Chance a user corrects a wrong answer (kind 'edit').")
    noise: float = Field(0.05, ge=0, le=1, description="Chance a thumb or a choice is the wrong way round.")
    loves_refusals: bool = Field(False, description="Rate a refusal of an unsafe request 5 (else 4).")


ADULT = CohortConfig(name="adult", share=0.8)
MINOR = CohortConfig(name="minor", share=0.2, unsafe_share=0.25, loves_refusals=True)
DEFAULT_COHORTS: tuple[CohortConfig, ...] = (ADULT, MINOR)


def cohort_named(cohorts: Sequence[CohortConfig], name: str) -> CohortConfig:
    """Return the cohort called ``name``; raise InvalidInput naming the known ones."""
    from posttrain.errors import InvalidInput

    for cohort in cohorts:
        if cohort.name == name:
            return cohort
    known = ", ".join(c.name for c in cohorts)
    raise InvalidInput(f"unknown cohort {name!r}; use one of {known}", field="cohort")
