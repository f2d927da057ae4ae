"""Where the heavy stages run: in this process (``local``, the default) or on a Ray cluster (``ray``).

``[compute] backend`` in ``posttrain.toml`` (``POSTTRAIN_COMPUTE_BACKEND``) picks one. The stages
call the functions here with the same per-batch function either way: ``map_batches`` applies it to
the whole table in this process, or, on Ray, to Parquet partitions of the table as a Ray Data
pipeline whose blocks come back in row order, so both backends write the same rows. Nothing here
imports Ray unless the backend is ``ray``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING

import pyarrow as pa

from posttrain.compute.storage import Storage

if TYPE_CHECKING:
    from posttrain.project import Project
    from posttrain.settings import ComputeSettings

__all__ = ["BatchFn", "ProgressFn", "StageProgress", "Storage", "map_batches", "reporting", "storage", "uses_ray"]

# a per-batch function: the rows in, the same rows (same count, same order) out, with counts to sum
BatchFn = Callable[[pa.Table], tuple[pa.Table, dict[str, int]]]
ProgressFn = Callable[[int, int], None]  # (rows done, rows in all)
StageProgress = Callable[[str, int, int], None]  # (the stage, rows done, rows in all)

_watcher: ContextVar[StageProgress | None] = ContextVar("posttrain_stage_progress", default=None)


@contextlib.contextmanager
def reporting(progress: StageProgress) -> Iterator[None]:
    """Send the progress of every ``map_batches`` stage run inside the block to ``progress(what, done, total)``.

    How a caller (the CLI's bars) follows a build and its curation, whose stages run deep inside it:
    on Ray each block that comes back counts; here a stage reports at its start and its end.
    """
    token = _watcher.set(progress)
    try:
        yield
    finally:
        _watcher.reset(token)


def uses_ray(project: Project | ComputeSettings) -> bool:
    """Return whether the project's heavy stages run on Ray."""
    settings = project if not hasattr(project, "settings") else project.settings.compute  # type: ignore[union-attr]
    return settings.backend == "ray"  # type: ignore[union-attr]


def storage(project: Project) -> Storage:
    """Return where workers read inputs and write outputs: ``compute.storage``, else ``artifacts/compute``."""
    url = project.settings.compute.storage or str(project.artifacts / "compute")
    return Storage(url)


def map_batches(
    project: Project, table: pa.Table, fn: BatchFn, *, what: str, progress: ProgressFn | None = None
) -> tuple[pa.Table, dict[str, int]]:
    """Apply ``fn`` to ``table``'s rows here, or on the Ray cluster batch by batch; return rows and summed counts.

    ``fn`` must treat rows independently (a row's output depends on that row alone) and keep their
    number and order: that is what makes the two backends give the same rows. ``what`` names the
    stage in errors and in the cluster's logs.
    """
    progress = _watched(what, progress)
    if not uses_ray(project) or table.num_rows == 0:
        if progress is not None:
            progress(0, table.num_rows)
        out, counts = fn(table)
        if progress is not None:
            progress(table.num_rows, table.num_rows)
        return out, counts
    from posttrain.compute import ray_data

    return ray_data.map_batches(project.settings.compute, storage(project), table, fn, what=what, progress=progress)


def _watched(what: str, progress: ProgressFn | None) -> ProgressFn | None:
    """Return ``progress`` that also reports to the ``reporting`` block around this call, if any."""
    watcher = _watcher.get()
    if watcher is None:
        return progress

    def both(done: int, total: int) -> None:
        if progress is not None:
            progress(done, total)
        watcher(what, done, total)

    return both
