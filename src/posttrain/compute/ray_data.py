"""Per-row stages on Ray Data: Parquet partitions in, ``map_batches`` over Arrow blocks, rows back in order.

The table is written as Parquet partitions of ``rows_per_block`` rows under ``compute.storage``
(what a cluster on other machines reads), each row numbered; ``ray.data.read_parquet`` reads them
and ``map_batches`` runs the stage's function on batches of ``rows_per_block`` rows as Arrow
(``batch_format="pyarrow"``; the scrubbers and filters are vectorised over Arrow already). A
batch's counts ride on its first row in one JSON column. The rows are gathered as they come back
(the progress the caller sees, every ``rows_per_block`` rows), sorted by row number, and the
numbering dropped: the same rows, in the same order, as the function applied to the whole table.
A task whose worker dies is retried by Ray (a task's default: 3 times) on another node; past that the stage
fails with a one-line error, never hangs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from posttrain.compute.ray_runtime import connect, gather, unwrap
from posttrain.ids import new_id
from posttrain.settings import ComputeSettings

if TYPE_CHECKING:
    from posttrain.compute.storage import Storage

# as posttrain.compute's BatchFn and ProgressFn (repeated here: that package imports this module)
BatchFn = Callable[[pa.Table], tuple[pa.Table, dict[str, int]]]
ProgressFn = Callable[[int, int], None]

ROW = "__posttrain_row"
COUNTS = "__posttrain_counts"


def _udf(fn: BatchFn):  # type: ignore[no-untyped-def]
    def apply(batch: pa.Table) -> pa.Table:
        rows = batch.column(ROW)
        out, counts = fn(batch.drop_columns([ROW]))
        if out.num_rows != batch.num_rows:
            raise ValueError(f"a per-row stage returned {out.num_rows} rows for {batch.num_rows}")
        marks = [orjson.dumps(counts).decode()] + [None] * (batch.num_rows - 1) if batch.num_rows else []
        return out.append_column(ROW, rows).append_column(COUNTS, pa.array(marks, pa.string()))

    return apply


def write_partitions(table: pa.Table, storage: Storage, folder: str, rows_per_block: int) -> list[str]:
    """Write ``table`` (numbered in ``ROW``) as Parquet files of ``rows_per_block`` rows; return their paths."""
    numbered = table.append_column(ROW, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    fs = storage.arrow_filesystem()
    fs.create_dir(storage.path(folder), recursive=True)
    paths = []
    for index in range(max(1, math.ceil(table.num_rows / rows_per_block))):
        path = storage.path(folder, f"part-{index:05d}.parquet")
        pq.write_table(numbered.slice(index * rows_per_block, rows_per_block), path, filesystem=fs)
        paths.append(path)
    return paths


def map_batches(
    settings: ComputeSettings,
    storage: Storage,
    table: pa.Table,
    fn: BatchFn,
    *,
    what: str,
    progress: ProgressFn | None = None,
) -> tuple[pa.Table, dict[str, int]]:
    """Run ``fn`` over ``table`` on the cluster; see the module's docstring."""
    ray = connect(settings)
    folder = f"scratch/{new_id()}"
    total = table.num_rows
    try:
        paths = write_partitions(table, storage, folder, settings.rows_per_block)
        dataset = ray.data.read_parquet(
            paths, filesystem=storage.arrow_filesystem(), override_num_blocks=len(paths)
        ).map_batches(
            _udf(fn),
            batch_format="pyarrow",
            # a call per partition's worth of rows: Ray Data bundles small files into one task and
            # coalesces small blocks, so a block is not a partition
            batch_size=settings.rows_per_block,
            compute=ray.data.TaskPoolStrategy(size=settings.workers),  # at most compute.workers tasks at once
            num_cpus=settings.cpus_per_worker,
        )
        gathered = gather(dataset, total, what=what, progress=progress, rows=settings.rows_per_block)
    finally:
        storage.remove(storage.path(folder))
    if gathered.num_rows == 0:
        if total:
            raise unwrap(RuntimeError(f"none of {total} rows came back"), what)
        return table.slice(0, 0), {}
    counts: dict[str, int] = {}
    for mark in gathered.column(COUNTS).drop_null().to_pylist():
        for key, value in orjson.loads(mark).items():
            counts[key] = counts.get(key, 0) + value
    ordered = gathered.take(pc.sort_indices(gathered.column(ROW)))
    if ordered.num_rows != total:
        raise unwrap(RuntimeError(f"{ordered.num_rows} of {total} rows came back"), what)
    return ordered.drop_columns([ROW, COUNTS]), counts
