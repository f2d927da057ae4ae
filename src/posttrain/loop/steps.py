"""The steps of a turn. Each takes the ``Turn`` and returns its record of what it did (stored with the step).

The records are in ``posttrain.loop.results``: ``skipped`` says why a step did nothing; ``rejected``
ends the turn with the candidate rejected; ``summary`` is the one line shown while the loop runs.
What a turn makes is named through ``posttrain.loop.names``, where a cohort appears in its
file-safe form (``cohort_part``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from posttrain import datasets, experiments, routing
from posttrain.clock import utc_now
from posttrain.errors import InvalidInput, NotFound
from posttrain.loop.names import cohort_part, loop_name, route_name
from posttrain.loop.results import (
    AnnotateResult,
    AnyStepResult,
    Arm,
    BuiltDataset,
    CollectResult,
    DatasetsResult,
    DecideResult,
    Decision,
    EvaluateResult,
    ExperimentResult,
    GateStepResult,
    PairGate,
    SpecialiseResult,
    TrafficResult,
    TrainResult,
)
from posttrain.loop.turns import Turn, update_turn
from posttrain.models.registry import find_model
from posttrain.records import DatasetKind


def _model_done(turn: Turn, name: str) -> bool:
    """A training step killed after registering its model has finished: do not train it again."""
    return find_model(turn.project, name) is not None


# --- collect and build ------------------------------------------------------------------------


def collect(turn: Turn) -> CollectResult:
    """Fix the turn's window: the interactions and feedback since the previous turn's."""
    end = utc_now()  # a retried collect (the last one found too little) takes the window up to now
    update_turn(turn.project, turn.record, window_end=end)
    start = turn.record.window_start
    where, params = ("timestamp <= ?", [end]) if start is None else ("timestamp > ? AND timestamp <= ?", [start, end])
    cur = turn.project.cursor()
    interactions = cur.execute(f"SELECT count(*) FROM interactions WHERE {where}", params).fetchone()[0]  # type: ignore[index]
    rows = cur.execute(
        f"SELECT kind, count(*) FROM feedback WHERE interaction_id IN (SELECT id FROM interactions WHERE {where}) "
        "GROUP BY kind ORDER BY kind",
        params,
    ).fetchall()
    feedback = {kind: int(n) for kind, n in rows}
    total = sum(feedback.values())
    if total < turn.recipe.min_feedback:
        since = "the start" if start is None else f"{start:%Y-%m-%d %H:%M:%S} UTC"
        raise InvalidInput(
            f"{total} feedback events since {since}, the recipe needs {turn.recipe.min_feedback} (min_feedback); "
            "let the product collect more"
        )
    return CollectResult(interactions=int(interactions), feedback=feedback,
                         summary=f"{interactions} interactions, {total} feedback events")  # fmt: skip


# --- annotate -------------------------------------------------------------------------------------


def _annotation_queue(turn: Turn) -> str:
    """Return the stage's queue, created with the stage's task, overlap and judges when missing."""
    from posttrain import annotate

    stage = turn.recipe.annotate
    name = stage.queue or loop_name(turn.recipe.name, "annotate")
    try:
        annotate.get_queue(turn.project, name)
    except NotFound:
        config = annotate.QueueConfig(name=name, task=stage.task, overlap=stage.overlap, judges=stage.judges,
                                      priority="active", gold_share=0)  # fmt: skip
        annotate.create_queue(turn.project, config, author=f"loop:{turn.recipe.name}")
    return name


def _window_condition(turn: Turn) -> str:
    """Return the turn's window as one SQL condition over ``i`` (literals: a fill takes no parameters)."""
    start, end = turn.record.window_start, turn.record.window_end
    assert end is not None
    after = f"i.\"timestamp\" > TIMESTAMP '{start.isoformat(sep=' ')}' AND " if start is not None else ""
    return f"{after}i.\"timestamp\" <= TIMESTAMP '{end.isoformat(sep=' ')}'"


def annotate_(turn: Turn) -> AnnotateResult:
    """Fill the turn's queue by active selection, have it labelled, and report what resolved."""
    stage = turn.recipe.annotate
    if not stage.enabled:
        return AnnotateResult(skipped="annotate is off in the recipe (annotate.enabled)")
    from posttrain import annotate
    from posttrain.annotate import active

    name = _annotation_queue(turn)
    chosen = active.select(turn.project, name, stage.budget, where=_window_condition(turn),
                           seed=turn.recipe.seed * 1000 + turn.number)  # fmt: skip
    if turn.annotators is not None:
        turn.annotators(turn, name)
    else:
        deadline = time.monotonic() + stage.max_wait_seconds
        while time.monotonic() < deadline and annotate.summarise(turn.project, name).done < chosen.added:
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    queue = annotate.summarise(turn.project, name)
    summary = f"{name}: {chosen.added} items asked, {chosen.judge_resolved} by judges alone, {queue.done} resolved"
    return AnnotateResult(queue=name, added=chosen.added, judge_resolved=chosen.judge_resolved, resolved=queue.done,
                          open=queue.items - queue.done, labels=queue.labels, summary=summary)  # fmt: skip


def _until(turn: Turn) -> datetime:
    """BuildConfig's ``until`` is exclusive, the window's end inclusive: a microsecond later."""
    assert turn.record.window_end is not None
    return turn.record.window_end + timedelta(microseconds=1)


def datasets_(turn: Turn) -> DatasetsResult:
    """Build the turn's dataset versions from its window (PII scrubbed, lineage kept)."""
    recipe = turn.recipe
    window = {"since": turn.record.window_start, "until": _until(turn)}

    def build(kind: DatasetKind, name: str, **config: Any) -> BuiltDataset:
        try:
            version = datasets.build(turn.project, kind, name, datasets.BuildConfig.parse(**(window | config)))
        except InvalidInput as exc:
            if "no rows match" not in exc.message:
                raise
            return BuiltDataset()
        return BuiltDataset(ref=version.ref, rows=version.row_count)

    curate = {} if recipe.curate is None else {"curate": recipe.curate.model_dump(mode="json", exclude_unset=True)}
    built = {
        "sft": build("sft", loop_name(recipe.name, "sft"), **curate),
        "preference": build("preference", loop_name(recipe.name, "pairs"), **curate),
        "prompts": build(
            "prompts", loop_name(recipe.name, "prompts"), verifier=recipe.grpo.verifier, answer_from=None, **curate
        ),  # fmt: skip
    }
    for cohort, stage in recipe.specialise.items():
        since: dict[str, Any] = {"since": None} if stage.history == "all" else {}  # every turn's, not the window's
        if stage.curate is not None:
            since["curate"] = stage.curate.model_dump(mode="json", exclude_unset=True)
        elif curate:
            since |= curate
        part = cohort_part(cohort)
        built[f"sft:{cohort}"] = build("sft", loop_name(recipe.name, "sft", part), cohort=[cohort],
                                       dedupe=stage.dedupe, **since)  # fmt: skip
        if stage.dpo_learning_rate is not None:
            built[f"preference:{cohort}"] = build("preference", loop_name(recipe.name, "pairs", part),
                                                  cohort=[cohort], **since)  # fmt: skip
        if stage.grpo_steps:
            built[f"prompts:{cohort}"] = build("prompts", loop_name(recipe.name, "prompts", part), cohort=[cohort],
                                               verifier=recipe.grpo.verifier, answer_from=None, **since)  # fmt: skip
    summary = ", ".join(f"{k} {v.rows}" for k, v in built.items())
    return DatasetsResult(datasets=built, summary=summary)


def _dataset(turn: Turn, kind: str, cohort: str | None = None) -> BuiltDataset:
    return turn.result("datasets", DatasetsResult).built(kind, cohort)


# --- training ---------------------------------------------------------------------------------


def _train(turn: Turn, method: str, output: str, **config: Any) -> TrainResult:
    from posttrain.train.methods import METHODS
    from posttrain.train.runner import parse_config

    if _model_done(turn, output):
        return TrainResult(model=output, summary=f"{output} (already trained)")
    config_cls, train = METHODS[method]
    started = time.perf_counter()
    record = train(turn.project, parse_config(config_cls, {"output": output, "seed": turn.recipe.seed, **config}))
    loss = {k: v for k, v in record.metrics.items() if isinstance(v, int | float)}
    return TrainResult(model=record.name, metrics=loss,
                       summary=f"{record.name} in {time.perf_counter() - started:.1f}s")  # fmt: skip


def _skip(enabled: bool, what: str, rows: int, minimum: int, unit: str, setting: str) -> TrainResult | None:
    """Return why a training stage does nothing (off, or too little data), or None when it runs."""
    if not enabled:
        return TrainResult(skipped=f"{what} is off in the recipe")
    if rows < minimum:
        return TrainResult(skipped=f"{rows} {unit}, fewer than {setting} {minimum}")
    return None


def sft(turn: Turn) -> TrainResult:
    stage, data = turn.recipe.sft, _dataset(turn, "sft")
    if skipped := _skip(stage.enabled, "sft", data.rows, stage.min_rows, "sft rows", "min_rows"):
        return skipped
    return _train(turn, "sft", turn.name("sft"), model=turn.parent, dataset=data.ref,
                  learning_rate=stage.learning_rate, epochs=stage.epochs, batch_size=stage.batch_size,
                  **stage.train)  # fmt: skip


def reward(turn: Turn) -> TrainResult:
    stage, data = turn.recipe.reward, _dataset(turn, "preference")
    if skipped := _skip(stage.enabled, "the reward model", data.rows, stage.min_pairs, "new pairs", "min_pairs"):
        return skipped
    return _train(turn, "reward", turn.name("rm"), model=turn.candidate(), dataset=data.ref,
                  learning_rate=stage.learning_rate, epochs=stage.epochs, batch_size=stage.batch_size,
                  **stage.train)  # fmt: skip


def dpo(turn: Turn) -> TrainResult:
    stage, data = turn.recipe.dpo, _dataset(turn, "preference")
    if skipped := _skip(stage.enabled, "dpo", data.rows, stage.min_pairs, "pairs", "min_pairs"):
        return skipped
    return _train(turn, "dpo", turn.name("dpo"), model=turn.candidate(), dataset=data.ref,
                  learning_rate=stage.learning_rate, epochs=stage.epochs, beta=stage.beta,
                  batch_size=stage.batch_size, **stage.train)  # fmt: skip


def _latest_reward_model(turn: Turn) -> str | None:
    row = (
        turn.project.cursor()
        .execute(
            "SELECT name FROM models WHERE kind = 'reward-model' AND starts_with(name, ?) "
            "AND regexp_full_match(substr(name, length(?) + 1), 't[0-9]+-rm') ORDER BY created_at DESC LIMIT 1",
            [f"{turn.recipe.name}-", f"{turn.recipe.name}-"],
        )
        .fetchone()
    )
    return None if row is None else str(row[0])


def grpo(turn: Turn) -> TrainResult:
    stage, data = turn.recipe.grpo, _dataset(turn, "prompts")
    if skipped := _skip(stage.enabled, "grpo", data.rows, stage.min_prompts, "prompts", "min_prompts"):
        return skipped
    rewards = []
    for spec in stage.reward:
        if spec == "reward-model":
            rm = _latest_reward_model(turn)
            if rm is not None:
                rewards.append(f"model:{rm}")
        else:
            rewards.append(spec)
    if not rewards:
        return TrainResult(skipped="no reward: the recipe asks for the reward model and none is trained yet")
    return _train(turn, "grpo", turn.name("grpo"), model=turn.candidate(), dataset=data.ref, reward=rewards,
                  learning_rate=stage.learning_rate, max_steps=stage.max_steps, batch_size=stage.batch_size,
                  num_generations=stage.num_generations,
                  max_completion_length=stage.max_completion_length, **stage.train)  # fmt: skip


def _cohort_model(turn: Turn, cohort: str, candidate: str) -> str | None:
    """Tune ``candidate`` on the cohort's own data (SFT, then DPO and GRPO when asked); None when too little."""
    stage, data = turn.recipe.specialise[cohort], _dataset(turn, "sft", cohort)
    if not stage.enabled or data.rows < stage.min_rows:
        return None
    part = cohort_part(cohort)
    model = turn.name(part)
    _train(turn, "sft", model, model=candidate, dataset=data.ref, learning_rate=stage.learning_rate,
           epochs=stage.epochs, batch_size=stage.batch_size)  # fmt: skip
    pairs = _dataset(turn, "preference", cohort)
    if stage.dpo_learning_rate is not None and pairs.rows >= stage.min_pairs:
        tuned = turn.name(part, "dpo")
        _train(turn, "dpo", tuned, model=model, dataset=pairs.ref, learning_rate=stage.dpo_learning_rate, epochs=2,
               batch_size=stage.batch_size)  # fmt: skip
        model = tuned
    prompts, g = _dataset(turn, "prompts", cohort), turn.recipe.grpo
    if stage.grpo_steps and prompts.rows >= g.min_prompts:
        tuned = turn.name(part, "grpo")
        _train(turn, "grpo", tuned, model=model, dataset=prompts.ref,
               reward=[r for r in g.reward if r != "reward-model"] or ["verifier:row"],
               learning_rate=stage.grpo_learning_rate, max_steps=stage.grpo_steps, batch_size=g.batch_size,
               num_generations=g.num_generations, max_completion_length=g.max_completion_length)  # fmt: skip
        model = tuned
    return model


def specialise(turn: Turn) -> SpecialiseResult:
    """Give each cohort its candidate: the turn's model, or that model tuned on the cohort's own answers."""
    candidate = turn.candidate()
    candidates = {cohort: candidate for cohort in turn.recipe.cohorts}
    trained = []
    for cohort in turn.recipe.specialise:
        if cohort in candidates and (model := _cohort_model(turn, cohort, candidate)) is not None:
            candidates[cohort] = model
            trained.append(model)
    fresh = {c: m for c, m in candidates.items() if m != turn.record.serving.get(c)}
    if not fresh:
        return SpecialiseResult(candidates=candidates, rejected=True, reasons=["nothing was trained this turn"],
                                summary="nothing to train on")  # fmt: skip
    summary = ", ".join(f"{c}: {m}" for c, m in candidates.items())
    return SpecialiseResult(candidates=candidates, trained=trained, summary=summary)


def _candidates(turn: Turn) -> dict[str, str]:
    return dict(turn.result("specialise", SpecialiseResult).candidates)


# --- gate -------------------------------------------------------------------------------------


def _suite(turn: Turn) -> Any:
    from posttrain.evals import SuiteConfig

    stage = turn.recipe.eval
    return SuiteConfig(dataset=stage.dataset, scorers=stage.scorers, samples=stage.samples,  # type: ignore[arg-type]
                       temperature=stage.temperature, max_new_tokens=stage.max_new_tokens,
                       seed=turn.recipe.seed)  # fmt: skip


def evaluate(turn: Turn) -> EvaluateResult:
    """Compare each cohort's candidate with its serving model on the eval suite (the gate's evidence)."""
    from posttrain.evals import gate as run_gate

    stage = turn.recipe.eval
    if not stage.enabled or stage.dataset is None:
        return EvaluateResult(
            skipped="no eval suite in the recipe (eval.dataset): the gate lets every candidate through"
        )
    pairs = {(m, turn.record.serving[c]) for c, m in _candidates(turn).items() if m != turn.record.serving[c]}
    gates = []
    for candidate, baseline in sorted(pairs):
        result = run_gate(turn.project, candidate, baseline, _suite(turn), margin=stage.margin, rule=stage.rule)
        gates.append(PairGate(candidate=candidate, baseline=baseline, metric=result.metric, checks=result.checks,
                              reasons=result.reasons))  # fmt: skip
    lines = [f"{g.candidate} vs {g.baseline}: {g.overall.candidate:.3f} vs {g.overall.baseline:.3f}" for g in gates]
    return EvaluateResult(gates=gates, summary="; ".join(lines))


def _judge(turn: Turn, evaluated: EvaluateResult, cohort: str, candidate: str, out: GateStepResult) -> None:
    """Pass ``cohort``'s candidate or not, by the overall check and the cohort's own; record why."""
    serving = turn.record.serving[cohort]
    if evaluated.skipped:
        out.passed[cohort] = True
        return
    pair = evaluated.pair(candidate, serving)
    out.checks[cohort] = pair.decisive(cohort)
    out.passed[cohort] = all(c.passed for c in out.checks[cohort])
    if not out.passed[cohort]:
        failing = [c for c in pair.checks if not c.passed]  # compare states one reason per failing check, in order
        reasons = [r for c, r in zip(failing, pair.reasons, strict=True) if c.cohort in (None, cohort)]
        out.reasons += [f"{cohort}: {r}" for r in reasons]


def gate(turn: Turn) -> GateStepResult:
    """Pass a cohort's candidate only if it is no worse than serving overall and in that cohort."""
    evaluated, candidates = turn.result("evaluate", EvaluateResult), _candidates(turn)
    out = GateStepResult()
    for cohort, candidate in candidates.items():
        if candidate != turn.record.serving[cohort]:
            _judge(turn, evaluated, cohort, candidate, out)
    kept = {candidates[c] for c, ok in out.passed.items() if ok}
    for name in {candidates[c] for c, ok in out.passed.items() if not ok} - kept:
        turn.project.cursor().execute("UPDATE models SET status = 'rejected' WHERE name = ?", [name])
    summary = ", ".join(f"{c}: {'pass' if ok else 'fail'}" for c, ok in out.passed.items())
    out.rejected = not any(out.passed.values())
    out.summary = f"rejected ({summary})" if out.rejected else summary
    return out


# --- experiment and decision -------------------------------------------------------------------


def experiment(turn: Turn) -> ExperimentResult:
    """Start an A/B test per cohort whose candidate passed, and route the cohort to it."""
    stage, passed = turn.recipe.experiment, turn.result("gate", GateStepResult).passed
    candidates = _candidates(turn)
    started: dict[str, str | None] = {}
    for cohort, ok in passed.items():
        if not ok:
            continue
        name = turn.name("ab", cohort_part(cohort))
        if not stage.enabled:
            started[cohort] = None
            continue
        existing = experiments.list_experiments(turn.project, with_analyses=False)
        if name not in {e.name for e in existing}:
            config = experiments.ExperimentConfig(
                name=name,
                variants=[
                    experiments.Variant(name="serving", model=turn.record.serving[cohort],
                                        share=round(1 - stage.treatment_share, 6)),
                    experiments.Variant(name="candidate", model=candidates[cohort],
                                        share=round(stage.treatment_share, 6)),
                ],
                cohorts=[cohort], metric=stage.metric, guardrails=stage.guardrails,
                min_samples=stage.min_samples, alpha=stage.alpha,
            )  # fmt: skip
            experiments.create_experiment(turn.project, config)
        if experiments.get_experiment(turn.project, name).state == "draft":
            experiments.start(turn.project, name)
        _point(turn, cohort, experiment=name)
        started[cohort] = name
    return ExperimentResult(experiments=started, summary=", ".join(f"{c}: {e}" for c, e in started.items()))


def _point(turn: Turn, cohort: str, *, model: str | None = None, experiment: str | None = None) -> None:
    recipe = turn.recipe
    routing.add_route(
        turn.project,
        routing.RouteRule(name=route_name(recipe.name, cohort), cohort=cohort, requested=recipe.requested_model,
                          model=model, experiment=experiment),
        replace=True,
    )  # fmt: skip


def _measured(turn: Turn, name: str) -> int:
    analysis = experiments.analyse(turn.project, name, keep=False)
    ns = [v.metrics[analysis.metric].n for v in analysis.variants]
    return min(ns) if len(ns) == len(experiments.get_experiment(turn.project, name).config.variants) else 0


def traffic(turn: Turn) -> TrafficResult:
    """Let the experiments collect traffic: the caller's (simulated) traffic, or wait for real users."""
    running = {c: e for c, e in turn.experiments().items() if e}
    if not running:
        return TrafficResult(skipped="no experiment to collect traffic for")
    if turn.traffic is not None:
        turn.traffic(turn)
    else:
        stage = turn.recipe.experiment
        deadline = time.monotonic() + stage.max_wait_seconds
        while time.monotonic() < deadline:
            if all(_measured(turn, e) >= stage.min_samples for e in running.values()):
                break
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    measured = {c: _measured(turn, e) for c, e in running.items()}
    return TrafficResult(measured=measured, summary=", ".join(f"{c}: {n} per arm" for c, n in measured.items()))


def _settle(turn: Turn, name: str) -> experiments.Experiment:
    """Decide a running experiment (promote a candidate not worse, if the recipe says so); return it settled."""
    found = experiments.get_experiment(turn.project, name)
    if found.state != "running":
        return found
    decision = experiments.decide(turn.project, name, apply=True)
    found = experiments.get_experiment(turn.project, name)
    if decision.action != "continue":
        return found
    comparison = next((r.comparisons.get(found.config.metric) for r in decision.analysis.variants
                       if r.variant == "candidate"), None)  # fmt: skip
    not_worse = comparison is not None and comparison.test is not None and not comparison.worse
    if turn.recipe.experiment.promote_if_not_worse and not_worse:
        return experiments.promote(turn.project, name, "candidate")
    return experiments.rollback(turn.project, name)


def _decision(turn: Turn, cohort: str, candidate: str, name: str) -> Decision:
    """Settle ``cohort``'s experiment, route the cohort to the winner, and say what was decided."""
    found = _settle(turn, name)
    record = found.decision
    winner = record.variant if found.state == "promoted" and record else None
    model = candidate if winner == "candidate" else turn.record.serving[cohort]
    _point(turn, cohort, model=model)
    analysis = record.analysis if record else None
    metric = analysis.metric if analysis else turn.recipe.experiment.metric
    models = {v.name: v.model for v in found.config.variants}
    arms = {
        v.variant: Arm(model=models.get(v.variant), **v.metrics[metric].model_dump(include={"n", "mean", "ci_low",
                                                                                              "ci_high"}))
        for v in analysis.variants
    } if analysis else {}  # fmt: skip
    return Decision(experiment=name, action="promote" if winner == "candidate" else "keep", model=model,
                    metric=metric, arms=arms, reasons=record.reasons if record else [])  # fmt: skip


def decide(turn: Turn) -> DecideResult:
    """Promote a cohort's candidate that wins its experiment; otherwise the serving model stays."""
    candidates = _candidates(turn)
    passed = turn.result("gate", GateStepResult).passed
    decisions: dict[str, Decision] = {}
    for cohort, name in turn.experiments().items():
        if name is not None:
            decisions[cohort] = _decision(turn, cohort, candidates[cohort], name)
        elif passed.get(cohort):  # experiments off: a gated candidate is promoted on the eval suite alone
            _point(turn, cohort, model=candidates[cohort])
            decisions[cohort] = Decision(action="promote", model=candidates[cohort], reasons=["passed the gate"])
    summary = ", ".join(f"{c}: {d.action} {d.model}" for c, d in decisions.items())
    return DecideResult(decisions=decisions, summary=summary)


FUNCTIONS: dict[str, Callable[[Turn], AnyStepResult]] = {
    "collect": collect,
    "annotate": annotate_,
    "datasets": datasets_,
    "sft": sft,
    "reward": reward,
    "dpo": dpo,
    "grpo": grpo,
    "specialise": specialise,
    "evaluate": evaluate,
    "gate": gate,
    "experiment": experiment,
    "traffic": traffic,
    "decide": decide,
}
