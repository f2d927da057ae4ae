"""One turn of the flywheel, step by step, each step recorded so a killed loop resumes where it stopped.

A turn: ``collect`` (the window of new interactions and feedback since the last turn) →
``annotate`` (when the recipe turns it on: a queue filled by active selection, labelled) →
``datasets`` (SFT rows, preference pairs, RL prompts, per-cohort SFT rows) → ``sft`` → ``reward``
(when enough new pairs) → ``dpo`` → ``grpo`` → ``specialise`` (a cohort's own model) →
``evaluate`` + ``gate`` (against each cohort's serving model) → ``experiment`` (an A/B test per
cohort, through the gateway's routes) → ``traffic`` (wait for, or make, enough of it) →
``decide`` (promote, or keep serving). The loop keeps one route per cohort, ``LOOP-COHORT`` (the
cohort in its file-safe form, see ``names``), from the product's model name to that cohort's
serving model. A turn and its steps as stored are in ``turns``; what each step reports, in ``results``.

A step that finished is never redone; a failed step stops the turn with a message naming the step
and the cause, and the next run starts from it. A candidate that fails its gate is recorded as
rejected, with the reasons, and the serving models stay.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from posttrain import experiments, routing
from posttrain.clock import utc_now
from posttrain.errors import InvalidInput, NotFound, PosttrainError
from posttrain.ids import new_id
from posttrain.loop import steps
from posttrain.loop.names import route_name
from posttrain.loop.recipe import Recipe
from posttrain.loop.results import STEPS, AnyStepResult, DecideResult
from posttrain.loop.turns import (
    Events,
    StepRecord,
    StepState,
    Turn,
    TurnRecord,
    TurnState,
    read_turns,
    record_step,
    to_json,
    update_turn,
)
from posttrain.models.registry import find_model
from posttrain.project import Project


class LoopStepFailed(PosttrainError):
    """A step of a turn failed; the next ``loop run`` resumes from it."""

    status = 500


def status(project: Project, loop: str | None = None) -> list[TurnRecord]:
    """Return every turn of ``loop`` (default: every loop), oldest first."""
    if loop is not None:
        return read_turns(project, loop)
    names = [r[0] for r in project.cursor().execute("SELECT DISTINCT loop FROM loop_turns ORDER BY 1").fetchall()]
    return [t for name in names for t in read_turns(project, name)]


# --- routes: what each cohort is served ---------------------------------------------------------


def serving(project: Project, recipe: Recipe) -> dict[str, str]:
    """Return cohort → the model its route serves (an experiment's control while one runs)."""
    routes = {r.name: r for r in routing.list_routes(project)}
    out = {}
    for cohort in recipe.cohorts:
        route = routes.get(route_name(recipe.name, cohort))
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
                routing.RouteRule(name=route_name(recipe.name, cohort), cohort=cohort, requested=recipe.requested_model,
                                  model=base),
            )  # fmt: skip
            current[cohort] = base
    return current


# --- the turn ---------------------------------------------------------------------------------


def _start_turn(project: Project, recipe: Recipe, base: str | None) -> TurnRecord:
    turns = read_turns(project, recipe.name)
    if turns and turns[-1].state in ("running", "failed"):
        turn = turns[-1]
        update_turn(project, turn, state="running", error=None)
        return turn
    started = utc_now()
    record = TurnRecord(
        id=new_id(),
        loop=recipe.name,
        turn=(turns[-1].turn + 1) if turns else 1,
        state="running",
        recipe=recipe.model_dump(mode="json"),
        window_start=turns[-1].window_end if turns else None,
        window_end=None,
        serving=ensure_routes(project, recipe, base),
        started_at=started,
    )
    project.cursor().execute(
        "INSERT INTO loop_turns (id, loop, turn, state, recipe, window_start, serving, started_at) "
        "VALUES (?, ?, ?, 'running', ?, ?, ?, ?)",
        [
            record.id,
            record.loop,
            record.turn,
            to_json(record.recipe),
            record.window_start,
            to_json(record.serving),
            started,
        ],
    )
    return record


def run_turn(
    project: Project,
    recipe: Recipe,
    *,
    base: str | None = None,
    traffic: Callable[[Turn], None] | None = None,
    on_event: Events | None = None,
    annotators: Callable[[Turn, str], None] | None = None,
) -> TurnRecord:
    """Run (or resume) one turn; raise LoopStepFailed naming the step and the cause if one fails.

    ``traffic(turn)`` is called while the turn's experiments run, to send (simulated) traffic; without
    it the step waits until every arm has ``experiment.min_samples`` measured units or
    ``experiment.max_wait_seconds`` pass. ``annotators(turn, queue)`` labels the queue the annotate
    step filled; without it the step waits up to ``annotate.max_wait_seconds`` for people.
    """
    turn = Turn(project, recipe, _start_turn(project, recipe, base), traffic, on_event, annotators)
    for name in STEPS:
        done = turn.record.step(name)
        if done is not None and done.state in ("done", "skipped"):
            continue
        started, clock = utc_now(), time.perf_counter()
        record_step(project, turn.record, StepRecord(step=name, state="running", started_at=started))
        turn.say(name, "started")
        try:
            result = steps.FUNCTIONS[name](turn)
        except Exception as exc:
            message = exc.message if isinstance(exc, PosttrainError) else f"{type(exc).__name__}: {exc}"
            record_step(project, turn.record, StepRecord(step=name, state="failed", error=message,
                         seconds=time.perf_counter() - clock, started_at=started, finished_at=utc_now()))  # fmt: skip
            error = f"turn {turn.number}, step {name}: {message}"
            update_turn(project, turn.record, state="failed", error=error)
            raise LoopStepFailed(f"{error}; fix it and run 'posttrain loop run' again to resume here") from exc
        state: StepState = "skipped" if result.skipped else "done"
        record_step(project, turn.record, StepRecord(step=name, state=state, result=result,
                     seconds=time.perf_counter() - clock, started_at=started, finished_at=utc_now()))  # fmt: skip
        turn.say(name, result.summary or result.skipped or state)
        if result.rejected:
            _finish(turn, "rejected", result)
            return turn.record
    _finish(turn, "done", turn.result("decide", DecideResult))
    return turn.record


def _finish(turn: Turn, state: TurnState, result: AnyStepResult) -> None:
    """Close the turn; its result: who serves now, and what its last step decided."""
    left_out = {"summary", "skipped"} | (set() if result.rejected else {"rejected"})
    outcome = {"serving": serving(turn.project, turn.recipe), **result.model_dump(mode="json", exclude=left_out)}
    update_turn(turn.project, turn.record, state=state, result=outcome, finished_at=utc_now())


def run(
    project: Project,
    recipe: Recipe,
    turns: int = 1,
    *,
    base: str | None = None,
    traffic: Callable[[Turn], None] | None = None,
    on_event: Events | None = None,
    annotators: Callable[[Turn, str], None] | None = None,
) -> list[TurnRecord]:
    """Run ``turns`` turns (resuming an unfinished one first); return their records."""
    if turns < 1:
        raise InvalidInput("turns must be at least 1", field="turns")
    return [
        run_turn(project, recipe, base=base, traffic=traffic, on_event=on_event, annotators=annotators)
        for _ in range(turns)
    ]
