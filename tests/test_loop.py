"""The loop on a real warehouse and a tiny model: turns, step records, resume, gate, experiments, routes."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from posttrain import datasets, loop, routing
from posttrain import experiments as ex
from posttrain.capture import capture
from posttrain.cli import app
from posttrain.datasets import write_version
from posttrain.errors import InvalidInput
from posttrain.evals import ComparisonResult, EvalResult, SuiteConfig, decide_gate
from posttrain.evals.intervals import slice_values
from posttrain.loop import StepRecord, Turn, TurnRecord, steps
from posttrain.loop.names import cohort_part, route_name
from posttrain.loop.results import DatasetsResult, EvaluateResult, GateStepResult, PairGate, SpecialiseResult
from posttrain.models.lineage import lineage
from posttrain.models.registry import get_model, register_model
from posttrain.names import check_name
from posttrain.project import Project

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")


def _product_logs(
    project: Project, seed: int, n: int = 160, cohorts: Sequence[str] = ("minor", *["adult"] * 4)
) -> None:
    """Answers to 'add A B' from a small pool of prompts, right 40% of the time, with thumbs; cohorts in turn."""
    rng = random.Random(seed)
    pool = [(a, b) for a in range(4) for b in range(5)]
    events, thumbs = [], []
    for i in range(n):
        a, b = rng.choice(pool)
        right = rng.random() < 0.4
        answer = str(a + b) if right else str(a + b + rng.choice([1, 10]))
        iid = f"s{seed}-{i}"
        events.append({"id": iid, "messages": [{"role": "user", "content": f"add {a} {b}"}], "response": answer,
                       "user_id": f"u{i % 40}", "cohort": cohorts[i % len(cohorts)]})  # fmt: skip
        thumbs.append({"interaction_id": iid, "kind": "thumb", "value": "up" if right else "down"})
    capture(project, "interactions", events)
    capture(project, "feedback", thumbs)


def _ab_traffic(turn: Turn) -> None:
    """Users in each running experiment; the candidate gets thumbs up 80% of the time, serving 30%."""
    rng = random.Random(turn.number)
    for cohort, name in turn.experiments().items():
        experiment = ex.get_experiment(turn.project, name)
        events, thumbs = [], []
        for i in range(160):
            user = f"{cohort}-{turn.number}-{i}"
            variant, prob = ex.assign(experiment, user)
            iid = f"ab-{name}-{i}"
            events.append({"id": iid, "messages": [{"role": "user", "content": "add 1 1"}], "response": "2",
                           "user_id": user, "cohort": cohort, "experiment": name, "variant": variant,
                           "assignment_prob": prob})  # fmt: skip
            up = rng.random() < (0.8 if variant == "candidate" else 0.3)
            thumbs.append({"interaction_id": iid, "kind": "thumb", "value": "up" if up else "down"})
        capture(turn.project, "interactions", events)
        capture(turn.project, "feedback", thumbs)


def _recipe(**overrides: Any) -> loop.Recipe:
    base = {
        "name": "t",
        "sft": {"learning_rate": 1e-3, "batch_size": 16, "min_rows": 5},
        "reward": {"enabled": False},
        "dpo": {"enabled": False},
        "grpo": {"enabled": False},
        "experiment": {"min_samples": 30, "max_wait_seconds": 1},
    }
    return loop.load_recipe(None, **(base | overrides))


@pytest.fixture
def served(project: Project, tiny_model: Path) -> Project:
    register_model(project, "base", tiny_model)
    return project


def test_recipe_defaults_and_yaml_errors_name_the_field(tmp_path: Path) -> None:
    recipe = loop.load_recipe()
    assert recipe.cohorts == ["adult", "minor"] and recipe.dpo.learning_rate == 2e-5 and recipe.sft.enabled
    path = tmp_path / "r.yaml"
    path.write_text("dpo: {learning_rate: -1}\n")
    with pytest.raises(InvalidInput, match="recipe dpo.learning_rate"):
        loop.load_recipe(path)
    path.write_text("sft: [1, 2\n")
    with pytest.raises(InvalidInput, match="not valid YAML"):
        loop.load_recipe(path)


def test_a_turn_trains_runs_an_experiment_per_cohort_and_promotes(served: Project) -> None:
    _product_logs(served, seed=0)
    events: list[tuple[str, str]] = []
    [turn] = loop.run(served, _recipe(), 1, base="base", traffic=_ab_traffic,
                      on_event=lambda s, m: events.append((s, m)))  # fmt: skip
    assert turn.state == "done" and turn.turn == 1
    assert [s.step for s in turn.steps] == list(loop.STEPS)
    assert {s.step for s in turn.steps if s.state == "skipped"} == {"annotate", "reward", "dpo", "grpo", "evaluate"}
    assert turn.serving == {"adult": "base", "minor": "base"}
    assert turn.result is not None and turn.result["serving"] == {"adult": "t-t1-sft", "minor": "t-t1-sft"}
    assert turn.result["decisions"]["adult"]["action"] == "promote"
    routes = {r.name: r for r in routing.list_routes(served)}
    assert routes["t-adult"].model == "t-t1-sft" and routes["t-adult"].requested == "assistant"
    assert ex.get_experiment(served, "t-t1-ab-minor").state == "promoted"
    assert get_model(served, "t-t1-sft").status == "serving"
    chain = lineage(served, "t-t1-sft")
    assert [m.model.name for m in chain.chain] == ["t-t1-sft", "base"] and chain.chain[0].datasets
    assert ("collect", "started") in events and any(s == "decide" for s, _ in events)
    assert all(s.seconds is not None and s.seconds >= 0 for s in turn.steps)


def test_a_failed_step_stops_the_turn_and_the_next_run_resumes_there(served: Project) -> None:
    _product_logs(served, seed=1)
    recipe = _recipe(eval={"dataset": "suite", "samples": 1, "temperature": 0.0})
    with pytest.raises(loop.LoopStepFailed, match=r"turn 1, step evaluate: .*suite"):
        loop.run(served, recipe, 1, base="base", traffic=_ab_traffic)
    [failed] = loop.status(served, "t")
    assert failed.state == "failed" and "step evaluate" in (failed.error or "")
    sft_done = failed.step("sft")
    assert sft_done is not None and sft_done.state == "done"
    rows = [{"prompt": [{"role": "user", "content": f"add {a} {b}"}], "answer": str(a + b),
             "cohort": "adult" if a % 2 else "minor"} for a in range(4) for b in range(4)]  # fmt: skip
    write_version(served, "suite", "eval", pa.Table.from_pylist(rows), recipe={}, sources={"interaction_ids": []})
    [resumed] = loop.run(served, recipe.model_copy(update={"eval": recipe.eval.model_copy(update={"margin": 1.0})}),
                         1, traffic=_ab_traffic)  # fmt: skip
    assert resumed.turn == 1 and resumed.id == failed.id and resumed.state == "done"
    assert resumed.step("sft").started_at == sft_done.started_at  # type: ignore[union-attr]  # not redone
    evaluated = resumed.step("evaluate").result  # type: ignore[union-attr]
    assert isinstance(evaluated, EvaluateResult)
    [pair] = evaluated.gates
    assert (pair.candidate, pair.baseline) == ("t-t1-sft", "base")
    assert [c.cohort for c in pair.checks] == [None, "adult", "minor"]


def test_specialise_gives_a_cohort_its_own_model_from_all_its_history(served: Project) -> None:
    _product_logs(served, seed=6)
    recipe = _recipe(experiment={"enabled": False},
                     specialise={"minor": {"min_rows": 2, "learning_rate": 1e-3, "history": "all"}})  # fmt: skip
    [first] = loop.run(served, recipe, 1, base="base")
    assert first.result["serving"] == {"adult": "t-t1-sft", "minor": "t-t1-minor"}  # type: ignore[index]
    assert [m.model.name for m in lineage(served, "t-t1-minor").chain] == ["t-t1-minor", "t-t1-sft", "base"]
    _product_logs(served, seed=7)
    [second] = loop.run(served, recipe, 1)
    built, first_built = second.step("datasets").result, first.step("datasets").result  # type: ignore[union-attr]
    assert isinstance(built, DatasetsResult) and isinstance(first_built, DatasetsResult)
    assert built.built("sft", "minor").rows > first_built.built("sft", "minor").rows  # every turn's, not the window's
    assert built.built("sft").rows <= first_built.built("sft").rows + 5  # the shared model learns from the window


def test_collect_refuses_a_turn_without_new_feedback(served: Project) -> None:
    _product_logs(served, seed=2)
    loop.run(served, _recipe(experiment={"enabled": False}), 1, base="base")
    with pytest.raises(loop.LoopStepFailed, match=r"turn 2, step collect: 0 feedback events since .* needs 20"):
        loop.run(served, _recipe(experiment={"enabled": False}), 1)
    _product_logs(served, seed=3)
    [turn2] = loop.run(served, _recipe(experiment={"enabled": False}), 1)
    assert turn2.turn == 2 and turn2.state == "done"
    assert turn2.serving == {"adult": "t-t1-sft", "minor": "t-t1-sft"}  # promoted on the gate alone
    assert turn2.result["serving"] == {"adult": "t-t2-sft", "minor": "t-t2-sft"}  # type: ignore[index]
    assert [m.model.name for m in lineage(served, "t-t2-sft").chain] == ["t-t2-sft", "t-t1-sft", "base"]


def test_gate_rejects_a_worse_candidate_and_serving_stays(served: Project) -> None:
    _product_logs(served, seed=4)
    # the suite's answers are the base model's own seeded samples: it reproduces them exactly, and a
    # candidate whose weights moved at all samples something else
    from posttrain.evals import read_scores, run_eval

    prompts = [[{"role": "user", "content": f"add {a} {b}"}] for a in range(3) for b in range(3)]
    rows = [{"prompt": p, "answer": "", "cohort": "adult" if i % 2 else "minor"} for i, p in enumerate(prompts)]
    write_version(served, "suite", "eval", pa.Table.from_pylist(rows), recipe={}, sources={"interaction_ids": []})
    suite = SuiteConfig(dataset="suite", samples=1, temperature=1.0, max_new_tokens=8, seed=0)
    said = read_scores(run_eval(served, "base", suite)).to_pylist()
    for row in said:
        rows[row["prompt_index"]]["answer"] = row["completion"]
    write_version(served, "suite", "eval", pa.Table.from_pylist(rows), recipe={}, sources={"interaction_ids": []})
    recipe = _recipe(
        sft={"learning_rate": 5e-3, "epochs": 3, "batch_size": 8, "min_rows": 5},
        eval={"dataset": "suite", "samples": 1, "temperature": 1.0, "max_new_tokens": 8, "margin": 0.0},
    )
    [turn] = loop.run(served, recipe, 1, base="base", traffic=_ab_traffic)  # fmt: skip
    assert turn.state == "rejected", [(s.step, s.result) for s in turn.steps if s.step in ("sft", "evaluate", "gate")]
    gate = turn.step("gate").result  # type: ignore[union-attr]
    assert isinstance(gate, GateStepResult) and gate.reasons and not any(gate.passed.values())
    assert turn.step("experiment") is None  # no experiment for a rejected candidate
    assert turn.result["serving"] == {"adult": "base", "minor": "base"}  # type: ignore[index]
    assert get_model(served, "t-t1-sft").status == "rejected"


def test_cli_loop_run_and_status(served: Project) -> None:
    _product_logs(served, seed=5)
    recipe = served.root / "recipe.yaml"
    recipe.write_text("name: cli\nreward: {enabled: false}\ndpo: {enabled: false}\ngrpo: {enabled: false}\n"
                      "experiment: {enabled: false}\nsft: {learning_rate: 0.001, min_rows: 5}\n")  # fmt: skip
    served.close()
    runner = CliRunner()
    result = runner.invoke(app, ["loop", "run", "--recipe", str(recipe), "--base", "base", "-p", str(served.root)])
    assert result.exit_code == 0, result.output
    assert "collect" in result.output and "turn 1: done" in result.output
    result = runner.invoke(app, ["loop", "status", "-p", str(served.root)])
    assert result.exit_code == 0 and "decide:d" in result.output
    result = runner.invoke(app, ["loop", "status", "--json", "-p", str(served.root)])
    [turn] = json.loads(result.output)
    assert turn["state"] == "done" and turn["result"]["serving"] == {"adult": "cli-t1-sft", "minor": "cli-t1-sft"}


@pytest.mark.slow  # one of the slowest of the default suite; CI runs it in make test-slow
def test_loop_runs_in_the_server_when_one_owns_the_warehouse(served: Project) -> None:
    """On DuckDB the CLI hands the loop to the server that owns the file (a ``loop.run`` job); on
    PostgreSQL no server owns the warehouse, so the CLI runs it itself and every server sees the turn."""
    from conftest import LiveServer
    from posttrain import keys

    _product_logs(served, seed=8)
    admin = keys.create_key(served, "admin").key
    recipe = served.root / "recipe.yaml"
    recipe.write_text("name: srv\nreward: {enabled: false}\ndpo: {enabled: false}\ngrpo: {enabled: false}\n"
                      "experiment: {enabled: false}\nsft: {learning_rate: 0.001, min_rows: 5}\n")  # fmt: skip
    served.close()
    live = LiveServer(root=served.root, admin_key=admin).start()
    try:
        runner = CliRunner()
        args = ["--recipe", str(recipe), "--base", "base", "-p", str(served.root)]
        result = runner.invoke(app, ["loop", "run", *args])
        assert result.exit_code == 0, result.output
        assert "srv-t1-sft" in result.output and "turn 1: done" in result.output
        with live.http() as http:
            [turn] = http.get("/api/loop/turns").json()
            jobs = http.get("/api/jobs").json()
        assert turn["state"] == "done" and turn["result"]["serving"]["adult"] == "srv-t1-sft"
        ran_as_job = [j for j in jobs if j["kind"] == "loop.run"]
        if served.is_postgres:
            assert ran_as_job == []
        else:
            assert [j["state"] for j in ran_as_job] == ["succeeded"]
    finally:
        live.stop()


# --- cohorts are free text ------------------------------------------------------------------------

ODD_COHORTS = ["o'brien", "night owls", "mädchen"]


@pytest.mark.parametrize("cohort", ["adult", "minor", "pro.v2", "A_b-3"])
def test_cohort_part_keeps_a_plain_name(cohort: str) -> None:
    assert cohort_part(cohort) == cohort and route_name("t", cohort) == f"t-{cohort}"


@pytest.mark.parametrize(
    ("cohort", "slug"),
    [("o'brien", "o-brien-"), ("night owls", "night-owls-"), ("mädchen", "madchen-"), ("..", ""), ("con", "con-"),
     ("ребёнок", ""), ("x" * 128 + "!", "x" * 40 + "-")],
)  # fmt: skip
def test_cohort_part_is_a_file_safe_slug_with_a_stable_hash(cohort: str, slug: str) -> None:
    part = cohort_part(cohort)
    assert part.startswith(slug) and len(part) == len(slug) + 8 and part == cohort_part(cohort)
    assert check_name(f"t-t1-ab-{part}") and check_name(part)


def test_cohort_parts_differ_where_slugs_collide() -> None:
    assert len({cohort_part(c) for c in ["night owls", "night-owls", "Night Owls", "night_owls!"]}) == 4


def test_recipe_cohorts_are_free_text_without_control_characters() -> None:
    assert _recipe(cohorts=ODD_COHORTS, specialise={"o'brien": {}}).cohorts == ODD_COHORTS
    for bad in ["", "x" * 129, "tab\there", "new\nline"]:
        with pytest.raises(InvalidInput, match=r"recipe cohorts\.0"):
            _recipe(cohorts=[bad])


def _comparison(scores: dict[str, tuple[list[float], list[float]]]) -> ComparisonResult:
    """Candidate 'cand' and baseline 'base' with these exact_match scores per prompt, by cohort (no models)."""
    cohorts = [c for c, (values, _) in scores.items() for _ in values]
    cand = [v for values, _ in scores.values() for v in values]
    base = [v for _, values in scores.values() for v in values]
    families, at = ["add"] * len(cand), datetime(2025, 1, 1)

    def run(model: str, values: list[float]) -> EvalResult:
        return EvalResult(id=model, model=model, model_id=model, dataset="suite@1", dataset_version_id="v",
                          config=SuiteConfig(dataset="suite"), prompts=len(values), samples=1,
                          scores={"exact_match": slice_values(values, cohorts, families, kind="mean")},
                          scores_path="-", seconds=0.0, created_at=at)  # fmt: skip

    diffs = [a - b for a, b in zip(cand, base, strict=True)]
    return ComparisonResult(id="c", candidate=run("cand", cand), baseline=run("base", base), judge="verifier:row",
                            win_rate=slice_values([0.5] * len(cand), cohorts, families, kind="win"),
                            differences={"exact_match": slice_values(diffs, cohorts, families, kind="diff")},
                            created_at=at)  # fmt: skip


def test_gate_fails_the_cohort_whose_own_check_fails_whatever_its_name(project: Project) -> None:
    # o'brien's answers all got worse (-1), the others' stayed: overall -1/3 passes a margin of 0.5
    verdict = decide_gate(_comparison({"o'brien": ([0.0] * 4, [1.0] * 4), "night owls": ([1.0] * 4, [1.0] * 4),
                                       "mädchen": ([0.0] * 4, [0.0] * 4)}), margin=0.5, rule="mean")  # fmt: skip
    at = datetime(2025, 1, 1)
    evaluated = EvaluateResult(gates=[PairGate(candidate="cand", baseline="base", metric=verdict.metric,
                                               checks=verdict.checks, reasons=verdict.reasons)])  # fmt: skip
    record = TurnRecord(
        id="turn", loop="t", turn=1, state="running", recipe={}, window_start=None, window_end=None,
        serving=dict.fromkeys(ODD_COHORTS, "base"), started_at=at,
        steps=[StepRecord(step="specialise", state="done", started_at=at,
                          result=SpecialiseResult(candidates=dict.fromkeys(ODD_COHORTS, "cand"))),
               StepRecord(step="evaluate", state="done", started_at=at, result=evaluated)],
    )  # fmt: skip
    result = steps.gate(Turn(project, _recipe(cohorts=ODD_COHORTS), record, None, None))
    assert result.passed == {"o'brien": False, "night owls": True, "mädchen": True} and not result.rejected
    assert [(c.cohort, c.passed) for c in result.checks["o'brien"]] == [(None, True), ("o'brien", False)]
    assert [c.cohort for c in result.checks["mädchen"]] == [None, "mädchen"]
    [reason] = result.reasons
    assert reason.startswith("o'brien: cohort \"o'brien\": exact_match 0.000 vs baseline 1.000")


def test_step_records_written_before_the_typed_results_read_back(project: Project) -> None:
    at = datetime(2025, 1, 1)
    estimate = {"n": 2, "mean": -1.0, "ci_low": None, "ci_high": None, "method": "normal"}
    check = {"n": 2, "candidate": 0.0, "baseline": 1.0, "difference": estimate, "passed": False}
    legacy = {  # as the loop stored them when results were dicts and a check knew its cohort only by its label
        "evaluate": {"gates": {"t-t1-sft vs base": {"metric": "exact_match", "reasons": ["overall: …", "cohort…"],
                     "checks": [check | {"slice": "overall"}, check | {"slice": "cohort \"o'brien\""}]}},
                     "summary": "t-t1-sft vs base: 0.000 vs 1.000"},
        "gate": {"passed": {"o'brien": False}, "reasons": ["o'brien: …"], "rejected": True, "summary": "rejected"},
        "sft": {"model": "t-t1-sft", "metrics": {"loss": 1.5}, "summary": "t-t1-sft in 1.0s"},
        "reward": {"skipped": "the reward model is off in the recipe"},
        "datasets": {"datasets": {"sft": {"ref": "t-sft@1", "rows": 9}, "sft:minor": {"ref": None, "rows": 0}}},
    }  # fmt: skip
    cur = project.cursor()
    cur.execute("INSERT INTO loop_turns (id, loop, turn, state, recipe, serving, started_at) "
                "VALUES ('x', 't', 1, 'rejected', '{}', '{}', ?)", [at])  # fmt: skip
    for step, result in legacy.items():
        cur.execute("INSERT INTO loop_steps VALUES ('x', ?, 'done', ?, NULL, 1.0, ?, ?)",
                    [step, json.dumps(result), at, at])  # fmt: skip
    [turn] = loop.status(project, "t")
    assert [s.step for s in turn.steps] == ["datasets", "sft", "reward", "evaluate", "gate"]
    [pair] = turn.step("evaluate").result.gates  # type: ignore[union-attr]
    assert (pair.candidate, pair.baseline) == ("t-t1-sft", "base")
    assert [c.cohort for c in pair.checks] == [None, "o'brien"]
    assert turn.step("gate").result == GateStepResult(passed={"o'brien": False}, reasons=["o'brien: …"],  # type: ignore[union-attr]
                                                      rejected=True, summary="rejected")  # fmt: skip
    assert turn.step("sft").result.model == "t-t1-sft"  # type: ignore[union-attr]
    assert turn.step("reward").result.skipped  # type: ignore[union-attr]
    assert turn.step("datasets").result.built("sft", "minor").rows == 0  # type: ignore[union-attr]
    for step in turn.steps:  # and what is read back is stored back the same way
        assert StepRecord.model_validate_json(step.model_dump_json()) == step


@pytest.mark.slow
def test_a_turn_gates_each_free_text_cohort_by_its_own_check(served: Project) -> None:
    _product_logs(served, seed=9, cohorts=ODD_COHORTS)
    from posttrain.evals import read_scores, run_eval

    # o'brien's suite answers are the base model's own seeded samples: a candidate whose weights moved
    # samples something else; nobody says the others' answers, so there both score 0
    prompts = [[{"role": "user", "content": f"add {a} {b}"}] for a in range(2) for b in range(4)]
    cohorts = ["o'brien"] * 2 + ["night owls"] * 3 + ["mädchen"] * 3
    rows = [{"prompt": p, "answer": "never said", "cohort": c} for p, c in zip(prompts, cohorts, strict=True)]
    write_version(served, "suite", "eval", pa.Table.from_pylist(rows), recipe={}, sources={"interaction_ids": []})
    suite = SuiteConfig(dataset="suite", samples=1, temperature=1.0, max_new_tokens=8, seed=0)
    for row in read_scores(run_eval(served, "base", suite)).to_pylist():
        if rows[row["prompt_index"]]["cohort"] == "o'brien":
            rows[row["prompt_index"]]["answer"] = row["completion"]
    write_version(served, "suite", "eval", pa.Table.from_pylist(rows), recipe={}, sources={"interaction_ids": []})
    recipe = _recipe(
        cohorts=ODD_COHORTS, experiment={"enabled": False},
        sft={"learning_rate": 5e-3, "epochs": 3, "batch_size": 8, "min_rows": 5},
        specialise={"mädchen": {"min_rows": 2, "learning_rate": 1e-3}},
        eval={"dataset": "suite", "samples": 1, "temperature": 1.0, "max_new_tokens": 8, "margin": 0.3},
    )  # fmt: skip
    [turn] = loop.run(served, recipe, 1, base="base")
    gate = turn.step("gate").result  # type: ignore[union-attr]
    assert isinstance(gate, GateStepResult)
    assert gate.passed == {"o'brien": False, "night owls": True, "mädchen": True}, gate.reasons
    assert [c.cohort for c in gate.checks["o'brien"] if not c.passed] == ["o'brien"]
    assert gate.reasons and all(r.startswith("o'brien: ") for r in gate.reasons)
    own = f"t-t1-{cohort_part('mädchen')}"
    assert turn.state == "done" and turn.result is not None
    assert turn.result["serving"] == {"o'brien": "base", "night owls": "t-t1-sft", "mädchen": own}
    routes = {r.cohort: r.name for r in routing.list_routes(served)}
    assert routes == {c: route_name("t", c) for c in ODD_COHORTS}
    assert all(check_name(name) for name in [*routes.values(), own])


def test_the_annotate_step_asks_annotators_and_the_turn_trains_on_their_consensus(served: Project) -> None:
    from posttrain import annotate

    _product_logs(served, seed=0)
    labelled: list[str] = []

    def annotators(turn: Turn, queue: str) -> None:  # a careful annotator: accepts the right sums only
        while (got := annotate.next_item(turn.project, queue, "ann-1")) is not None:
            a, b = map(int, str(got.item.prompt[-1]["content"]).split()[1:])
            annotate.submit(turn.project, got.lease_id, "ann-1", {"accept": got.item.response == str(a + b)})
            labelled.append(got.item.interaction_id)

    recipe = _recipe(annotate={"enabled": True, "budget": 40})
    [turn] = loop.run(served, recipe, 1, base="base", traffic=_ab_traffic, annotators=annotators)
    step = turn.step("annotate")
    assert step is not None and step.state == "done"
    result = step.result
    assert result.queue == "t-annotate" and result.added == 40 == len(labelled) == result.resolved  # type: ignore[union-attr]
    by_source = (
        served.cursor()
        .execute("SELECT source, count(*) FROM feedback WHERE author = 'queue:t-annotate' GROUP BY 1")
        .fetchall()
    )
    assert by_source == [("annotator", 40)]
    sft = turn.step("datasets").result.datasets["sft"]  # type: ignore[union-attr]
    sources = lineage(served, turn.step("sft").result.model).chain[0].datasets[0]  # type: ignore[union-attr]
    assert sft.rows > 0 and [q.queue for q in sources.labels] == ["t-annotate"]
    model = turn.step("sft").result.model  # type: ignore[union-attr]
    shown = CliRunner().invoke(app, ["models", "lineage", str(model), "--project", str(served.root)])
    assert shown.exit_code == 0 and "annotation queue t-annotate: " in shown.output, shown.output


def test_a_turn_curates_every_dataset_it_builds(served: Project) -> None:
    _product_logs(served, seed=8)
    suite = [{"prompt": [{"role": "user", "content": "add 1 2"}], "answer": "3", "cohort": "adult"}]
    write_version(served, "suite", "eval", pa.Table.from_pylist(suite), recipe={}, sources={})
    curate = {"decontaminate": {}, "select": {"fraction": 0.5, "embedder": "hashing"}}
    recipe = _recipe(experiment={"enabled": False}, curate=curate,
                     specialise={"minor": {"min_rows": 1, "learning_rate": 1e-3, "history": "all"}})  # fmt: skip
    [turn] = loop.run(served, recipe, 1, base="base")
    built = turn.step("datasets").result  # type: ignore[union-attr]
    assert isinstance(built, DatasetsResult)
    shared = datasets.resolve(served, built.built("sft").ref or "")
    stages = {s["stage"]: s for s in shared.stats["curation"]["stages"]}
    assert list(stages) == ["decontaminate", "select"]
    assert all("add 1 2" not in r["prompt"][0]["content"] for r in datasets.read_rows(shared).to_pylist())
    assert shared.row_count == stages["select"]["rows_in"] - stages["select"]["removed"]
    minors = datasets.resolve(served, built.built("sft", "minor").ref or "")
    assert minors.stats["curation"]["strict"] is True  # the minors' data: strict, with the recipe's stages too
    minor_stages = {s["stage"]: s for s in minors.stats["curation"]["stages"]}
    assert list(minor_stages) == ["decontaminate", "safety", "select"]
    # selection keeps a strict cohort's rows whole: the minors' model learns to refuse from their number
    assert minor_stages["select"]["removed"] == 0
    assert minor_stages["select"]["details"]["kept_strict_cohorts"] == minor_stages["select"]["rows_in"] > 0
