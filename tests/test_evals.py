"""Eval suites: scores by slice with CIs, storage and lineage, pairwise judging, compare and gate."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from posttrain import evals, jobs
from posttrain.datasets import write_version
from posttrain.errors import InvalidInput, NotFound
from posttrain.evals.intervals import estimate, slice_values
from posttrain.evals.verifiers import get_verifier
from posttrain.models.registry import get_model, register_model
from posttrain.models.tiny import init_tiny
from posttrain.project import Project
from posttrain.records import DatasetVersion, ModelRecord

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

# cohort a: answers 2, 4, 6, 7 (3 even); cohort b: 1, 3, 8, 9 (1 even); "add" rows are 0..3, "mul" 4..7
ROWS = [
    ("add 1 and 1", "2", "a"),
    ("add 2 and 1", "3", "b"),
    ("add 2 and 2", "4", "a"),
    ("add 0 and 1", "1", "b"),
    ("mul 2 and 3", "6", "a"),
    ("mul 2 and 4", "8", "b"),
    ("mul 1 and 7", "7", "a"),
    ("mul 3 and 3", "9", "b"),
]


def answer_even(completion: str, answer: str | None, **row: object) -> float:
    """A verifier that ignores the completion: 1 when the reference answer is even."""
    return float(int(str(answer)) % 2 == 0)


def length_parity(completion: str, answer: str | None, **row: object) -> float:
    return float(len(completion) % 2 == 0)


def spoke_in_a(completion: str, answer: str | None, *, cohort: str, **row: object) -> float:
    """Cohort a wants an answer (any text), cohort b wants silence."""
    return float(bool(completion) == (cohort == "a"))


def first_wins(first: str, second: str, **row: object) -> float:
    """A judge with total position bias."""
    return 1.0


VERIFIERS = {name: f"{__name__}:{name}" for name in ("answer_even", "length_parity", "spoke_in_a")}


@pytest.fixture(autouse=True)
def _registered(project: Project) -> None:
    """This module's verifiers and judge, registered as posttrain.toml [functions] would."""
    project.settings.functions.verifiers.update(VERIFIERS)
    project.settings.functions.judges["first_wins"] = f"{__name__}:first_wins"


def write_eval(project: Project, rows: list[tuple[str, str, str]] = ROWS, name: str = "ev") -> DatasetVersion:
    table = pa.table(
        {
            "prompt": [[{"role": "user", "content": q}] for q, _, _ in rows],
            "answer": [a for _, a, _ in rows],
            "completion": pa.nulls(len(rows), pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
            "cohort": [c for _, _, c in rows],
            "user_id": [f"u{i}" for i in range(len(rows))],
            "session_id": [f"s{i}" for i in range(len(rows))],
        }
    )
    return write_version(project, name, "eval", table, recipe={"test": True}, sources={"interactions": []})


@pytest.fixture
def base(project: Project) -> ModelRecord:
    return init_tiny(project, "base", hidden=32, layers=2, heads=2)


@pytest.fixture
def silent(project: Project, base: ModelRecord) -> ModelRecord:
    """The base model with its final norm zeroed: every logit is 0, so it only emits <pad> and says nothing."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base.path)
    model.model.norm.weight.data.zero_()
    folder = project.artifacts / "models" / "silent"
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base.path).save_pretrained(folder)
    return register_model(project, "silent", folder)


@pytest.fixture
def ev(project: Project) -> DatasetVersion:
    return write_eval(project)


def suite(*scorers: str, **options: object) -> evals.SuiteConfig:
    return evals.SuiteConfig(dataset="ev", scorers=list(scorers), max_new_tokens=4, **options)  # type: ignore[arg-type]


# --- intervals ------------------------------------------------------------------------------


def test_estimate_uses_wilson_for_zero_one_and_normal_otherwise() -> None:
    wilson = estimate([1.0, 1.0, 0.0, 0.0])
    assert wilson.method == "wilson" and wilson.mean == 0.5
    assert wilson.ci_low == pytest.approx(0.1500, abs=1e-4) and wilson.ci_high == pytest.approx(0.8500, abs=1e-4)
    normal = estimate([0.5, 1.0, 0.0])
    assert normal.method == "normal" and normal.ci_low < normal.mean < normal.ci_high  # type: ignore[operator]
    assert normal.ci_high - normal.mean == pytest.approx(1.959964 * 0.5 / 3**0.5)  # type: ignore[operator]
    assert estimate([0.3]).ci_low is None


def test_slice_values_groups_by_cohort_and_family() -> None:
    s = slice_values([1.0, 0.0, 1.0], ["x", "y", "x"], ["f", "f", "g"], kind="mean")
    assert s.overall.mean == pytest.approx(2 / 3)
    assert {k: v.mean for k, v in s.cohorts.items()} == {"x": 1.0, "y": 0.0}
    assert {k: v.n for k, v in s.families.items()} == {"f": 2, "g": 1}


# --- run_eval -------------------------------------------------------------------------------


def test_run_eval_means_by_cohort_and_family_with_cis(project: Project, base: ModelRecord, ev: DatasetVersion) -> None:
    result = evals.run_eval(project, "base", suite("answer_even"))
    s = result.scores["answer_even"]
    assert (s.overall.n, s.overall.mean) == (8, 0.5)
    assert {k: v.mean for k, v in s.cohorts.items()} == {"a": 0.75, "b": 0.25}
    assert {k: v.mean for k, v in s.families.items()} == {"add": 0.5, "mul": 0.5}  # first word of the prompt
    for e in [s.overall, *s.cohorts.values(), *s.families.values()]:
        assert e.method == "wilson" and e.ci_low is not None and e.ci_low <= e.mean <= e.ci_high  # type: ignore[operator]
    assert result.dataset == "ev@1" and result.prompts == 8 and result.samples == 1


@pytest.mark.parametrize("name", ["exact_match", "regex", "contains", "length_parity"])
def test_run_eval_stores_each_verifier_score(project: Project, base: ModelRecord, name: str) -> None:
    write_eval(project, [(q, "^\\s*$" if name == "regex" else a, c) for q, a, c in ROWS])
    result = evals.run_eval(project, "base", suite(name))
    table = evals.read_scores(result).to_pylist()
    answers = dict(enumerate(a if name != "regex" else "^\\s*$" for _, a, _ in ROWS))
    expected = [get_verifier(name, VERIFIERS)(r["completion"], answers[r["prompt_index"]]) for r in table]
    assert [r[name] for r in table] == expected
    assert result.scores[name].overall.mean == pytest.approx(sum(expected) / 8)


def test_run_eval_numeric_tolerance_and_greedy_is_deterministic(
    project: Project, silent: ModelRecord, ev: DatasetVersion
) -> None:
    first = evals.run_eval(project, "silent", suite("numeric:0.5", "exact_match"))
    second = evals.run_eval(project, "silent", suite("numeric:0.5", "exact_match"))
    assert evals.read_scores(first).column("completion").to_pylist() == [""] * 8  # says nothing: no number
    assert first.scores["numeric:0.5"].overall.mean == 0.0
    assert evals.read_scores(second).to_pylist() == evals.read_scores(first).to_pylist()


def test_run_eval_samples_average_per_prompt(project: Project, base: ModelRecord, ev: DatasetVersion) -> None:
    name = "length_parity"
    result = evals.run_eval(project, "base", suite(name, samples=3, temperature=1.0))
    table = evals.read_scores(result)
    assert table.num_rows == 24 and table.column("sample").to_pylist()[:3] == [0, 1, 2]
    scores = table.column(name).to_pylist()
    per_prompt = [sum(scores[i : i + 3]) / 3 for i in range(0, 24, 3)]
    overall = result.scores[name].overall
    assert overall.n == 8 and overall.mean == pytest.approx(sum(per_prompt) / 8)


def test_run_eval_family_column_and_row_verifier(project: Project, base: ModelRecord) -> None:
    table = pa.table(
        {
            "prompt": [[{"role": "user", "content": "q"}]] * 2,
            "answer": ["2", "y"],
            "verifier": ["answer_even", "exact_match"],
            "task": ["t1", "t2"],
        }
    )
    write_version(project, "mixed", "prompts", table, recipe={}, sources={})
    result = evals.run_eval(project, "base", evals.SuiteConfig(dataset="mixed", scorers=["row"], max_new_tokens=2))
    assert set(result.scores["row"].families) == {"t1", "t2"}
    assert set(result.scores["row"].cohorts) == {"(none)"}


def test_run_eval_stores_run_with_lineage(project: Project, base: ModelRecord, ev: DatasetVersion) -> None:
    result = evals.run_eval(project, "base", suite("exact_match"))
    row = (
        project.cursor()
        .execute(
            "SELECT m.name, d.name, d.version, r.scores_path FROM eval_runs r "
            "JOIN models m ON m.id = r.model_id JOIN dataset_versions d ON d.id = r.dataset_version_id WHERE r.id = ?",
            [result.id],
        )
        .fetchone()
    )
    assert row is not None and row[:3] == ("base", "ev", 1) and Path(row[3]).is_file()
    assert evals.get_run(project, result.id) == result
    assert [r.id for r in evals.list_runs(project, model="base")] == [result.id]
    assert evals.list_runs(project, dataset="other@1") == []
    job = jobs.get_job(project, result.job_id or "")
    assert job.kind == "evals.run" and job.state == "succeeded" and job.output == result.id
    assert get_model(project, "base").metrics["evals"]["ev@1"] == {"run": result.id, "exact_match": 0.0}
    with pytest.raises(NotFound, match="posttrain evals list"):
        evals.get_run(project, "nope")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scorers": ["python:os:system"]}, "module paths are not accepted"),
        ({"judge": "python:os:system"}, "module paths are not accepted"),
        ({"judge": "function:os:system"}, "module paths are not accepted"),
        ({"scorers": []}, "at least one scorer"),
        ({"scorers": ["exact_match", "exact_match"]}, "named twice"),
        ({"samples": 2}, "greedy decoding"),
        ({"judge": "oracle"}, "judge 'oracle' must be"),
    ],
)
def test_suite_config_refuses_bad_settings(options: dict[str, object], message: str) -> None:
    from posttrain.train.runner import load_config

    with pytest.raises(InvalidInput, match=message):
        load_config(evals.SuiteConfig, overrides={"dataset": "ev", **options})  # type: ignore[type-var]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scorers": ["bogus"]}, "unknown verifier 'bogus'"),
        ({"judge": "function:bogus"}, r"no judge 'bogus' in posttrain.toml \[functions.judges\]"),
        ({"judge": "verifier:bogus"}, "unknown verifier 'bogus'"),
    ],
)
def test_unknown_function_is_refused_before_any_job(
    project: Project, base: ModelRecord, ev: DatasetVersion, options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        evals.compare(project, "base", "base", evals.SuiteConfig(dataset="ev", **options))  # type: ignore[arg-type]
    assert jobs.list_jobs(project) == []


def test_run_eval_refuses_bad_inputs(project: Project, base: ModelRecord, ev: DatasetVersion) -> None:
    with pytest.raises(NotFound, match="no model 'ghost'"):
        evals.run_eval(project, "ghost", suite("exact_match"))
    with pytest.raises(NotFound, match="no dataset 'nope'"):
        evals.run_eval(project, "base", evals.SuiteConfig(dataset="nope"))
    with pytest.raises(InvalidInput, match="family column 'topic'"):
        evals.run_eval(project, "base", suite("exact_match", family="topic"))
    register_model(project, "rm", base.path, kind="reward-model")
    with pytest.raises(InvalidInput, match="is a reward-model"):
        evals.run_eval(project, "rm", suite("exact_match"))
    assert evals.list_runs(project) == []


def test_reward_model_scorer_and_judge(project: Project, base: ModelRecord, ev: DatasetVersion) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = project.artifacts / "models" / "rm"
    AutoModelForSequenceClassification.from_pretrained(base.path, num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(base.path).save_pretrained(folder)
    register_model(project, "rm", folder, kind="reward-model")
    register_model(project, "twin", base.path)
    result = evals.compare(project, "twin", "base", suite("model:rm", judge="model:rm"))
    s = result.candidate.scores["model:rm"].overall
    assert s.method == "normal" and s.n == 8
    assert result.win_rate.overall.mean == 0.5  # the same weights: every pair ties
    assert result.differences["model:rm"].overall.mean == pytest.approx(0.0, abs=1e-6)


# --- compare and gate -------------------------------------------------------------------------


def test_compare_position_biased_judge_cancels(
    project: Project, base: ModelRecord, silent: ModelRecord, ev: DatasetVersion
) -> None:
    result = evals.compare(project, "silent", "base", suite("exact_match", judge="function:first_wins"))
    assert result.win_rate.overall.mean == 0.5 and result.win_rate.overall.n == 8
    assert result.candidate.model == "silent" and result.baseline.model == "base"


def test_compare_verifier_judge_by_cohort(
    project: Project, base: ModelRecord, silent: ModelRecord, ev: DatasetVersion
) -> None:
    name = "spoke_in_a"
    result = evals.compare(project, "silent", "base", suite(name))
    assert result.judge == f"verifier:{name}"
    assert {k: v.mean for k, v in result.win_rate.cohorts.items()} == {"a": 0.0, "b": 1.0}
    assert result.win_rate.overall.mean == 0.5 and result.win_rate.overall.method == "wilson"
    diff = result.differences[name]
    assert {k: v.mean for k, v in diff.cohorts.items()} == {"a": -1.0, "b": 1.0}
    stored = project.cursor().execute("SELECT candidate_run_id, baseline_run_id FROM eval_comparisons").fetchall()
    assert stored == [(result.candidate.id, result.baseline.id)]


def test_gate_fails_naming_each_regressed_slice(
    project: Project, base: ModelRecord, silent: ModelRecord, ev: DatasetVersion
) -> None:
    name = "spoke_in_a"
    verdict = evals.gate(project, "silent", "base", suite(name), margin=0.1)
    assert not verdict.passed
    assert [c.slice for c in verdict.checks] == ["overall", "cohort 'a'", "cohort 'b'"]
    assert [c.passed for c in verdict.checks] == [False, False, True]  # overall: mean 0, but its CI reaches -0.74
    assert verdict.reasons[1].startswith(f"cohort 'a': {name} 0.000 vs baseline 1.000, difference -1.000")
    by_mean = evals.decide_gate(verdict.comparison, margin=0.1, rule="mean")
    assert [c.slice for c in by_mean.checks if not c.passed] == ["cohort 'a'"]
    gate_json = project.cursor().execute("SELECT gate->>'passed' FROM eval_comparisons").fetchone()
    assert gate_json == ("false",)


def test_gate_passes_identical_models_against_serving(project: Project, base: ModelRecord, ev: DatasetVersion) -> None:
    register_model(project, "twin", base.path)
    with pytest.raises(NotFound, match="no model is serving"):
        evals.gate(project, "twin", None, suite("exact_match"))
    project.cursor().execute("UPDATE models SET status = 'serving' WHERE name = 'base'")
    verdict = evals.gate(project, "twin", None, suite("exact_match"), margin=0.0)
    assert verdict.passed and verdict.reasons == [] and verdict.comparison.baseline.model == "base"
    with pytest.raises(InvalidInput, match="both 'base'"):
        evals.compare(project, "base", None, suite("exact_match"))


@pytest.mark.parametrize(
    ("options", "message"),
    [({"margin": -0.1}, "must be >= 0"), ({"metric": "regex"}, "not a scorer"), ({"rule": "vibes"}, "'ci' or 'mean'")],
)
def test_gate_refuses_bad_options_before_running(
    project: Project, base: ModelRecord, ev: DatasetVersion, options: dict[str, object], message: str
) -> None:
    register_model(project, "twin", base.path)
    with pytest.raises(InvalidInput, match=message):
        evals.gate(project, "twin", "base", suite("exact_match"), **options)  # type: ignore[arg-type]
    assert evals.list_runs(project) == []


def test_gate_with_one_prompt_per_cohort_cannot_bound(project: Project, base: ModelRecord) -> None:
    write_eval(project, [("add 1 and 1", "2", "a"), ("add 2 and 2", "4", "b"), ("add 3 and 3", "6", "b")])
    register_model(project, "twin", base.path)
    verdict = evals.gate(project, "twin", "base", suite("exact_match"))
    assert not verdict.passed
    assert verdict.reasons == [
        "cohort 'a': exact_match 0.000 vs baseline 0.000; 1 prompt(s) cannot bound the difference "
        "(add prompts, or use the 'mean' rule)"
    ]
