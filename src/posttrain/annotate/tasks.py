"""What annotators are asked: the task types, a queue's config, and the labels each task accepts.

A label arrives as a small JSON object whose keys depend on the queue's task::

    rating    {"rating": 4}                     an integer on the queue's scale
    accept    {"accept": true}                  accept (true) or reject (false)
    rewrite   {"text": "the better answer"}     the answer as it should have been
    pairwise  {"choice": "a"}                   "a", "b" (as shown) or "tie"
    classify  {"categories": ["violence"]}      one category, or several on a ``multi`` queue
    comment   {"text": "..."}                   a free comment

Every label may also carry ``"comment"``. A label that does not fit its queue is an
``InvalidInput`` naming the field (``label.rating``), so the API answers 400 and the page shows
the fix. Pairwise positions are randomised per lease; the stored value records both what was
chosen as shown (``choice``) and which interaction that was (``chosen``), so agreement and
consensus never depend on the order.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from posttrain.errors import InvalidInput
from posttrain.names import Name

TaskType = Literal["rating", "accept", "rewrite", "pairwise", "classify", "comment"]
TASK_TYPES: tuple[TaskType, ...] = ("rating", "accept", "rewrite", "pairwise", "classify", "comment")
QueueState = Literal["open", "paused", "closed"]
Category = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")]

MAX_TEXT = 20_000
MAX_COMMENT = 2_000


class QueueConfig(BaseModel):
    """A queue as an admin creates it: its task, guidelines, label schema and how items are served."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    task: TaskType
    description: Annotated[str, StringConstraints(max_length=1000)] | None = None
    guidelines: Annotated[str, StringConstraints(max_length=MAX_TEXT)] = Field(
        "", description="What annotators should do, in markdown."
    )
    scale: list[Annotated[int, Field(ge=-1_000_000, le=1_000_000)]] = Field(
        default_factory=lambda: [1, 5], min_length=2, max_length=2, description="rating: the lowest and highest rating."
    )
    categories: list[Category] = Field(default_factory=list, max_length=50, description="classify: the categories.")
    multi: bool = Field(False, description="classify: an item may get several categories.")
    flag_categories: list[Category] = Field(
        default_factory=list, max_length=50, description="classify: categories that flag an answer (unsafe ...)."
    )
    overlap: int = Field(1, ge=1, le=10, description="How many distinct annotators label each item.")
    lease_seconds: int = Field(600, ge=5, le=86_400, description="How long an annotator holds an item.")
    priority: Literal["fifo", "random", "active"] = Field(
        "fifo", description="Order of items: oldest first, random, or by active selection's value."
    )
    gold_share: float = Field(0.1, ge=0, le=0.5, description="Share of served items that are gold, while gold lasts.")
    consensus: Literal["majority", "dawid-skene"] = Field(
        "majority", description="How the labels of an item resolve into one."
    )
    judges: list[Name] = Field(
        default_factory=list, max_length=10, description="Judges of posttrain.toml [annotate.judges] that pre-label."
    )

    @model_validator(mode="after")
    def _task_schema(self) -> QueueConfig:
        low, high = self.scale
        if self.task == "rating" and not (low < high and high - low <= 100):
            raise ValueError("scale: give the lowest and highest rating, e.g. [1, 5] (at most 100 apart)")
        if self.task == "classify":
            if len(self.categories) < 2 or len(set(self.categories)) != len(self.categories):
                raise ValueError("categories: a classify queue needs at least 2 distinct categories")
            unknown = sorted(set(self.flag_categories) - set(self.categories))
            if unknown:
                raise ValueError(f"flag_categories: {', '.join(unknown)} not among the categories")
        elif self.categories or self.flag_categories:
            raise ValueError("categories: only a classify queue has categories")
        if self.task == "comment" and self.overlap > 1:
            raise ValueError("overlap: a comment queue collects one comment per item (overlap 1)")
        return self

    def label_schema(self) -> dict[str, Any]:
        """Return what a label of this queue holds (shown to annotators and scripts)."""
        schema: dict[str, Any] = {"task": self.task}
        if self.task == "rating":
            schema["scale"] = self.scale
        if self.task == "classify":
            schema.update(categories=self.categories, multi=self.multi, flag_categories=self.flag_categories)
        return schema


def _bad(key: str, message: str) -> InvalidInput:
    return InvalidInput(f"label.{key}: {message}", field=f"label.{key}")


def _text(label: dict[str, Any], key: str, limit: int) -> str:
    value = label.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _bad(key, "give the text (a non-empty string)")
    if len(value) > limit:
        raise _bad(key, f"at most {limit} characters")
    return value


def _rating(config: QueueConfig, label: dict[str, Any]) -> dict[str, Any]:
    value, (low, high) = label.get("rating"), config.scale
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad("rating", f"give a whole number from {low} to {high}")
    return {"rating": value}


def _accept(config: QueueConfig, label: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(label.get("accept"), bool):
        raise _bad("accept", "give true (accept) or false (reject)")
    return {"accept": label["accept"]}


def _classify(config: QueueConfig, label: dict[str, Any]) -> dict[str, Any]:
    value = label.get("categories")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad("categories", f"give a list of categories from: {', '.join(config.categories)}")
    unknown = sorted(set(value) - set(config.categories))
    if unknown:
        raise _bad("categories", f"unknown {', '.join(unknown)[:200]}; choose from {', '.join(config.categories)}")
    chosen = sorted(set(value), key=config.categories.index)
    if not chosen or (not config.multi and len(chosen) != 1):
        raise _bad("categories", "choose exactly one category" if not config.multi else "choose at least one")
    return {"categories": chosen}


def _choice(label: dict[str, Any]) -> str:
    value = label.get("choice")
    if value not in ("a", "b", "tie"):
        raise _bad("choice", "give 'a' or 'b' (the answer as shown) or 'tie'")
    return str(value)


_KEYS: dict[str, set[str]] = {
    "rating": {"rating"},
    "accept": {"accept"},
    "rewrite": {"text"},
    "pairwise": {"choice"},
    "classify": {"categories"},
    "comment": {"text"},
}


def check_label(config: QueueConfig, label: Any) -> dict[str, Any]:
    """Return the label in its stored form (pairwise without positions yet); raise InvalidInput naming the field."""
    if not isinstance(label, dict):
        raise InvalidInput("label: give a JSON object, e.g. " + _example(config), field="label")
    extra = sorted(set(label) - _KEYS[config.task] - {"comment"})
    if extra:
        raise _bad(
            extra[0][:40], f"not part of a {config.task} label; it holds {', '.join(sorted(_KEYS[config.task]))}"
        )
    task = config.task
    if task == "rating":
        value = _rating(config, label)
    elif task == "accept":
        value = _accept(config, label)
    elif task in ("rewrite", "comment"):
        value = {"text": _text(label, "text", MAX_TEXT)}
    elif task == "pairwise":
        value = {"choice": _choice(label)}
    else:
        value = _classify(config, label)
    if label.get("comment") is not None:
        value["comment"] = _text(label, "comment", MAX_COMMENT)
    return value


def _example(config: QueueConfig) -> str:
    return {
        "rating": f'{{"rating": {config.scale[1]}}}',
        "accept": '{"accept": true}',
        "rewrite": '{"text": "..."}',
        "pairwise": '{"choice": "a"}',
        "classify": f'{{"categories": ["{(config.categories or ["x"])[0]}"]}}',
        "comment": '{"text": "..."}',
    }[config.task]


def place_choice(value: dict[str, Any], shown: tuple[str, str | None]) -> dict[str, Any]:
    """Add which interaction a pairwise choice picked, given the (A, B) interaction ids as shown."""
    choice = value["choice"]
    chosen = None if choice == "tie" else shown[0] if choice == "a" else shown[1]
    return {**value, "chosen": chosen}


def vote(task: TaskType, value: dict[str, Any]) -> Any:
    """Return the hashable part of a label that annotators agree or disagree on (None: free text)."""
    if task == "rating":
        return value["rating"]
    if task == "accept":
        return value["accept"]
    if task == "pairwise":
        return value.get("chosen") or "tie"
    if task == "classify":
        return tuple(value["categories"])
    return None
