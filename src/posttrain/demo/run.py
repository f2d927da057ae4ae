"""``posttrain demo``: the whole flywheel on one machine, measured turn by turn.

A fresh project; the simulated product's base model (built once, cached); an eval suite drawn
from the product's tasks; the server running in this process (gateway, capture, routes); the
simulated users sending requests through the gateway over HTTP and leaving noisy feedback; and
``turns`` loop turns. Each turn trains on the previous phase's feedback, gates the candidate on the
suite, A/B tests it per cohort on live (simulated) traffic, and promotes or keeps serving; then a
measurement phase sends the product's traffic to whatever serves each cohort — that traffic is
both the turn's figure and the next turn's data. The trainer sees the users only through their
feedback and the task verifiers, never the simulator's answers.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, Field

from posttrain import keys, loop, sim
from posttrain.datasets import write_version
from posttrain.errors import InvalidInput
from posttrain.jobs import get_job
from posttrain.loop.results import DatasetsResult, SpecialiseResult, TrainResult
from posttrain.loop.runner import ensure_routes
from posttrain.loop.turns import Turn
from posttrain.models.registry import find_model, register_model
from posttrain.project import CONFIG_FILE, Project, init_project, open_project

Say = Callable[[str], None]
Progress = Callable[[str, int, int], None]  # (phase, done, total)


class DemoConfig(BaseModel):
    """How big a demo is: ``fast`` (CI, under 5 minutes) or full (under 15 minutes on 2 cores)."""

    seed: int = 0
    turns: int = Field(3, ge=1, le=10)
    base_rows: int = Field(60_000, ge=1000, description="Rows the base model is pretrained on.")
    base_epochs: int = Field(2, ge=1, description="Passes over them (one: half the time, a weaker base).")
    measure_requests: int = Field(
        3000, ge=50, description="Requests per measurement phase (both cohorts; ~150 unsafe ones from minors)."
    )
    experiment_requests: dict[str, int] = Field(
        default_factory=lambda: {"adult": 800, "minor": 500}, description="Requests per cohort while A/B testing."
    )
    side_by_side_share: float = Field(0.2, ge=0, le=1, description="Share of A/B requests answered side by side.")
    eval_prompts: int = Field(150, ge=10, description="Eval suite prompts per cohort.")
    stages: dict[str, Any] = Field(
        default_factory=dict, description="Recipe overrides by stage, e.g. {'grpo': {'enabled': False}}."
    )

    @classmethod
    def fast(cls, seed: int = 0, turns: int = 3) -> DemoConfig:
        """Return the CI-sized demo."""
        return cls(seed=seed, turns=turns, base_epochs=1, measure_requests=400,
                   experiment_requests={"adult": 300, "minor": 200}, eval_prompts=50,
                   stages={"grpo": {"max_steps": 10}})  # fmt: skip


def recipe(config: DemoConfig) -> loop.Recipe:
    """Return the demo's loop recipe: SFT → reward model → DPO → GRPO (task verifier + reward model), minors' own."""
    base: dict[str, Any] = {
            "name": "demo",
            "requested_model": "assistant",
            "cohorts": ["adult", "minor"],
            "seed": config.seed,
            "sft": {"learning_rate": 3e-4, "epochs": 2, "batch_size": 32},
            "reward": {"min_pairs": 40, "epochs": 2},
            "dpo": {"learning_rate": 5e-5, "epochs": 2, "beta": 0.1, "min_pairs": 20},
            "grpo": {"reward": ["function:sim", "reward-model"], "learning_rate": 5e-5, "max_steps": 20,
                     "batch_size": 8, "num_generations": 8, "max_completion_length": 32},
            "specialise": {"minor": {"learning_rate": 5e-4, "epochs": 3, "history": "all"}},
            "eval": {"dataset": "suite", "scorers": ["sim"], "samples": 2,
                     "temperature": 1.0, "max_new_tokens": 32, "margin": 0.03, "rule": "mean"},
            "experiment": {"metric": "thumbs_up_rate", "treatment_share": 0.5, "min_samples": 50,
                           "promote_if_not_worse": True},
        }  # fmt: skip
    for stage, settings in config.stages.items():
        current = base.get(stage)
        base[stage] = {**current, **settings} if isinstance(current, dict) and isinstance(settings, dict) else settings
    return loop.Recipe.model_validate(base)


# --- the server, in this process --------------------------------------------------------------


class _Server:
    """``posttrain serve``'s app on 127.0.0.1 (a free port) in a thread, sharing the demo's project."""

    def __init__(self, project: Project) -> None:
        import uvicorn

        from posttrain.server import create_app

        self.app = create_app(project)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, timeout_graceful_shutdown=10)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def __enter__(self) -> _Server:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the demo's server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=60)
        self._sock.close()

    def refresh(self) -> None:
        """Make the gateway re-read routes and experiments now (the loop changed them)."""
        self.app.state.gateway.refresh()


# --- phases -----------------------------------------------------------------------------------


def _suite(project: Project, config: DemoConfig) -> None:
    """The eval suite: tasks drawn the way each cohort asks, with their answers (a refusal when unsafe)."""
    rng = random.Random(10_000 + config.seed)
    rows = []
    for cohort in sim.DEFAULT_COHORTS:
        for task in sim.draw_tasks(config.eval_prompts, cohort, rng):
            rows.append({"prompt": [{"role": "user", "content": task.prompt}], "answer": task.answer,
                         "cohort": cohort.name, "family": task.family})  # fmt: skip
    write_version(project, "suite", "eval", pa.Table.from_pylist(rows),
                  recipe={"source": "posttrain.sim tasks", "seed": 10_000 + config.seed}, sources={})  # fmt: skip


def _phase(report: sim.TrafficReport) -> dict[str, Any]:
    """What one traffic phase says, per cohort."""
    cohorts = report.cohorts
    feedback: dict[str, int] = {}
    for c in cohorts.values():
        for kind, n in c.feedback.items():
            feedback[kind] = feedback.get(kind, 0) + n
    return {
        "requests": {name: c.requests for name, c in cohorts.items()},
        "success": {name: round(c.success_rate, 4) for name, c in cohorts.items()},
        "safety_violations": {name: round(c.safety_violation_rate, 4) for name, c in cohorts.items()},
        "unsafe_requests": {name: c.unsafe_requests for name, c in cohorts.items()},
        "unsafe_not_refused": {name: round(c.unrefused_rate, 4) for name, c in cohorts.items()},
        "families": {name: {f: round(r.rate, 4) for f, r in c.families.items()} for name, c in cohorts.items()},
        "models": {name: {m: round(r.rate, 4) for m, r in c.models.items()} for name, c in cohorts.items()},
        "feedback": dict(sorted(feedback.items())),
        "seconds": report.seconds,
    }


class _Demo:
    def __init__(self, project: Project, config: DemoConfig, server: _Server, key: str, say: Say,
                 progress: Progress | None) -> None:  # fmt: skip
        self.project, self.config, self.server, self.key = project, config, server, key
        self.say, self.progress = say, progress
        self.experiment_phase: dict[int, dict[str, Any]] = {}

    def traffic(self, phase: str, seed: int, requests: int, cohorts: tuple[sim.CohortConfig, ...],
                side_by_side: float = 0.0) -> sim.TrafficReport:  # fmt: skip
        self.server.refresh()
        report_progress = None
        if self.progress is not None:
            progress = self.progress
            report_progress = lambda done, total: progress(phase, done, total)  # noqa: E731
        return sim.run_traffic(self.server.url, self.key, requests=requests, seed=seed, cohorts=cohorts,
                               model="assistant", side_by_side_share=side_by_side, users=200,
                               progress=report_progress)  # fmt: skip

    def measure(self, turn: int) -> dict[str, Any]:
        report = self.traffic(f"turn {turn}: serving", self.config.seed * 1000 + turn,
                              self.config.measure_requests, sim.DEFAULT_COHORTS)  # fmt: skip
        return _phase(report)

    def ab_traffic(self, turn: Turn) -> None:
        """The loop's traffic step: each cohort's users while its experiment runs."""
        phases = {}
        for cohort in sim.DEFAULT_COHORTS:
            if not turn.experiments().get(cohort.name):
                continue
            requests = self.config.experiment_requests.get(cohort.name, 0)
            if requests:
                seed = self.config.seed * 1000 + 100 + turn.number * 10 + sim.DEFAULT_COHORTS.index(cohort)
                report = self.traffic(f"turn {turn.number}: A/B {cohort.name}", seed, requests, (cohort,),
                                      side_by_side=self.config.side_by_side_share)  # fmt: skip
                phases[cohort.name] = _phase(report)
        self.experiment_phase[turn.number] = phases


def _training_curves(project: Project, record: loop.TurnRecord) -> dict[str, list[dict[str, float]]]:
    curves = {}
    for step in ("sft", "reward", "dpo", "grpo", "specialise"):
        found = record.step(step)
        result = found.result if found is not None else None
        names: list[str | None] = []
        if isinstance(result, SpecialiseResult):
            names = list(result.trained)
        elif isinstance(result, TrainResult):
            names = [result.model]
        for name in filter(None, names):
            model = find_model(project, name)
            if model is None or model.run_id is None:
                continue
            history = get_job(project, model.run_id).metrics
            curves[str(name)] = [{k: v for k, v in point.items() if isinstance(v, int | float)} for point in history]
    return curves


def _turn_row(project: Project, record: loop.TurnRecord, measured: dict[str, Any],
              experiment_phase: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    built, gate = record.step("datasets"), record.step("gate")
    datasets = built.result.datasets if built is not None and isinstance(built.result, DatasetsResult) else {}
    decisions = (record.result or {}).get("decisions", {})
    seconds = {s.step: round(s.seconds or 0.0, 2) for s in record.steps}
    seconds["measure"] = measured["seconds"]
    return {
        "turn": record.turn,
        "state": record.state,
        "serving": (record.result or {}).get("serving", record.serving),
        "success": measured["success"],
        "safety_violations": measured["safety_violations"],
        "unsafe_requests": measured["unsafe_requests"],
        "unsafe_not_refused": measured["unsafe_not_refused"],
        "families": measured["families"],
        "requests": measured["requests"],
        "feedback": measured["feedback"],
        "datasets": {k: v.rows for k, v in datasets.items()},
        "gate": gate.result.model_dump(mode="json") if gate is not None and gate.result is not None else {},
        "decisions": decisions,
        "experiment_traffic": experiment_phase,
        "training": _training_curves(project, record),
        "seconds": seconds,
    }


# The simulated product's verifier and reward, registered by name as any project's own functions are.
SIM_FUNCTIONS = """
[functions.verifiers]
sim = "posttrain.sim.verify:verifier"

[functions.rewards]
sim = "posttrain.sim.verify:reward"
"""


def _sim_project(folder: Path) -> Project:
    init_project(folder).close()
    with (folder / CONFIG_FILE).open("a", encoding="utf-8") as f:
        f.write(SIM_FUNCTIONS)
    return open_project(folder)


def run_demo(
    folder: Path,
    config: DemoConfig,
    *,
    cache_dir: Path | None = None,
    say: Say | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the demo in a fresh project at ``folder``; write and return ``report.json``'s content."""
    from posttrain.demo.report import acceptance, write_report

    say = say or (lambda line: None)
    if folder.exists() and any(folder.iterdir()):
        raise InvalidInput(f"{folder} is not empty; the demo makes a fresh project: pass --project NEW_FOLDER",
                           field="project")  # fmt: skip
    started = time.perf_counter()
    project = _sim_project(folder)
    try:
        key = keys.create_key(project, "ingest", name="demo users").key
        say(f"base model: {config.base_rows:,} noisy rows × {config.base_epochs} (built once, then cached)")
        clock = time.perf_counter()
        base_recipe = sim.BaseRecipe(rows=config.base_rows, epochs=config.base_epochs)
        base_path = sim.cached_base_model(cache_dir, recipe=base_recipe,
                                          progress=None if progress is None else
                                          (lambda done, total: progress("base model", done, total)))  # fmt: skip
        base_seconds = time.perf_counter() - clock
        register_model(project, "base", base_path, description="the simulated product's base model")
        _suite(project, config)
        steps = recipe(config)
        ensure_routes(project, steps, base="base")
        report: dict[str, Any] = {
            "seed": config.seed,
            "config": config.model_dump(mode="json"),
            "recipe": steps.model_dump(mode="json"),
            "base_model": {
                "path": str(base_path),
                "rows": config.base_rows,
                "epochs": config.base_epochs,
                "seconds": round(base_seconds, 1),
            },
            "turns": [],
        }
        with _Server(project) as server:
            demo = _Demo(project, config, server, key, say, progress)
            say(f"server at {server.url}; turn 0: the base model serves everyone")
            measured = demo.measure(0)
            report["turns"].append({"turn": 0, "state": "base", "serving": loop.serving(project, steps), **measured,
                                    "seconds": {"measure": measured["seconds"]}})  # fmt: skip
            say(_line(report["turns"][-1]))
            for _ in range(config.turns):
                record = loop.run_turn(project, steps, traffic=demo.ab_traffic,
                                       on_event=lambda step, message: say(f"  {step}: {message}"))  # fmt: skip
                measured = demo.measure(record.turn)
                row = _turn_row(project, record, measured, demo.experiment_phase.get(record.turn, {}))
                report["turns"].append(row)
                say(_line(row))
        report["acceptance"] = acceptance(report)
        report["seconds"] = round(time.perf_counter() - started, 1)
        write_report(project.root, report)
        return report
    finally:
        project.close()


def _line(row: dict[str, Any]) -> str:
    success = ", ".join(f"{c} {v:.0%}" for c, v in row["success"].items())
    unsafe = row["safety_violations"].get("minor")
    return f"turn {row['turn']}: success {success}; minors' safety violations {unsafe:.0%}; serving {row['serving']}"
