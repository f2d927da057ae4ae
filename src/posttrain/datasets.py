"""Dataset versions: immutable Parquet files with a manifest, built from warehouse rows.

Row formats (conversational, as TRL's trainers take them; a message is ``{"role", "content"}``):

- ``sft``: ``prompt`` (messages), ``completion`` (one assistant message), ``source``
  (``accepted`` | ``edit``), ``interaction_id``.
- ``preference``: ``prompt``, ``chosen``, ``rejected`` (each one assistant message), ``source``
  (``choice`` | ``edit`` | ``accepted_vs_rejected``), ``confidence`` (0..1), ``interaction_ids``.
- ``prompts``: ``prompt``, ``answer`` (reference answer or null), ``verifier`` (name or null).
- ``eval``: ``prompt``, ``answer``, ``completion``, ``cohort``, ``user_id``, ``session_id``.

A version lives in ``artifacts/datasets/NAME/vN/``: ``data.parquet``, ``sources.parquet`` (the ids
of the interactions and feedback it came from) and ``manifest.json``. Its ``content_hash`` covers
the rows only, so rebuilding the same recipe over the same data gives the same hash.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from posttrain.errors import InvalidInput, NotFound
from posttrain.ids import new_id
from posttrain.project import Project
from posttrain.records import DatasetKind, DatasetVersion

_JSON = ("recipe", "source_ids", "stats")


def content_hash(table: pa.Table) -> str:
    """Return a SHA-256 over the rows, in order, independent of Parquet encoding details."""
    digest = hashlib.sha256()
    digest.update(orjson.dumps(table.schema.names))
    for batch in table.to_batches(max_chunksize=10_000):
        for row in batch.to_pylist():
            digest.update(orjson.dumps(row, option=orjson.OPT_SORT_KEYS | orjson.OPT_NAIVE_UTC))
    return digest.hexdigest()


def _row_to_version(columns: list[str], row: tuple[Any, ...]) -> DatasetVersion:
    data = dict(zip(columns, row, strict=True))
    for name in _JSON:
        if isinstance(data.get(name), str):
            data[name] = orjson.loads(data[name])
    return DatasetVersion(**data)


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
) -> DatasetVersion:
    """Write ``table`` as the next version of dataset ``name``; return its record."""
    if not name or "@" in name or "/" in name:
        raise InvalidInput(f"dataset name {name!r} must be non-empty without '@' or '/'", field="name")
    cur = project.cursor()
    last = cur.execute("SELECT max(version) FROM dataset_versions WHERE name = ?", [name]).fetchone()
    version = (last[0] or 0) + 1 if last else 1
    folder = project.artifacts / "datasets" / name / f"v{version}"
    folder.mkdir(parents=True, exist_ok=False)
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
        created_at=datetime.now(UTC).replace(tzinfo=None),
    )
    (folder / "manifest.json").write_text(json.dumps(record.model_dump(mode="json"), indent=2))
    data = record.model_dump()
    for field in _JSON:
        data[field] = orjson.dumps(data[field]).decode()
    cur.execute(
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
        result = cur.execute("SELECT * FROM dataset_versions WHERE name = ? AND version = ?", [name, int(version)])
    else:
        result = cur.execute("SELECT * FROM dataset_versions WHERE name = ? ORDER BY version DESC LIMIT 1", [name])
    row = result.fetchone()
    if row is None:
        what = f"dataset {name!r} has no version {version}" if version else f"no dataset {name!r}"
        raise NotFound(f"{what}; run 'posttrain datasets list'", field="dataset")
    return _row_to_version([d[0] for d in result.description], row)


def list_versions(project: Project, *, name: str | None = None) -> list[DatasetVersion]:
    """Return every dataset version (of ``name`` if given), newest first."""
    where, params = ("WHERE name = ?", [name]) if name else ("", [])
    result = project.cursor().execute(
        f"SELECT * FROM dataset_versions {where} ORDER BY created_at DESC, version DESC", params
    )
    columns = [d[0] for d in result.description]
    return [_row_to_version(columns, r) for r in result.fetchall()]


def read_rows(version: DatasetVersion) -> pa.Table:
    """Return a version's rows as an Arrow table."""
    path = Path(version.path)
    if not path.is_file():
        raise NotFound(f"the file of {version.ref} is missing: {path}", field="dataset")
    return pq.read_table(path)
