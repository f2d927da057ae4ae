"""Generation on the Ray cluster: a pool of model actors over the prompts with Ray Data, scorers beside them.

``sample(project, path, rows, Sampling(...))`` cuts the prompt rows into the batches the local path
makes (``batch_size // samples`` prompts), one Ray Data block each, and maps up to
``compute.workers`` ``ModelActor`` s (``compute.cpus_per_worker`` CPUs each) over them. The caller
passes the local path's own functions, ``load_causal_lm`` and ``_sample_batch`` of
``posttrain.models.generation`` (as the per-row stages pass theirs to ``compute.map_batches``). An
actor loads the model once with the first — the folder as it is when ``compute.storage`` is local,
else a copy the driver put there, fetched to a temporary folder — and samples each batch with the
second. It then scores the completions with the scorers the driver
resolved (``ScorerSpec``: a name, the project's ``[functions.verifiers]``, a reward model's folder;
never code), so rows, completions and scores stay on the worker until they come back. Batches
come back in order; the caller's ``progress(done, total)`` counts sequences as they do.

Greedy decoding (temperature 0) gives the local path's completions. Sampling is seeded per batch
(the seed plus the batch's first prompt index), so a run repeats itself on any number of actors,
but does not draw the local path's samples, which share one generator across batches.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from posttrain.compute import ProgressFn, storage
from posttrain.compute.ray_runtime import connect, gather, unwrap
from posttrain.evals.scorers import ScorerSpec
from posttrain.ids import new_id

if TYPE_CHECKING:
    from posttrain.compute import Storage
    from posttrain.project import Project

INDEX = "prompt_index"
SCORE = "score:"  # a scorer's column is SCORE + its name (a scorer may be called "completion")
DEBUG = ("node", "pid")  # where each batch ran: for tests and logs, never stored
Load = Callable[[str], tuple[Any, Any]]  # a model folder → (model, tokenizer): load_causal_lm
SampleBatch = Callable[..., list[tuple[str, int, int]]]  # _sample_batch: (completion, prompt tokens, completion tokens)


class Sampling(BaseModel):
    """How to sample: the options the local path takes, one batch being ``batch_size // samples`` prompts."""

    samples: int = Field(ge=1)
    max_new_tokens: int = Field(ge=1)
    temperature: float = Field(ge=0)
    seed: int = 0
    batch_size: int = Field(ge=1)

    @property
    def prompts_per_batch(self) -> int:
        return max(1, self.batch_size // self.samples)


def score_column(name: str) -> str:
    """Return the column of ``sample``'s result that holds scorer ``name``'s scores."""
    return SCORE + name


class ModelActor:
    """One model loaded in one Ray worker, with its scorers; called with a batch of prompt rows."""

    def __init__(
        self,
        *,
        model: str,
        load: Load,
        sample_batch: SampleBatch,
        storage_url: str | None,
        sampling: Sampling,
        scorers: list[ScorerSpec],
        threads: int,
    ) -> None:
        import ray
        import torch

        from posttrain.evals.scorers import scorer_from_spec

        torch.set_num_threads(threads)
        self._copies: list[tempfile.TemporaryDirectory[str]] = []
        self._storage_url = storage_url
        self.model, self.tokenizer = load(self._local(model))
        self.sample_batch = sample_batch
        self.sampling = sampling
        self.scorers = [scorer_from_spec(s, path=self._local(s.path) if s.path else None) for s in scorers]
        self.node = ray.get_runtime_context().get_node_id()

    def _local(self, path: str) -> str:
        """Return a local folder holding ``path`` (under compute.storage when that is not local)."""
        if self._storage_url is None:
            return path
        from posttrain.compute import Storage

        copy = tempfile.TemporaryDirectory(prefix="posttrain-model-")
        self._copies.append(copy)
        return str(Storage(self._storage_url).get_dir(path, copy.name))

    def __call__(self, batch: pa.Table) -> pa.Table:
        import torch

        rows = batch.drop_columns([INDEX]).to_pylist()
        indexes = batch.column(INDEX).to_pylist()
        s = self.sampling
        torch.manual_seed(s.seed + indexes[0])
        results = self.sample_batch(
            self.model, self.tokenizer, [r["prompt"] for r in rows], samples=s.samples,
            max_new_tokens=s.max_new_tokens, temperature=s.temperature,
        )  # fmt: skip
        completions = [text for text, _, _ in results]
        flat_rows = [row for row in rows for _ in range(s.samples)]
        columns: dict[str, Any] = {
            INDEX: pa.array([i for i in indexes for _ in range(s.samples)], pa.int64()),
            "sample": pa.array([j for _ in indexes for j in range(s.samples)], pa.int64()),
            "completion": pa.array(completions, pa.string()),
            "prompt_tokens": pa.array([n for _, n, _ in results], pa.int64()),
            "completion_tokens": pa.array([n for _, _, n in results], pa.int64()),
            "node": pa.array([self.node] * len(results), pa.string()),
            "pid": pa.array([os.getpid()] * len(results), pa.int64()),
        }
        for scorer in self.scorers:
            columns[score_column(scorer.name)] = pa.array(scorer.score(flat_rows, completions), pa.float64())
        return pa.table(columns)


def sample(
    project: Project,
    path: str,
    rows: Sequence[dict[str, Any]],
    sampling: Sampling,
    *,
    load: Load,
    sample_batch: SampleBatch,
    scorers: Sequence[ScorerSpec] = (),
    what: str,
    progress: ProgressFn | None = None,
) -> pa.Table:
    """Sample every row's prompt with the model in ``path`` on the cluster, score the completions; see the module.

    Returns one row per (prompt, sample), prompt-major: ``prompt_index``, ``sample``,
    ``completion``, ``prompt_tokens``, ``completion_tokens``, ``node``, ``pid`` and one
    ``score:NAME`` column per scorer. ``what`` names the stage in errors.
    """
    store = storage(project)
    scratch = f"scratch/{new_id()}"
    try:
        model = _stage(store, path, scratch, "model")
        specs = [s.model_copy(update={"path": _stage(store, s.path, scratch, f"scorer-{i}")}) if s.path else s
                 for i, s in enumerate(scorers)]  # fmt: skip
        actor = {"model": model, "load": load, "sample_batch": sample_batch, "sampling": sampling, "scorers": specs,
                 "storage_url": None if store.is_local else store.url_root}  # fmt: skip
        return _map(project, actor, rows, sampling, what=what, progress=progress)
    finally:
        if not store.is_local:
            store.remove(store.path(scratch))


def _stage(store: Storage, path: str, scratch: str, name: str) -> str:
    """Return where workers find the folder ``path``: itself on local storage, else a copy under ``scratch``."""
    return path if store.is_local else store.put_dir(path, scratch, name)


def _map(
    project: Project,
    actor: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    sampling: Sampling,
    *,
    what: str,
    progress: ProgressFn | None,
) -> pa.Table:
    settings = project.settings.compute
    ray = connect(settings)
    table = pa.Table.from_pylist(list(rows)).append_column(INDEX, pa.array(range(len(rows)), pa.int64()))
    step, total = sampling.prompts_per_batch, len(rows) * sampling.samples
    blocks = [table.slice(start, step) for start in range(0, len(rows), step)]  # one block per generate call
    dataset = ray.data.from_arrow(blocks).map_batches(
        ModelActor,
        batch_size=step,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=settings.workers),
        num_cpus=settings.cpus_per_worker,
        fn_constructor_kwargs={**actor, "threads": max(1, int(settings.cpus_per_worker))},
    )
    gathered = gather(dataset, total, what=what, progress=progress)
    if gathered.num_rows != total:
        raise unwrap(RuntimeError(f"{gathered.num_rows} of {total} sequences came back"), what)
    return gathered.take(pc.sort_indices(gathered, [(INDEX, "ascending"), ("sample", "ascending")]))
