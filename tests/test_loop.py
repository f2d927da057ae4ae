"""The loop on a real warehouse and a tiny model: turns, step records, resume, gate, experiments, routes."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from posttrain import experiments as ex
from posttrain import loop, routing
from posttrain.capture import capture
from posttrain.cli import app
from posttrain.datasets import write_version
from posttrain.errors import InvalidInput
from posttrain.loop.runner import Turn
from posttrain.models.lineage import lineage
from posttrain.models.registry import get_model, register_model
from posttrain.project import Project


def _product_logs(project: Project, seed: int, n: int = 160) -> None:
    """Answers to 'add A B' from a small pool of prompts, right 40% of the time, with thumbs."""
    rng = random.Random(seed)
    pool = [(a, b) for a in range(4) for b in range(5)]
    events, thumbs = [], []
    for i in range(n):
        a, b = rng.choice(pool)
        right = rng.random() < 0.4
        answer = str(a + b) if right else str(a + b + rng.choice([1, 10]))
        iid = f"s{seed}-{i}"
        events.append({"id": iid, "messages": [{"role": "user", "content": f"add {a} {b}"}], "response": answer,
                       "user_id": f"u{i % 40}", "cohort": "minor" if i % 5 == 0 else "adult"})  # fmt: skip
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
    assert {s.step for s in turn.steps if s.state == "skipped"} == {"reward", "dpo", "grpo", "evaluate"}
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
    gates = resumed.step("evaluate").result["gates"]  # type: ignore[union-attr]
    assert list(gates) == ["t-t1-sft vs base"] and {c["slice"] for c in gates["t-t1-sft vs base"]["checks"]} == {
        "overall", "cohort 'adult'", "cohort 'minor'"}  # fmt: skip


def test_specialise_gives_a_cohort_its_own_model_from_all_its_history(served: Project) -> None:
    _product_logs(served, seed=6)
    recipe = _recipe(experiment={"enabled": False},
                     specialise={"minor": {"min_rows": 2, "learning_rate": 1e-3, "history": "all"}})  # fmt: skip
    [first] = loop.run(served, recipe, 1, base="base")
    assert first.result["serving"] == {"adult": "t-t1-sft", "minor": "t-t1-minor"}  # type: ignore[index]
    assert [m.model.name for m in lineage(served, "t-t1-minor").chain] == ["t-t1-minor", "t-t1-sft", "base"]
    _product_logs(served, seed=7)
    [second] = loop.run(served, recipe, 1)
    built = second.step("datasets").result["datasets"]  # type: ignore[union-attr]
    first_built = first.step("datasets").result["datasets"]  # type: ignore[union-attr]
    assert built["sft:minor"]["rows"] > first_built["sft:minor"]["rows"]  # every turn's minors, not the window's
    assert built["sft"]["rows"] <= first_built["sft"]["rows"] + 5  # the shared model still learns from the window


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
    from posttrain.evals import SuiteConfig, read_scores, run_eval

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
    assert gate["reasons"] and not any(gate["passed"].values())
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


def test_loop_runs_in_the_server_when_one_owns_the_warehouse(served: Project) -> None:
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
        assert any(j["kind"] == "loop.run" and j["state"] == "succeeded" for j in jobs)
    finally:
        live.stop()
