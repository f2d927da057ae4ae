"""Turns and their steps as the warehouse keeps them (``loop_turns``, ``loop_steps``), and a turn on its way.

``runner`` starts, resumes and finishes turns; ``steps`` read what earlier steps produced through
``Turn.result``. Both import this module, never each other's internals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, Field, model_validator

from posttrain.loop.names import loop_name
from posttrain.loop.recipe import Recipe
from posttrain.loop.results import RESULTS, STEPS, AnyStepResult, ExperimentResult, StepResult, TrainResult
from posttrain.project import Project
from posttrain.records import UtcTime

TurnState = Literal["running", "done", "rejected", "failed"]
StepState = Literal["running", "done", "skipped", "failed"]
Events = Callable[[str, str], None]  # (step, message)
R = TypeVar("R", bound=StepResult)


class StepRecord(BaseModel):
    """One step of a turn as stored; ``result`` is that step's own record (see ``posttrain.loop.results``)."""

    step: str
    state: StepState
    result: AnyStepResult | None = None
    error: str | None = None
    seconds: float | None = None
    started_at: UtcTime
    finished_at: UtcTime | None = None

    @model_validator(mode="before")
    @classmethod
    def _typed_result(cls, data: Any) -> Any:
        """Read a stored (or sent) result as the record of its step."""
        if isinstance(data, dict) and isinstance(data.get("result"), dict):
            kind = RESULTS.get(str(data.get("step")))
            if kind is None:
                raise ValueError(f"unknown loop step {data.get('step')!r}; the steps are {', '.join(STEPS)}")
            data = {**data, "result": kind.model_validate(data["result"])}
        return data


class TurnRecord(BaseModel):
    """One turn as stored, with its steps in order."""

    id: str
    loop: str
    turn: int
    state: TurnState
    recipe: dict[str, Any]
    window_start: UtcTime | None
    window_end: UtcTime | None
    serving: dict[str, str] = Field(description="cohort → model when the turn started")
    result: dict[str, Any] | None = Field(None, description="serving after the turn, and its last step's outcome")
    error: str | None = None
    started_at: UtcTime
    finished_at: UtcTime | None = None
    steps: list[StepRecord] = Field(default_factory=list)

    def step(self, name: str) -> StepRecord | None:
        return next((s for s in self.steps if s.step == name), None)


def to_json(value: Any) -> str:
    """Return ``value`` as the JSON text a warehouse JSON column takes."""
    return orjson.dumps(value, default=str).decode()


def read_turns(project: Project, loop: str) -> list[TurnRecord]:
    """Return every turn of ``loop`` with its steps, oldest first."""
    cur = project.cursor()
    result = cur.execute("SELECT * FROM loop_turns WHERE loop = ? ORDER BY turn", [loop])
    columns = [d[0] for d in result.description]
    turns = []
    for row in result.fetchall():
        data = dict(zip(columns, row, strict=True))
        for key in ("recipe", "serving", "result"):
            data[key] = orjson.loads(data[key]) if data[key] else None
        turns.append(TurnRecord(**data, steps=_read_steps(project, data["id"])))
    return turns


def _read_steps(project: Project, turn_id: str) -> list[StepRecord]:
    steps = project.cursor().execute("SELECT * FROM loop_steps WHERE turn_id = ?", [turn_id])
    columns = [d[0] for d in steps.description]
    records = []
    for row in steps.fetchall():
        step = dict(zip(columns, row, strict=True))
        step.pop("turn_id")
        step["result"] = orjson.loads(step["result"]) if step["result"] else None
        records.append(StepRecord(**step))
    return sorted(records, key=lambda s: STEPS.index(s.step) if s.step in STEPS else len(STEPS))


def update_turn(project: Project, turn: TurnRecord, **fields: Any) -> None:
    """Set ``fields`` of the turn, in the warehouse and on ``turn``."""
    sets = ", ".join(f"{k} = ?" for k in fields)
    values = [to_json(v) if k in ("result", "serving") and v is not None else v for k, v in fields.items()]
    project.cursor().execute(f"UPDATE loop_turns SET {sets} WHERE id = ?", [*values, turn.id])
    for key, value in fields.items():
        setattr(turn, key, value)


def record_step(project: Project, turn: TurnRecord, step: StepRecord) -> None:
    """Store ``step`` of the turn, replacing an earlier record of the same step."""
    result = None if step.result is None else step.result.model_dump_json()
    cur = project.cursor()
    cur.execute("DELETE FROM loop_steps WHERE turn_id = ? AND step = ?", [turn.id, step.step])
    cur.execute(
        "INSERT INTO loop_steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [turn.id, step.step, step.state, result, step.error, step.seconds, step.started_at, step.finished_at],
    )
    turn.steps = [s for s in turn.steps if s.step != step.step] + [step]


class Turn:
    """A turn on its way: the record, the recipe, what earlier steps produced."""

    def __init__(
        self,
        project: Project,
        recipe: Recipe,
        record: TurnRecord,
        traffic: Callable[[Turn], None] | None,
        on_event: Events | None,
        annotators: Callable[[Turn, str], None] | None = None,
    ) -> None:
        self.project, self.recipe, self.record = project, recipe, record
        self.traffic, self.on_event = traffic, on_event
        self.annotators = annotators  # labels the queue the annotate step filled (simulated annotators)

    @property
    def number(self) -> int:
        return self.record.turn

    def result(self, step: str, kind: type[R]) -> R:
        """Return what ``step`` produced, as its record ``kind``; an empty record when it has not run."""
        found = self.record.step(step)
        if found is None or found.result is None:
            return kind()
        if not isinstance(found.result, kind):
            raise TypeError(f"step {step} holds a {type(found.result).__name__}, not a {kind.__name__}")
        return found.result

    def say(self, step: str, message: str) -> None:
        if self.on_event is not None:
            self.on_event(step, message)

    def name(self, *parts: str) -> str:
        """Return the name of something this turn makes: ``RECIPE-tN-PART…`` (parts already file-safe)."""
        return loop_name(self.recipe.name, f"t{self.number}", *parts)

    @property
    def parent(self) -> str:
        return self.record.serving[self.recipe.cohorts[0]]

    def candidate(self) -> str:
        """The model the training steps have produced so far (the parent when none trained)."""
        for step in ("grpo", "dpo", "sft"):
            model = self.result(step, TrainResult).model
            if model:
                return model
        return self.parent

    def experiments(self) -> dict[str, str | None]:
        """cohort → the experiment this turn started for it."""
        return dict(self.result("experiment", ExperimentResult).experiments)
