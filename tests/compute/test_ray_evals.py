"""Eval suites and generation on Ray: model actors through Ray Data, scorers in the workers, local's results."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from posttrain import evals, jobs
from posttrain.datasets import write_version
from posttrain.errors import InvalidInput, NotFound
from posttrain.models.generation import generate
from posttrain.models.registry import register_model
from posttrain.project import Project

pytestmark = pytest.mark.slow

# Ray puts the driver's working directory (the repository) on its workers' path: this is how they import us
MODULE = "tests.compute.test_ray_evals"
QUESTIONS = [("add 1 and 1", "2", "a"), ("add 2 and 5", "7", "b"), ("mul 2 and 3", "6", "a"), ("mul 3 and 3", "9", "b")]
QUESTIONS += [("say hello", "hello", "a"), ("count to three", "1 2 3", "b")]


def length_parity(completion: str, answer: str | None, **row: object) -> float:
    """A verifier whose score depends on the completion: 1 when its length is even."""
    return float(len(completion) % 2 == 0)


def where_scored(completion: str, answer: str | None, *, trace: str, **row: object) -> float:
    """Leave a file named for the process and the Ray node that scored this row in the row's ``trace`` folder."""
    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "none"
    Path(trace, f"{os.getpid()}-{node}").touch()
    return 1.0


def explodes(completion: str, answer: str | None, **row: object) -> float:
    raise ValueError("no score today")


def use_ray(project: Project, address: str, **more: Any) -> None:
    """conftest's ``use_ray``, imported here: the Ray workers import this module without tests/ on their path."""
    import conftest

    conftest.use_ray(project, address, **more)


@pytest.fixture
def suite_project(project: Project, tiny_model: Path, tmp_path: Path) -> Project:
    """The project with the tiny model, an eval dataset whose rows name a trace folder, and our verifiers."""
    register_model(project, "tiny", tiny_model)
    trace = tmp_path / "trace"
    trace.mkdir()
    table = pa.table(
        {
            "prompt": [[{"role": "user", "content": q}] for q, _, _ in QUESTIONS],
            "answer": [a for _, a, _ in QUESTIONS],
            "cohort": [c for _, _, c in QUESTIONS],
            "trace": [str(trace)] * len(QUESTIONS),
        }
    )
    write_version(project, "ev", "eval", table, recipe={"test": True}, sources={})
    project.settings.functions.verifiers.update(
        {n: f"{MODULE}:{n}" for n in ("length_parity", "where_scored", "explodes")}
    )
    return project


def suite(*scorers: str) -> evals.SuiteConfig:
    return evals.SuiteConfig(dataset="ev", scorers=list(scorers), max_new_tokens=6, batch_size=2)


def scored_by(trace: Path) -> set[tuple[int, str]]:
    """Return (pid, node) of every process that scored since the last call, and empty the folder."""
    found = {(int(f.name.split("-", 1)[0]), f.name.split("-", 1)[1]) for f in trace.iterdir()}
    for f in trace.iterdir():
        f.unlink()
    return found


def test_run_eval_on_ray_scores_in_the_workers_as_local_does(
    suite_project: Project, ray_cluster: Any, tmp_path: Path
) -> None:
    project, config = suite_project, suite("length_parity", "where_scored", "contains")
    here = evals.run_eval(project, "tiny", config)
    assert {pid for pid, _ in scored_by(tmp_path / "trace")} == {os.getpid()}
    use_ray(project, ray_cluster.address)
    done: list[tuple[int, int]] = []
    there = evals.run_eval(project, "tiny", config, progress=lambda d, t: done.append((d, t)))
    import ray

    workers = scored_by(tmp_path / "trace")
    assert workers and all(pid != os.getpid() for pid, _ in workers)  # generated and scored in the model actors
    assert {node for _, node in workers} <= {n["NodeID"] for n in ray.nodes()}
    assert done == [(2, 6), (4, 6), (6, 6)]  # batches of two prompts, in order
    local, remote = evals.read_scores(here), evals.read_scores(there)
    assert any(local.column("completion").to_pylist())  # the tiny model says something to compare
    assert remote.schema == local.schema and remote.to_pylist() == local.to_pylist()  # greedy: same text, scores
    assert there.scores == here.scores and there.prompts == 6 and there.id != here.id
    job = jobs.get_job(project, there.job_id or "")
    assert (job.state, job.progress, job.output) == ("succeeded", 1.0, there.id)
    assert [r.id for r in evals.list_runs(project, model="tiny")] == [there.id, here.id]


def test_run_eval_on_ray_fails_with_the_workers_error(suite_project: Project, ray_cluster: Any) -> None:
    use_ray(suite_project, ray_cluster.address)
    with pytest.raises(InvalidInput, match="verifier 'explodes' failed: ValueError: no score today"):
        evals.run_eval(suite_project, "tiny", suite("explodes"))
    (job,) = jobs.list_jobs(suite_project)
    assert job.state == "failed" and "no score today" in (job.error or "")


def test_generate_on_ray_stores_what_local_stores(suite_project: Project, ray_cluster: Any) -> None:
    project = suite_project
    options: dict[str, Any] = {"model": "tiny", "prompts": "ev", "samples": 1, "max_new_tokens": 5, "temperature": 0}
    here = generate(project, output="here", batch_size=4, **options)
    use_ray(project, ray_cluster.address)
    there = generate(project, output="there", batch_size=4, **options)
    assert (here.interactions, there.interactions) == (6, 6)
    stored = {
        tag: project.cursor()
        .execute(
            "SELECT response, prompt_tokens, completion_tokens, metadata FROM interactions "
            "WHERE list_contains(tags, ?) ORDER BY CAST(json_extract(metadata, '$.prompt_index') AS INT)",
            [tag],
        )
        .fetchall()
        for tag in ("output:here", "output:there")
    }
    assert stored["output:there"] == stored["output:here"]
    assert jobs.get_job(project, there.job_id).state == "succeeded"


@pytest.mark.parametrize(
    ("scorer", "error", "field"), [("bogus", InvalidInput, "verifier"), ("model:ghost", NotFound, "model")]
)
def test_unknown_scorer_is_refused_before_any_job_on_ray(
    suite_project: Project, ray_cluster: Any, scorer: str, error: type[InvalidInput], field: str
) -> None:
    use_ray(suite_project, ray_cluster.address)
    config = evals.SuiteConfig(dataset="ev", scorers=[scorer])
    with pytest.raises(error) as caught:
        evals.run_eval(suite_project, "tiny", config)
    assert caught.value.field == field
    assert jobs.list_jobs(suite_project) == []
