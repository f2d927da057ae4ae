"""Where the heavy stages run: in this process (``local``, the default) or on a Ray cluster (``ray``).

``[compute] backend`` in ``posttrain.toml`` (``POSTTRAIN_COMPUTE_BACKEND``) picks one. The stages
call the functions here with the same per-batch function either way: ``map_batches`` applies it to
the whole table in this process, or, on Ray, to Parquet partitions of the table as a Ray Data
pipeline whose blocks come back in row order, so both backends write the same rows. Nothing here
imports Ray unless the backend is ``ray``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pyarrow as pa

from posttrain.compute.storage import Storage

if TYPE_CHECKING:
    from posttrain.project import Project
    from posttrain.settings import ComputeSettings

__all__ = ["BatchFn", "ProgressFn", "Storage", "map_batches", "storage", "uses_ray"]

# a per-batch function: the rows in, the same rows (same count, same order) out, with counts to sum
BatchFn = Callable[[pa.Table], tuple[pa.Table, dict[str, int]]]
ProgressFn = Callable[[int, int], None]  # (rows done, rows in all)


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
    if not uses_ray(project) or table.num_rows == 0:
        out, counts = fn(table)
        if progress is not None:
            progress(table.num_rows, table.num_rows)
        return out, counts
    from posttrain.compute import ray_data

    return ray_data.map_batches(project.settings.compute, storage(project), table, fn, what=what, progress=progress)
