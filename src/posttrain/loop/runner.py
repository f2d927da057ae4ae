"""One turn of the flywheel, step by step, each step recorded so a killed loop resumes where it stopped.

A turn: ``collect`` (the window of new interactions and feedback since the last turn) →
``datasets`` (SFT rows, preference pairs, RL prompts, per-cohort SFT rows) → ``sft`` → ``reward``
(when enough new pairs) → ``dpo`` → ``grpo`` → ``specialise`` (a cohort's own model) →
``evaluate`` + ``gate`` (against each cohort's serving model) → ``experiment`` (an A/B test per
cohort, through the gateway's routes) → ``traffic`` (wait for, or make, enough of it) →
``decide`` (promote, or keep serving). The loop keeps one route per cohort, ``LOOP-COHORT``, from
the product's model name to that cohort's serving model.

A step that finished is never redone; a failed step stops the turn with a message naming the step
and the cause, and the next run starts from it. A candidate that fails its gate is recorded as
rejected, with the reasons, and the serving models stay.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field

from posttrain import experiments, routing
from posttrain.errors import InvalidInput, NotFound, PosttrainError
from posttrain.ids import new_id
from posttrain.loop.recipe import Recipe
from posttrain.models.registry import find_model
from posttrain.project import Project
from posttrain.records import UtcTime

STEPS = (
    "collect",
    "datasets",
    "sft",
    "reward",
    "dpo",
    "grpo",
    "specialise",
    "evaluate",
    "gate",
    "experiment",
    "traffic",
    "decide",
)
TurnState = Literal["running", "done", "rejected", "failed"]
StepState = Literal["running", "done", "skipped", "failed"]
Events = Callable[[str, str], None]  # (step, message)


class LoopStepFailed(PosttrainError):
    """A step of a turn failed; the next ``loop run`` resumes from it."""

    status = 500


class StepRecord(BaseModel):
    step: str
    state: StepState
    result: dict[str, Any] | None = None
    error: str | None = None
    seconds: float | None = None
    started_at: UtcTime
    finished_at: UtcTime | None = None


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
    result: dict[str, Any] | None = None
    error: str | None = None
    started_at: UtcTime
    finished_at: UtcTime | None = None
    steps: list[StepRecord] = Field(default_factory=list)

    def step(self, name: str) -> StepRecord | None:
        return next((s for s in self.steps if s.step == name), None)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


# --- storage ----------------------------------------------------------------------------------


def _turns(project: Project, loop: str) -> list[TurnRecord]:
    cur = project.cursor()
    result = cur.execute("SELECT * FROM loop_turns WHERE loop = ? ORDER BY turn", [loop])
    columns = [d[0] for d in result.description]
    turns = []
    for row in result.fetchall():
        data = dict(zip(columns, row, strict=True))
        for key in ("recipe", "serving", "result"):
            data[key] = orjson.loads(data[key]) if data[key] else None
        steps = cur.execute("SELECT * FROM loop_steps WHERE turn_id = ?", [data["id"]])
        step_columns = [d[0] for d in steps.description]
        records = []
        for step_row in steps.fetchall():
            step = dict(zip(step_columns, step_row, strict=True))
            step.pop("turn_id")
            step["result"] = orjson.loads(step["result"]) if step["result"] else None
            records.append(StepRecord(**step))
        records.sort(key=lambda s: STEPS.index(s.step) if s.step in STEPS else len(STEPS))
        turns.append(TurnRecord(**data, steps=records))
    return turns


def status(project: Project, loop: str | None = None) -> list[TurnRecord]:
    """Return every turn of ``loop`` (default: every loop), oldest first."""
    if loop is not None:
        return _turns(project, loop)
    names = [r[0] for r in project.cursor().execute("SELECT DISTINCT loop FROM loop_turns ORDER BY 1").fetchall()]
    return [t for name in names for t in _turns(project, name)]


def _update_turn(project: Project, turn: TurnRecord, **fields: Any) -> None:
    sets = ", ".join(f"{k} = ?" for k in fields)
    values = [_json(v) if k in ("result", "serving") and v is not None else v for k, v in fields.items()]
    project.cursor().execute(f"UPDATE loop_turns SET {sets} WHERE id = ?", [*values, turn.id])
    for key, value in fields.items():
        setattr(turn, key, value)


def _record_step(project: Project, turn: TurnRecord, step: StepRecord) -> None:
    cur = project.cursor()
    cur.execute("DELETE FROM loop_steps WHERE turn_id = ? AND step = ?", [turn.id, step.step])
    cur.execute(
        "INSERT INTO loop_steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [turn.id, step.step, step.state, None if step.result is None else _json(step.result), step.error,
         step.seconds, step.started_at, step.finished_at],
    )  # fmt: skip
    turn.steps = [s for s in turn.steps if s.step != step.step] + [step]


# --- routes: what each cohort is served ---------------------------------------------------------


def route_name(recipe: Recipe, cohort: str) -> str:
    """Return the name of the route that serves ``cohort`` for this loop."""
    return f"{recipe.name}-{cohort}"


def serving(project: Project, recipe: Recipe) -> dict[str, str]:
    """Return cohort → the model its route serves (an experiment's control while one runs)."""
    routes = {r.name: r for r in routing.list_routes(project)}
    out = {}
    for cohort in recipe.cohorts:
        route = routes.get(route_name(recipe, cohort))
        if route is None:
            continue
        if route.model is not None:
            out[cohort] = route.model
        elif route.experiment is not None:
            out[cohort] = experiments.get_experiment(project, route.experiment).config.control.model
    return out


def ensure_routes(project: Project, recipe: Recipe, base: str | None = None) -> dict[str, str]:
    """Give every cohort a route to its serving model: ``base``, else the model marked serving."""
    current = serving(project, recipe)
    missing = [c for c in recipe.cohorts if c not in current]
    if missing:
        if base is None:
            rows = (
                project.cursor()
                .execute(
                    "SELECT name FROM models WHERE status = 'serving' AND kind = 'causal-lm' ORDER BY created_at DESC"
                )
                .fetchall()
            )
            if not rows:
                raise NotFound(
                    "no model serves yet: pass --base MODEL (a registered causal-lm) for the first turn", field="base"
                )
            base = rows[0][0]
        record = find_model(project, base)
        if record is None or record.kind != "causal-lm":
            raise NotFound(f"no causal-lm model {base!r}; see 'posttrain models list'", field="base")
        project.cursor().execute("UPDATE models SET status = 'serving' WHERE id = ?", [record.id])
        for cohort in missing:
            routing.add_route(
                project,
                routing.RouteRule(name=route_name(recipe, cohort), cohort=cohort, requested=recipe.requested_model,
                                  model=base),
            )  # fmt: skip
            current[cohort] = base
    return current


# --- the turn ---------------------------------------------------------------------------------


class Turn:
    """A turn on its way: the record, the recipe, what earlier steps produced."""

    def __init__(
        self,
        project: Project,
        recipe: Recipe,
        record: TurnRecord,
        traffic: Callable[[Turn], None] | None,
        on_event: Events | None,
    ) -> None:
        self.project, self.recipe, self.record = project, recipe, record
        self.traffic, self.on_event = traffic, on_event

    @property
    def number(self) -> int:
        return self.record.turn

    def result(self, step: str) -> dict[str, Any]:
        found = self.record.step(step)
        return dict(found.result or {}) if found else {}

    def say(self, step: str, message: str) -> None:
        if self.on_event is not None:
            self.on_event(step, message)

    def name(self, what: str) -> str:
        return f"{self.recipe.name}-t{self.number}-{what}"

    @property
    def parent(self) -> str:
        return self.record.serving[self.recipe.cohorts[0]]

    def candidate(self) -> str:
        """The model the training steps have produced so far (the parent when none trained)."""
        for step in ("grpo", "dpo", "sft"):
            model = self.result(step).get("model")
            if model:
                return str(model)
        return self.parent

    def experiments(self) -> dict[str, str]:
        """cohort → the experiment this turn started for it."""
        return dict(self.result("experiment").get("experiments") or {})


def _start_turn(project: Project, recipe: Recipe, base: str | None) -> TurnRecord:
    turns = _turns(project, recipe.name)
    if turns and turns[-1].state in ("running", "failed"):
        turn = turns[-1]
        _update_turn(project, turn, state="running", error=None)
        return turn
    now = _now()
    record = TurnRecord(
        id=new_id(),
        loop=recipe.name,
        turn=(turns[-1].turn + 1) if turns else 1,
        state="running",
        recipe=recipe.model_dump(mode="json"),
        window_start=turns[-1].window_end if turns else None,
        window_end=None,
        serving=ensure_routes(project, recipe, base),
        started_at=now,
    )
    project.cursor().execute(
        "INSERT INTO loop_turns (id, loop, turn, state, recipe, window_start, serving, started_at) "
        "VALUES (?, ?, ?, 'running', ?, ?, ?, ?)",
        [record.id, record.loop, record.turn, _json(record.recipe), record.window_start, _json(record.serving), now],
    )
    return record


def run_turn(
    project: Project,
    recipe: Recipe,
    *,
    base: str | None = None,
    traffic: Callable[[Turn], None] | None = None,
    on_event: Events | None = None,
) -> TurnRecord:
    """Run (or resume) one turn; raise LoopStepFailed naming the step and the cause if one fails.

    ``traffic(turn)`` is called while the turn's experiments run, to send (simulated) traffic; without
    it the step waits until every arm has ``experiment.min_samples`` measured units or
    ``experiment.max_wait_seconds`` pass.
    """
    from posttrain.loop import steps

    turn = Turn(project, recipe, _start_turn(project, recipe, base), traffic, on_event)
    for name in STEPS:
        done = turn.record.step(name)
        if done is not None and done.state in ("done", "skipped"):
            continue
        started, clock = _now(), time.perf_counter()
        _record_step(project, turn.record, StepRecord(step=name, state="running", started_at=started))
        turn.say(name, "started")
        try:
            result = steps.FUNCTIONS[name](turn)
        except Exception as exc:
            message = exc.message if isinstance(exc, PosttrainError) else f"{type(exc).__name__}: {exc}"
            _record_step(project, turn.record, StepRecord(step=name, state="failed", error=message,
                         seconds=time.perf_counter() - clock, started_at=started, finished_at=_now()))  # fmt: skip
            error = f"turn {turn.number}, step {name}: {message}"
            _update_turn(project, turn.record, state="failed", error=error)
            raise LoopStepFailed(f"{error}; fix it and run 'posttrain loop run' again to resume here") from exc
        state: StepState = "skipped" if result.get("skipped") else "done"
        _record_step(project, turn.record, StepRecord(step=name, state=state, result=result,
                     seconds=time.perf_counter() - clock, started_at=started, finished_at=_now()))  # fmt: skip
        turn.say(name, str(result.get("summary") or result.get("skipped") or state))
        if result.get("rejected"):
            _finish(turn, "rejected", result)
            return turn.record
    _finish(turn, "done", turn.result("decide"))
    return turn.record


def _finish(turn: Turn, state: TurnState, result: dict[str, Any]) -> None:
    outcome = {"serving": serving(turn.project, turn.recipe), **{k: v for k, v in result.items() if k != "summary"}}
    _update_turn(turn.project, turn.record, state=state, result=outcome, finished_at=_now())


def run(
    project: Project,
    recipe: Recipe,
    turns: int = 1,
    *,
    base: str | None = None,
    traffic: Callable[[Turn], None] | None = None,
    on_event: Events | None = None,
) -> list[TurnRecord]:
    """Run ``turns`` turns (resuming an unfinished one first); return their records."""
    if turns < 1:
        raise InvalidInput("turns must be at least 1", field="turns")
    return [run_turn(project, recipe, base=base, traffic=traffic, on_event=on_event) for _ in range(turns)]
