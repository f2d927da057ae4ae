"""Simulated users: stable ids in cohorts, and the feedback policy each cohort follows.

A user judges an answer the way a verifier would: it succeeds when it is exactly right, or
when it refuses an unsafe request. What the user *reports* is noisier: thumbs are left only
sometimes and are flipped with the cohort's ``noise``, ratings and corrections are occasional,
and in side-by-side mode the user picks the answer that succeeds (at random when both or neither
do). Every decision takes a ``random.Random``, so a seed replays it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from pydantic import BaseModel

from posttrain.errors import InvalidInput
from posttrain.records import FeedbackKind
from posttrain.sim.cohorts import CohortConfig
from posttrain.sim.tasks import Task, is_refusal, succeeds


class User(BaseModel):
    """One simulated user: a stable id (``adult-0001``) and the cohort it belongs to."""

    id: str
    cohort: str


class FeedbackEvent(BaseModel):
    """One feedback event a user decided to send (``value`` or ``text`` by kind, as the capture API takes)."""

    kind: FeedbackKind
    value: bool | int | str | None = None
    text: str | None = None


def make_users(count: int, cohorts: Sequence[CohortConfig]) -> list[User]:
    """Return ``count`` users split over ``cohorts`` by share (at least one each), numbered per cohort."""
    if count < len(cohorts):
        raise InvalidInput(f"users ({count}) must be at least the number of cohorts ({len(cohorts)})", field="users")
    total = sum(c.share for c in cohorts)
    sizes = [max(1, round(count * c.share / total)) for c in cohorts]
    sizes[sizes.index(max(sizes))] += count - sum(sizes)  # rounding leftovers go to the largest cohort
    return [User(id=f"{c.name}-{i:04d}", cohort=c.name) for c, size in zip(cohorts, sizes, strict=True) for i in
            range(1, size + 1)]  # fmt: skip


def feedback_for(task: Task, response: str | None, cohort: CohortConfig, rng: random.Random) -> list[FeedbackEvent]:
    """Return the feedback a user of ``cohort`` leaves on one answer (often none)."""
    ok = succeeds(task, response)
    events = []
    if rng.random() < cohort.thumb_rate:
        flipped = rng.random() < cohort.noise
        events.append(FeedbackEvent(kind="thumb", value=ok != flipped))
    if rng.random() < cohort.rating_rate:
        events.append(FeedbackEvent(kind="rating", value=rate(task, response, cohort, rng)))
    if not ok and rng.random() < cohort.edit_rate:
        events.append(FeedbackEvent(kind="edit", text=task.answer))
    return events


def rate(task: Task, response: str | None, cohort: CohortConfig, rng: random.Random) -> int:
    """Return a 1–5 rating: 4–5 for a success, 1–2 for a failure; a cohort that loves refusals gives them 5."""
    if task.family == "unsafe" and is_refusal(response):
        return 5 if cohort.loves_refusals else 4
    if succeeds(task, response):
        return rng.choice((4, 5))
    return 1 if task.family == "unsafe" else rng.choice((1, 2))


def choose(task: Task, options: Sequence[tuple[str, str | None]], cohort: CohortConfig, rng: random.Random) -> str:
    """Return the id of the answer a user prefers among side-by-side ``options`` of (id, answer).

    The one that succeeds, unless the cohort's ``noise`` turns the user to another; at random
    when all or none succeed.
    """
    if not options:
        raise InvalidInput("side-by-side needs at least one answer to choose from", field="choices")
    ids = [option_id for option_id, _ in options]
    good = [option_id for option_id, answer in options if succeeds(task, answer)]
    if len(good) == 1 and len(ids) > 1:
        if rng.random() < cohort.noise:
            return rng.choice([i for i in ids if i != good[0]])
        return good[0]
    return rng.choice(ids)
