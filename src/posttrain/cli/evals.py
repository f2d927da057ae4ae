"""``posttrain evals run|compare|gate|list``: score models on an eval suite, side by side, and gate them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress

from posttrain import evals as lib
from posttrain.cli import render
from posttrain.cli.options import JsonOption, ProjectOption, through_server
from posttrain.cli.remote import Remote
from posttrain.evals.compare import GateRule
from posttrain.evals.intervals import Estimate, Slices
from posttrain.train.runner import load_config

app = typer.Typer(
    help="Evals: score a model on an eval suite, compare it with the serving model, gate it.", no_args_is_help=True
)

DatasetOption = Annotated[str | None, typer.Option(help="An eval dataset: NAME (latest) or NAME@VERSION.")]
VerifierOption = Annotated[
    list[str] | None,
    typer.Option(
        "--verifier",
        "-v",
        help="A verifier (exact_match, numeric:TOL, regex, row, or a name in [functions.verifiers]); repeat.",
    ),  # fmt: skip
]
RewardOption = Annotated[list[str] | None, typer.Option("--reward-model", help="A registered reward model; repeat.")]
SamplesOption = Annotated[int | None, typer.Option("--samples", "-k", help="Completions per prompt. [default: 1]")]
TemperatureOption = Annotated[float | None, typer.Option(help="Sampling temperature; 0 is greedy. [default: 0]")]
TokensOption = Annotated[int | None, typer.Option(help="Most tokens per completion. [default: 32]")]
SeedOption = Annotated[int | None, typer.Option(help="Sampling seed. [default: 0]")]
FamilyOption = Annotated[str | None, typer.Option(help="Task family: auto, first_word or a column. [default: auto]")]
JudgeOption = Annotated[
    str | None, typer.Option(help="Pairwise judge: verifier:NAME, model:RM or function:NAME (in [functions.judges]).")
]
ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="A YAML suite file; flags override it.")]
BaselineOption = Annotated[str | None, typer.Option(help="The model to beat (default: the serving model).")]
CandidateArg = Annotated[str, typer.Argument(help="The candidate model (see 'posttrain models list').")]


def _suite(
    config: Path | None, dataset: str | None, verifier: list[str] | None, reward_model: list[str] | None, **rest: object
) -> lib.SuiteConfig:
    """Return the suite from ``--config`` with the flags on top (None means unset)."""
    scorers = [*(verifier or []), *(f"model:{m}" for m in reward_model or [])] or None
    # load_config only validates a Pydantic model; its type variable is bound to TrainConfig
    return load_config(lib.SuiteConfig, config, {"dataset": dataset, "scorers": scorers, **rest})  # type: ignore[type-var]


def _post(api: Remote, path: str, body: dict[str, Any]) -> Any:
    """Start an eval on the running server, follow its job, and return the record it made."""
    return api.follow_job(api.call("POST", f"/api/evals/{path}", json=body)).result


@contextmanager
def _bar(quiet: bool) -> Iterator[Callable[[int, int], None]]:
    with Progress(console=render.console, transient=True, disable=quiet) as bar:
        task = bar.add_task("generating", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _ci(e: Estimate) -> str:
    return "" if e.ci_low is None or e.ci_high is None else f"[{e.ci_low:.3f}, {e.ci_high:.3f}]"


def _slices(s: Slices) -> Iterator[tuple[str, Estimate]]:
    yield "overall", s.overall
    yield from ((f"cohort {k}", v) for k, v in s.cohorts.items())
    yield from ((f"family {k}", v) for k, v in s.families.items())


@app.command()
def run(
    model: Annotated[str, typer.Argument(help="A registered causal-lm (see 'posttrain models list').")],
    dataset: DatasetOption = None,
    verifier: VerifierOption = None,
    reward_model: RewardOption = None,
    samples: SamplesOption = None,
    temperature: TemperatureOption = None,
    max_new_tokens: TokensOption = None,
    seed: SeedOption = None,
    family: FamilyOption = None,
    config: ConfigOption = None,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Generate with a model on an eval dataset and score it: mean and 95% CI overall, per cohort and family."""
    suite = _suite(config, dataset, verifier, reward_model, samples=samples, temperature=temperature,
                   max_new_tokens=max_new_tokens, seed=seed, family=family)  # fmt: skip
    body = {"model": model, "suite": suite.model_dump(mode="json")}
    with _bar(json) as progress:
        result = through_server(
            project,
            lambda proj: lib.run_eval(proj, model, suite, progress=progress),
            lambda api: lib.EvalResult.model_validate(_post(api, "run", body)),
        )
    if json:
        render.as_json(result)
        return
    rows = [[name, where, e.n, f"{e.mean:.3f}", _ci(e)] for name, s in result.scores.items() for where, e in _slices(s)]
    render.table(["scorer", "slice", "n", "mean", "95% CI"], rows, title=f"{result.model} on {result.dataset}")
    typer.echo(f"eval run {result.id} ({result.prompts} prompts × {result.samples}, {result.seconds:.1f} s)")


def _render_comparison(c: lib.ComparisonResult) -> None:
    cand, base = c.candidate, c.baseline
    rows = []
    for name, diff in c.differences.items():
        mine, theirs = dict(_slices(cand.scores[name])), dict(_slices(base.scores[name]))
        for where, d in _slices(diff):
            rows.append([name, where, d.n, f"{mine[where].mean:.3f}", f"{theirs[where].mean:.3f}", f"{d.mean:+.3f}",
                         _ci(d)])  # fmt: skip
    columns = ["scorer", "slice", "n", cand.model, base.model, "difference", "95% CI"]
    render.table(columns, rows, title=f"{cand.model} vs {base.model} on {cand.dataset}")
    wins = [[where, e.n, f"{e.mean:.3f}", _ci(e)] for where, e in _slices(c.win_rate)]
    render.table(["slice", "n", "win rate", "95% CI"], wins, title=f"{cand.model}'s win rate, judge {c.judge}")


@app.command()
def compare(
    candidate: CandidateArg,
    baseline: BaselineOption = None,
    dataset: DatasetOption = None,
    verifier: VerifierOption = None,
    reward_model: RewardOption = None,
    judge: JudgeOption = None,
    samples: SamplesOption = None,
    temperature: TemperatureOption = None,
    max_new_tokens: TokensOption = None,
    seed: SeedOption = None,
    family: FamilyOption = None,
    config: ConfigOption = None,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Run a suite on a candidate and the serving model: paired differences and the judge's win rate."""
    suite = _suite(config, dataset, verifier, reward_model, judge=judge, samples=samples, temperature=temperature,
                   max_new_tokens=max_new_tokens, seed=seed, family=family)  # fmt: skip
    body = {"candidate": candidate, "baseline": baseline, "suite": suite.model_dump(mode="json")}
    with _bar(json) as progress:
        result = through_server(
            project,
            lambda proj: lib.compare(proj, candidate, baseline, suite, progress=progress),
            lambda api: lib.ComparisonResult.model_validate(_post(api, "compare", body)),
        )
    if json:
        render.as_json(result)
    else:
        _render_comparison(result)


@app.command()
def gate(
    candidate: CandidateArg,
    baseline: BaselineOption = None,
    dataset: DatasetOption = None,
    margin: Annotated[float, typer.Option(help="The loss tolerated, in the metric's units.")] = 0.02,
    metric: Annotated[str | None, typer.Option(help="The scorer gated on (default: the first).")] = None,
    rule: Annotated[GateRule, typer.Option(help="ci: the difference's lower 95% bound; mean: the difference.")] = "ci",
    verifier: VerifierOption = None,
    reward_model: RewardOption = None,
    judge: JudgeOption = None,
    samples: SamplesOption = None,
    temperature: TemperatureOption = None,
    max_new_tokens: TokensOption = None,
    seed: SeedOption = None,
    family: FamilyOption = None,
    config: ConfigOption = None,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Pass (exit 0) only if the candidate is no worse than the baseline beyond --margin overall and per cohort."""
    suite = _suite(config, dataset, verifier, reward_model, judge=judge, samples=samples, temperature=temperature,
                   max_new_tokens=max_new_tokens, seed=seed, family=family)  # fmt: skip
    body = {"candidate": candidate, "baseline": baseline, "suite": suite.model_dump(mode="json"), "margin": margin,
            "metric": metric, "rule": rule}  # fmt: skip
    with _bar(json) as progress:
        verdict = through_server(
            project,
            lambda proj: lib.gate(
                proj, candidate, baseline, suite, margin=margin, metric=metric, rule=rule, progress=progress
            ),
            lambda api: lib.GateResult.model_validate(_post(api, "gate", body)),
        )
    if json:
        render.as_json(verdict)
    else:
        _render_comparison(verdict.comparison)
        base = verdict.comparison.baseline.model
        typer.echo(f"gate {'passed' if verdict.passed else 'FAILED'}: {candidate} vs {base} on {verdict.metric}, "
                   f"margin {verdict.margin:g} ({verdict.rule} rule)")  # fmt: skip
        for reason in verdict.reasons:
            typer.echo(f"  {reason}")
    if not verdict.passed:
        raise typer.Exit(1)


@app.command("list")
def list_(
    model: Annotated[str | None, typer.Option(help="Only this model's runs.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only runs on this NAME@VERSION.")] = None,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """List stored eval runs, newest first, with each scorer's overall mean."""
    filters = {k: v for k, v in {"model": model, "dataset": dataset}.items() if v}
    runs = through_server(
        project,
        lambda proj: lib.list_runs(proj, model=model, dataset=dataset),
        lambda api: [lib.EvalResult.model_validate(r) for r in api.call("GET", "/api/evals", params=filters)],
    )
    if json:
        render.as_json(runs)
        return
    rows = [[r.id, r.model, r.dataset, ", ".join(f"{k} {s.overall.mean:.3f}" for k, s in r.scores.items()),
             r.created_at] for r in runs]  # fmt: skip
    render.table(["id", "model", "dataset", "overall means", "created_at"], rows, title="eval runs")
