"""Dataset versions on disk and in the warehouse: write one, resolve ``NAME``/``NAME@V``, list, read.

A version lives in ``artifacts/datasets/NAME/vN/``: ``data.parquet``, ``sources.parquet`` (the ids
of the interactions and feedback it came from), ``manifest.json`` and any more files a build writes
beside them (``curation.parquet``). Its ``content_hash`` covers the rows only. ``posttrain.datasets``
builds versions and re-exports these; the curation stages read earlier and eval versions from here
(so they need not import the builder that calls them).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from posttrain.clock import utc_now
from posttrain.errors import InvalidInput, NotFound
from posttrain.ids import new_id
from posttrain.names import check_name
from posttrain.project import Project
from posttrain.records import DatasetKind, DatasetVersion
from posttrain.stored_paths import load_path, store_path
from posttrain.warehouse.rows import fetch_all, fetch_one

_JSON = ("recipe", "source_ids", "stats")


def content_hash(table: pa.Table) -> str:
    """Return a SHA-256 over the rows, in order, independent of Parquet encoding details.

    Each row is rendered as JSON by DuckDB (fast, and the same for equal values whatever the Arrow
    chunking, string width or Parquet encoding); the digest covers the column names and those lines.
    """
    digest = hashlib.sha256()
    digest.update(orjson.dumps(table.schema.names))
    con = duckdb.connect()  # private, default settings: the scan keeps the rows in order
    try:
        con.register("_rows", table)
        for batch in con.sql("SELECT to_json(_rows)::VARCHAR AS j FROM _rows").to_arrow_reader(100_000):
            lines = batch.column(0).cast(pa.large_string())
            _, offsets, _ = lines.buffers()
            bounds = pa.Array.from_buffers(pa.int64(), len(lines) + 1, [None, offsets], offset=lines.offset)
            start, end = bounds[0].as_py(), bounds[-1].as_py()
            # JSON objects back to back split one way only, so the bytes need no separator
            digest.update(memoryview(lines.buffers()[2])[start:end])
    finally:
        con.close()
    return digest.hexdigest()


def write_version(
    project: Project,
    name: str,
    kind: DatasetKind,
    table: pa.Table,
    *,
    recipe: dict[str, Any],
    sources: dict[str, list[str]],
    stats: dict[str, Any] | None = None,
    scrubbed: int = 0,
    files: dict[str, pa.Table] | None = None,
) -> DatasetVersion:
    """Write ``table`` as the next version of dataset ``name``; return its record.

    ``files`` are more Parquet files for the version's folder (``curation.parquet``: the curation's
    per-row details, which the report page draws).
    """
    check_name(name, what="dataset name")
    with project.version_lock:
        cur = project.cursor()
        last = cur.execute("SELECT max(version) FROM dataset_versions WHERE name = ?", [name]).fetchone()
        version = (last[0] or 0) + 1 if last else 1
        folder = project.artifacts / "datasets" / name / f"v{version}"
        if folder.exists():  # left by a write that failed before its row: no version refers to it
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        try:
            for file_name, extra in (files or {}).items():
                pq.write_table(extra, folder / file_name)
            return _write_files_and_row(project, folder, name, version, kind, table, recipe, sources, stats, scrubbed)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise


def _write_files_and_row(
    project: Project,
    folder: Path,
    name: str,
    version: int,
    kind: DatasetKind,
    table: pa.Table,
    recipe: dict[str, Any],
    sources: dict[str, list[str]],
    stats: dict[str, Any] | None,
    scrubbed: int,
) -> DatasetVersion:
    pq.write_table(table, folder / "data.parquet")
    source_table = pa.table(
        {"kind": [k for k, ids in sources.items() for _ in ids], "id": [i for ids in sources.values() for i in ids]}
    )
    pq.write_table(source_table, folder / "sources.parquet")
    record = DatasetVersion(
        id=new_id(),
        name=name,
        version=version,
        kind=kind,
        recipe=recipe,
        row_count=table.num_rows,
        content_hash=content_hash(table),
        path=str(folder / "data.parquet"),
        manifest_path=str(folder / "manifest.json"),
        source_ids={**{k: len(v) for k, v in sources.items()}, "file": str(folder / "sources.parquet")},
        stats=stats or {},
        scrubbed=scrubbed,
        created_at=utc_now(),
    )
    (folder / "manifest.json").write_text(json.dumps(record.model_dump(mode="json"), indent=2))
    data = _stored(project, record.model_dump())
    for field in _JSON:
        data[field] = orjson.dumps(data[field]).decode()
    project.cursor().execute(
        f"INSERT INTO dataset_versions ({', '.join(data)}) VALUES ({', '.join('?' for _ in data)})",
        list(data.values()),
    )
    return record


def resolve(project: Project, ref: str) -> DatasetVersion:
    """Return the version named by ``NAME`` (the latest) or ``NAME@V``; raise NotFound naming the fix."""
    name, _, version = ref.partition("@")
    cur = project.cursor()
    if version:
        if not version.isdigit():
            raise InvalidInput(f"version in {ref!r} must be a number, as in {name}@2", field="dataset")
        sql, params = "SELECT * FROM dataset_versions WHERE name = ? AND version = ?", [name, int(version)]
    else:
        sql, params = "SELECT * FROM dataset_versions WHERE name = ? ORDER BY version DESC LIMIT 1", [name]
    data = fetch_one(cur, sql, params, json=_JSON)
    if data is None:
        what = f"dataset {name!r} has no version {version}" if version else f"no dataset {name!r}"
        raise NotFound(f"{what}; run 'posttrain datasets list'", field="dataset")
    return _version(project, data)


def _stored(project: Project, data: dict[str, Any]) -> dict[str, Any]:
    """Return a version's row with its paths relative to the project (so the project can move)."""
    sources = data["source_ids"]
    return {
        **data,
        "path": store_path(project.root, data["path"]),
        "manifest_path": data["manifest_path"] and store_path(project.root, data["manifest_path"]),
        "source_ids": {**sources, "file": store_path(project.root, sources["file"])} if "file" in sources else sources,
    }


def _version(project: Project, data: dict[str, Any]) -> DatasetVersion:
    """Return a version from its row, its stored paths resolved against this project's folder."""
    sources = data.get("source_ids") or {}
    if isinstance(sources.get("file"), str):
        data["source_ids"] = {**sources, "file": load_path(project.root, sources["file"])}
    data["path"] = load_path(project.root, data["path"])
    if data.get("manifest_path"):
        data["manifest_path"] = load_path(project.root, data["manifest_path"])
    return DatasetVersion(**data)


def list_versions(project: Project, *, name: str | None = None) -> list[DatasetVersion]:
    """Return every dataset version (of ``name`` if given), newest first."""
    where, params = ("WHERE name = ?", [name]) if name else ("", [])
    sql = f"SELECT * FROM dataset_versions {where} ORDER BY created_at DESC, version DESC"
    return [_version(project, r) for r in fetch_all(project.cursor(), sql, params, json=_JSON)]


def read_rows(version: DatasetVersion) -> pa.Table:
    """Return a version's rows as an Arrow table."""
    path = Path(version.path)
    if not path.is_file():
        raise NotFound(f"the file of {version.ref} is missing: {path}", field="dataset")
    return pq.read_table(path)


def read_path(project: Project, ref: str) -> str:
    """Return the Parquet file of version ``ref``, checking it exists."""
    version = resolve(project, ref)
    if not Path(version.path).is_file():
        raise NotFound(f"the file of {version.ref} is missing: {version.path}", field="dataset")
    return version.path
