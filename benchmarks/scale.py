"""Past one machine: the same build, curation and SFT on ``local`` and on a real Ray cluster of 1 and 2 workers.

    /work/main/.venv/bin/python benchmarks/scale.py [--quick] [--rows N] [--skip-curation] [--skip-train]

Part 1 — the warehouse of ``benchmarks/curation.py`` (``rows`` interactions, near-duplicates,
contamination, garbled answers and PII planted at known rates) built into a curated SFT version
with its recipe (NER PII, dedup, decontaminate, quality, select 30%) on ``local`` (this process)
and on a Ray cluster started here with ``ray start``: a head with no CPUs and two worker nodes of
1 CPU each, the stages using 1 or 2 of them (``compute.workers``: tasks in flight, Ray Train
workers). The cluster first builds a 2,000-interaction slice in small blocks (each worker process
loads spaCy/Presidio once, as on a cluster that lives between builds); then the full build is
timed, in blocks of 20,000 rows. The content hash of the three versions must agree.

Part 2 — ``train sft`` on the tiny Qwen2 of ``benchmarks/train_sft.py``: tokens/s of the local
trainer beside Ray Train with 1 and 2 workers (data-parallel, gloo on CPU, each worker 1 CPU),
tokens counted per epoch from the chat-formatted rows and divided by the trainer's own
``train_runtime`` (the start-up of the worker group is printed beside it), on the same cluster.

It reports; it never fails. On a 2-core machine two workers share the cores with the head and the
driver: read the figures as the per-worker rates ``docs/architecture.md`` projects from.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_datasets import load  # noqa: E402
from harness import Figure, print_header, print_table  # noqa: E402
from train_sft import count_tokens, toy_rows  # noqa: E402

import posttrain  # noqa: E402
from curation import ANSWERS_PER_PROMPT, RECIPE, generate  # noqa: E402
from posttrain import datasets  # noqa: E402
from posttrain.compute import ray_runtime  # noqa: E402
from posttrain.compute.cluster import LocalCluster, auth_environment  # noqa: E402
from posttrain.curation import embed  # noqa: E402
from posttrain.project import Project  # noqa: E402
from posttrain.settings import ComputeSettings  # noqa: E402

WARM_ROWS = 2_000


def use(project: Project, cluster: LocalCluster | None, workers: int, rows_per_block: int = 20_000) -> None:
    """Point the project's compute settings at ``cluster`` (None: local)."""
    compute = (
        ComputeSettings()
        if cluster is None
        else ComputeSettings(backend="ray", address=cluster.address, workers=workers, rows_per_block=rows_per_block)
    )
    project.settings = project.settings.model_copy(update={"compute": compute})


def build_curated(project: Project, name: str, where: str | None = None) -> tuple[float, Any]:
    started = time.perf_counter()
    config = datasets.BuildConfig.parse(curate=RECIPE, where=where)
    version = datasets.build(project, "sft", name, config)
    return time.perf_counter() - started, version


def curation_part(rows: int, tmp: Path) -> tuple[list[Figure], list[str]]:
    tables, suite = generate(rows)
    project = posttrain.init_project(tmp / "curation")
    load(project, tables)
    datasets.write_version(project, "suite", "eval", suite, recipe={"source": "benchmark"}, sources={})
    del tables
    embed.embed(["warm the static embedder"], "static")  # distilled once per machine, then cached
    figures, notes, hashes = [], [], {}
    started = time.perf_counter()
    datasets.build(project, "sft", "plain", datasets.BuildConfig())
    plain_s = time.perf_counter() - started
    local_s, version = build_curated(project, "curated-local")
    hashes["local"] = version.content_hash
    figures.append(Figure("build + curation, local", local_s, "s", f"plain build {plain_s:.1f} s"))
    notes.append(_stages("local", version))
    warm_where = f"i.id < 'i{WARM_ROWS:08d}'"
    started = time.perf_counter()
    with LocalCluster(workers=2, head_cpus=0) as cluster:
        start_s = time.perf_counter() - started
        use(project, cluster, 2, rows_per_block=100)  # small blocks: every worker process gets some
        warm_s, _ = build_curated(project, "warm", where=warm_where)
        notes.append(f"cluster up in {start_s:.1f} s; warm-up slice ({WARM_ROWS:,} interactions) {warm_s:.1f} s")
        for workers in (1, 2):
            use(project, cluster, workers)
            seconds, version = build_curated(project, f"curated-ray-{workers}")
            hashes[f"ray {workers}"] = version.content_hash
            figures.append(Figure(f"build + curation, ray {workers} worker(s)", seconds, "s",
                                  f"local {local_s:.1f} s", f"x{local_s / seconds:.2f} of local"))  # fmt: skip
            notes.append(_stages(f"ray {workers}", version))
        ray_runtime.disconnect()
    use(project, None, 1)
    project.close()
    same = len(set(hashes.values())) == 1
    notes.append(f"content hash: {'identical on every backend' if same else 'DIFFERS'} ({hashes})")
    return figures, notes


def _stages(label: str, version: Any) -> str:
    report = version.stats["curation"]
    stages = ", ".join(f"{s['stage']} {s['seconds']:.1f} s" for s in report["stages"])
    return f"{label}: {report['rows_in']:,} rows in, {version.row_count:,} kept ({stages})"


def train_part(rows: int, tmp: Path) -> tuple[list[Figure], list[str]]:
    from transformers import AutoTokenizer

    from posttrain.models.tiny import init_tiny
    from posttrain.train.sft import SFTConfig, train_sft

    project = posttrain.init_project(tmp / "train")
    data = toy_rows(rows)
    datasets.write_version(project, "toy", "sft", _table(data), recipe={"source": "benchmark"}, sources={})
    base = init_tiny(project, "base", hidden=128, layers=4, heads=4)
    tokens = count_tokens(AutoTokenizer.from_pretrained(base.path), data)
    settings = {"model": "base", "dataset": "toy", "epochs": 1, "batch_size": 8, "logging_steps": 10,
                "save_steps": 10_000, "learning_rate": 5e-4}  # fmt: skip
    figures, notes = [], []
    local = _train(project, SFTConfig(**settings, output="local"), train_sft)
    local_rate = tokens / local["train_runtime"]
    figures.append(Figure("train sft, local trainer", local_rate, "tokens/s", f"{tokens:,} tokens, 1 epoch"))
    with LocalCluster(workers=2, head_cpus=0) as cluster:
        for workers in (1, 2):
            use(project, cluster, workers)
            result = _train(project, SFTConfig(**settings, output=f"ray-{workers}", workers=workers), train_sft)
            rate = tokens / result["train_runtime"]
            figures.append(Figure(f"train sft, ray {workers} worker(s)", rate, "tokens/s",
                                  f"local {local_rate:,.0f}", f"x{rate / local_rate:.2f} of local"))  # fmt: skip
            notes.append(f"ray {workers}: trainer {result['train_runtime']:.1f} s of {result['wall']:.1f} s wall (the "
                         f"rest: start-up, loading, registration); final loss {result['loss']:.3f}")  # fmt: skip
        ray_runtime.disconnect()
    use(project, None, 1)
    notes.insert(0, f"local: trainer {local['train_runtime']:.1f} s of {local['wall']:.1f} s wall; "
                    f"final loss {local['loss']:.3f}")  # fmt: skip
    project.close()
    return figures, notes


def _table(rows: list[dict[str, Any]]) -> Any:
    import pyarrow as pa

    return pa.Table.from_pylist(rows)


def _train(project: Project, config: Any, train: Any) -> dict[str, float]:
    started = time.perf_counter()
    record = train(project, config)
    wall = time.perf_counter() - started
    return {"train_runtime": float(record.metrics["train_runtime"]), "wall": wall,
            "loss": float(record.metrics.get("train_loss", record.metrics.get("loss", float("nan"))))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run for the smoke test")
    parser.add_argument("--rows", type=int, help="interactions (default 1,000,000; quick 20,000)")
    parser.add_argument("--train-rows", type=int, help="SFT rows (default 4,000; quick 400)")
    parser.add_argument("--skip-curation", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    os.environ.update(auth_environment())  # the loopback clusters' token, before anything imports Ray
    rows = args.rows or (20_000 if args.quick else 1_000_000)
    train_rows = args.train_rows or (400 if args.quick else 4_000)
    print_header("posttrain compute: local vs a Ray cluster", [
        ("warehouse", f"{rows:,} interactions, {rows // ANSWERS_PER_PROMPT:,} prompts"),
        ("curation recipe", str(RECIPE)),
        ("training", f"{train_rows:,} rows, tiny Qwen2 h128 x4 layers, batch 8 per worker, 1 epoch"),
        ("cluster", "ray start --head (0 CPUs) + 2 worker nodes of 1 CPU on 127.0.0.1; stages use 1 or 2"),
    ])  # fmt: skip
    figures: list[Figure] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="posttrain-scale-") as tmp:
        if not args.skip_curation:
            more, lines = curation_part(rows, Path(tmp))
            figures += more
            notes += lines
        if not args.skip_train:
            more, lines = train_part(train_rows, Path(tmp))
            figures += more
            notes += lines
    print_table(figures)
    for line in notes:
        print(f"  {line}")


if __name__ == "__main__":
    main()
