"""The annotation stage's records: queues, items as an annotator sees them, assignments and labels."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from posttrain.annotate.tasks import QueueConfig, QueueState, TaskType
from posttrain.records import UtcTime

LabelSource = Literal["annotator", "judge"]


class Queue(QueueConfig):
    """A stored queue: its config plus state and versions (a label records both versions)."""

    id: str
    state: QueueState
    version: int = Field(description="Bumps when the config changes.")
    guidelines_version: int = Field(description="Bumps when the guidelines change.")
    created_by: str | None = None
    created_at: UtcTime
    updated_at: UtcTime


class QueueSummary(Queue):
    """A queue with its counts."""

    items: int = 0
    done: int = 0
    gold: int = 0
    labels: int = 0
    active_leases: int = 0


class FillResult(BaseModel):
    """What a fill added to a queue."""

    queue: str
    added: int
    existing: int = Field(0, description="Candidates already in the queue, not added again.")
    origin: str


class ItemView(BaseModel):
    """An item as an annotator sees it: the conversation and the answer(s) to judge."""

    item_id: str
    interaction_id: str
    second_interaction_id: str | None = None
    prompt: list[dict[str, Any]] = Field(description="The conversation before the answer (OpenAI chat messages).")
    response: str | None = Field(None, description="The answer to judge (pairwise: answer A).")
    answers: list[str | None] = Field(
        default_factory=list, description="pairwise: answers A and B in the order shown to this annotator."
    )
    cohort: str | None = None


class Progress(BaseModel):
    """How far an annotator and the queue are."""

    labelled_by_you: int
    remaining: int


class Assignment(BaseModel):
    """An item leased to one annotator until ``expires_at``; submit or skip it through its lease."""

    lease_id: str
    queue: str
    task: TaskType
    started_at: UtcTime
    expires_at: UtcTime
    item: ItemView
    label_schema: dict[str, Any]
    guidelines_version: int
    progress: Progress


class Label(BaseModel):
    """One annotator's (or judge's) answer on one item."""

    id: str
    queue_id: str
    item_id: str
    lease_id: str | None = None
    interaction_id: str
    annotator: str
    source: LabelSource
    value: dict[str, Any]
    confidence: float | None = None
    seconds: float | None = None
    queue_version: int
    guidelines_version: int
    created_at: UtcTime
