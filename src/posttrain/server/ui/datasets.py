"""The console's datasets pages: GET /ui/datasets (every dataset), /ui/datasets/{name} (its versions),
/ui/datasets/{name}/{version} (a version's manifest, recipe, counts, curation, models and rows) and
/ui/datasets/{name}/diff?a=&b= (rows added and removed between two versions, by source and cohort).

Versions come from ``posttrain.versions`` (``list_versions``, ``resolve``); the curation report is
the manifest's ``stats["curation"]`` and the version's ``curation.parquet``; the models trained on a
version are the registry's models that name it. The diff is the one query of this module's own: it
matches rows by content (an MD5 of each row as JSON, counted with multiplicity) and counts the
changed rows by their ``source`` column and by the cohort of the interaction they came from.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import APIRouter, Request
from starlette.responses import Response

from posttrain import plots, versions
from posttrain.errors import InvalidInput, NotFound
from posttrain.models.registry import list_models
from posttrain.names import name_problem
from posttrain.project import Project
from posttrain.records import DatasetVersion, ModelRecord
from posttrain.server.ui.console import (
    call,
    decode_cursor,
    encode_cursor,
    int_param,
    render_page,
    text_param,
    view,
)
from posttrain.server.ui.nav import READ
from posttrain.server.ui.pages import page

router = APIRouter(prefix="/datasets")

PAGE = 50  # datasets per page of the list
SAMPLE = 20  # rows per page of a version's sample
MAX_OFFSET = 10_000
EXAMPLES = 20  # example rows per side of a diff
CLIP = 240  # characters of a cell shown
MAX_VERSION = 10**9


# --- shared ---------------------------------------------------------------------------------


def _check_name(name: str) -> str:
    """Return ``name`` if it could name a dataset; raise NotFound (a 404 page) otherwise."""
    if len(name) > 128 or name_problem(name) is not None:
        raise NotFound(f"there is no dataset {name[:64]!r}; pick one from the list of datasets")
    return name


def _versions_of(project: Project, name: str) -> list[DatasetVersion]:
    """Return ``name``'s versions, newest first; raise NotFound when it has none."""
    found = versions.list_versions(project, name=name)
    if not found:
        raise NotFound(f"there is no dataset {name!r}; pick one from the list of datasets")
    return sorted(found, key=lambda v: v.version, reverse=True)


def _resolve(project: Project, name: str, version: int) -> DatasetVersion:
    try:
        return versions.resolve(project, f"{name}@{version}")
    except NotFound:
        raise NotFound(f"dataset {name!r} has no version {version}; pick one from its versions") from None


def _version_number(text: str) -> int:
    """Return the version of a path segment; a segment that is not a version number is a 404 page."""
    if not text.isdigit() or len(text) > 9 or int(text) < 1:
        raise NotFound(f"there is no version {text[:20]!r}; a version is a whole number, as in /ui/datasets/NAME/2")
    return int(text)


def _clip(text: str, limit: int = CLIP) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cell(value: Any) -> str:
    """Return a row's value as short text: messages as 'role: content' lines, lists joined, the rest as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return _clip(value)
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value):
        lines = []
        for message in value:
            content = message.get("content")
            if isinstance(content, list):  # parts: their text
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            lines.append(f"{message.get('role')}: {content if content is not None else ''}")
        return _clip("\n".join(lines))
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return _clip(", ".join(value))
    if isinstance(value, float):
        return f"{value:.4g}"
    return _clip(json.dumps(value, ensure_ascii=False, default=str))


def _interaction_ids(row: dict[str, Any]) -> list[str]:
    """Return the interaction ids a row carries (sft: one, preference: the pair's)."""
    if isinstance(row.get("interaction_id"), str):
        return [row["interaction_id"]]
    ids = row.get("interaction_ids")
    return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []


def _shown_row(row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    """Return a row as the templates draw it: clipped cells per column and its interaction ids."""
    shown = [c for c in columns if c not in ("interaction_id", "interaction_ids")]
    return {"cells": [_cell(row.get(c)) for c in shown], "interactions": _interaction_ids(row)}


def _shown_columns(columns: list[str]) -> list[str]:
    return [c for c in columns if c not in ("interaction_id", "interaction_ids")]


# --- GET /ui/datasets ------------------------------------------------------------------------


def _summaries(project: Project) -> list[dict[str, Any]]:
    """Return one summary per dataset (by name): kind, versions, the latest version and its rows, created."""
    by_name: dict[str, list[DatasetVersion]] = defaultdict(list)
    for version in versions.list_versions(project):
        by_name[version.name].append(version)
    out = []
    for name in sorted(by_name):
        found = sorted(by_name[name], key=lambda v: v.version)
        latest = found[-1]
        out.append({
            "name": name, "kind": latest.kind, "versions": len(found), "latest": latest.version,
            "rows": latest.row_count, "created": found[0].created_at, "updated": latest.created_at,
        })  # fmt: skip
    return out


@router.get("")
@page
async def datasets_list(request: Request, cursor: str | None = None) -> Response:
    """List every dataset: kind, versions, latest version, its rows, when it was created."""
    session = view(request, READ)
    after = decode_cursor(cursor)
    start = str(after.get("after", "")) if after else ""
    every = await call(_summaries, request.app.state.project)
    shown = [d for d in every if d["name"] > start][:PAGE]
    more = len([d for d in every if d["name"] > start]) > PAGE
    next_url = f"/ui/datasets?cursor={encode_cursor({'after': shown[-1]['name']})}" if more and shown else None
    return render_page(
        request, session, "ui/console/datasets.html", active="datasets", title="Datasets", datasets=shown,
        total=len(every), next_url=next_url, first_url="/ui/datasets" if start else None,
    )  # fmt: skip


# --- GET /ui/datasets/{name} -----------------------------------------------------------------


def _curation_summary(version: DatasetVersion) -> dict[str, Any] | None:
    curation = version.stats.get("curation")
    if not curation:
        return None
    removed = {s["stage"]: s.get("removed", 0) for s in curation.get("stages", []) if s.get("removed")}
    return {"rows_in": curation.get("rows_in", 0), "rows_out": curation.get("rows_out", 0), "removed": removed}


def _sources(version: DatasetVersion) -> dict[str, int]:
    return {k: v for k, v in version.source_ids.items() if k != "file" and isinstance(v, int)}


@router.get("/{name}")
@page
async def dataset(request: Request, name: str) -> Response:
    """Show a dataset's versions with their rows, hashes, curation and sources, and a form to diff two."""
    session = view(request, READ)
    found = await call(_versions_of, request.app.state.project, _check_name(name))
    rows = [
        {"v": v, "curation": _curation_summary(v), "sources": _sources(v), "by_source": v.stats.get("by_source", {})}
        for v in found
    ]
    return render_page(
        request, session, "ui/console/datasets_versions.html", active="datasets", title=f"Dataset {name}",
        name=name, kind=found[0].kind, rows=rows, numbers=[v.version for v in found],
    )  # fmt: skip


# --- GET /ui/datasets/{name}/diff ------------------------------------------------------------


_IDS = ("interaction_id", "interaction_ids")


def _side(columns: list[str], table: str) -> str:
    """Return the SELECT of one version's rows: content hash, position, source, interaction, cohort, JSON.

    ``table`` has two struct columns: ``r`` (the whole row) and ``c`` (the row without its interaction ids,
    which the content hash covers).
    """
    source = "t.r.source" if "source" in columns else "NULL"
    if "interaction_id" in columns:
        interaction = "t.r.interaction_id"
    elif "interaction_ids" in columns:
        interaction = "t.r.interaction_ids[1]"
    else:
        interaction = "NULL"
    cohort = "t.r.cohort" if "cohort" in columns else "NULL"
    return (
        f"SELECT md5(to_json(t.c)::VARCHAR) AS h, row_number() OVER () AS pos, CAST({source} AS VARCHAR) AS src, "
        f"CAST({interaction} AS VARCHAR) AS iid, CAST({cohort} AS VARCHAR) AS coh, to_json(t.r)::VARCHAR AS j "
        f"FROM {table} t"
    )


def _as_structs(table: pa.Table) -> pa.Table:
    """Return ``table`` as two struct columns: ``r`` (every column) and ``c`` (all but the interaction ids)."""
    names = table.column_names
    columns = [table.column(n).combine_chunks() for n in names]
    kept = [(n, c) for n, c in zip(names, columns, strict=True) if n not in _IDS]
    if not names:
        return pa.table({"r": pa.array([], pa.struct([])), "c": pa.array([], pa.struct([]))})
    row = pa.StructArray.from_arrays(columns, names=names)
    content = pa.StructArray.from_arrays([c for _, c in kept], names=[n for n, _ in kept]) if kept else row
    return pa.table({"r": row, "c": content})


_DIFF = """
WITH a0 AS ({a}), b0 AS ({b}),
a AS (SELECT *, row_number() OVER (PARTITION BY h ORDER BY pos) AS k FROM a0),
b AS (SELECT *, row_number() OVER (PARTITION BY h ORDER BY pos) AS k FROM b0)
SELECT 'added' AS side, b.pos, b.src, b.iid, b.coh, b.j FROM b ANTI JOIN a USING (h, k)
UNION ALL
SELECT 'removed' AS side, a.pos, a.src, a.iid, a.coh, a.j FROM a ANTI JOIN b USING (h, k)
ORDER BY side, pos"""
_ORIGINS = "SELECT id, cohort, source FROM interactions WHERE list_contains($ids, id)"


def _changed_rows(old: pa.Table, new: pa.Table) -> list[tuple[Any, ...]]:
    """Return (side, position, source, interaction id, cohort, row JSON) of the rows only one side holds."""
    con = duckdb.connect()  # private: the rows are Arrow tables here, not files the server's connection reads
    try:
        con.register("rows_a", _as_structs(old))
        con.register("rows_b", _as_structs(new))
        sql = _DIFF.format(a=_side(old.column_names, "rows_a"), b=_side(new.column_names, "rows_b"))
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _diff(project: Project, old: DatasetVersion, new: DatasetVersion) -> dict[str, Any]:
    """Return the rows added and removed from ``old`` to ``new``: totals, counts by source and cohort, examples."""
    tables = [versions.read_rows(old), versions.read_rows(new)]
    changed = _changed_rows(*tables)
    ids = sorted({row[3] for row in changed if row[3]})
    origins: dict[str, tuple[str | None, str | None]] = {}
    if ids:
        for iid, cohort, origin in project.cursor().execute(_ORIGINS, {"ids": ids}).fetchall():
            origins[iid] = (cohort, origin)
    columns = {"removed": tables[0].column_names, "added": tables[1].column_names}
    totals = {"added": 0, "removed": 0}
    counts: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: {"added": 0, "removed": 0})
    examples: dict[str, list[dict[str, Any]]] = {"added": [], "removed": []}
    for side, _pos, src, iid, cohort, text in changed:
        found_cohort, origin = origins.get(iid, (None, None)) if iid else (None, None)
        totals[side] += 1
        counts[(src or "(none)", cohort or found_cohort or "(none)", origin or "(none)")][side] += 1
        if len(examples[side]) < EXAMPLES:
            examples[side].append(_shown_row(json.loads(text), columns[side]))
    by_source = [{"source": k[0], "cohort": k[1], "origin": k[2], **v} for k, v in sorted(counts.items())]
    return {
        "totals": totals, "by_source": by_source, "examples": examples,
        "columns": {side: _shown_columns(names) for side, names in columns.items()},
        "same_columns": columns["added"] == columns["removed"],
    }  # fmt: skip


def _required_version(value: str | None, name: str) -> int:
    text = text_param(value, name, 20)
    if not text:
        raise InvalidInput(f"{name}: pick a version to compare (as in ?a=1&b=2)", field=name)
    return int_param(text, name, default=0, low=1, high=MAX_VERSION)


@router.get("/{name}/diff")
@page
async def diff(request: Request, name: str, a: str | None = None, b: str | None = None) -> Response:
    """Show the rows added and removed between versions ``a`` and ``b``, counted by source and cohort."""
    session = view(request, READ)
    project = request.app.state.project
    found = await call(_versions_of, project, _check_name(name))
    first, second = _required_version(a, "a"), _required_version(b, "b")
    numbers = {v.version: v for v in found}
    for number in (first, second):
        if number not in numbers:
            raise NotFound(f"dataset {name!r} has no version {number}; pick one from its versions")
    old, new = numbers[first], numbers[second]
    result = await call(_diff, project, old, new)
    return render_page(
        request, session, "ui/console/datasets_diff.html", active="datasets", title=f"{name}: v{first} → v{second}",
        name=name, old=old, new=new, numbers=sorted(numbers, reverse=True), **result,
    )  # fmt: skip


# --- GET /ui/datasets/{name}/{version} -------------------------------------------------------


def _sample_rows(path: str, offset: int, count: int) -> tuple[list[dict[str, Any]], list[str], int]:
    """Return rows ``offset``..``offset+count`` of a Parquet file (reading only the row groups needed)."""
    file = pq.ParquetFile(path)
    total = file.metadata.num_rows
    columns = file.schema_arrow.names
    tables: list[pa.Table] = []
    start, skip = 0, 0
    for group in range(file.num_row_groups):
        end = start + file.metadata.row_group(group).num_rows
        if end > offset and start < offset + count:
            if not tables:
                skip = offset - start
            tables.append(file.read_row_group(group))
        start = end
        if start >= offset + count:
            break
    if not tables:
        return [], columns, total
    return pa.concat_tables(tables).slice(skip, count).to_pylist(), columns, total


def _cohort_counts(version: DatasetVersion) -> list[dict[str, Any]]:
    """Return rows per cohort: in and kept (from curation.parquet), else from the rows' cohort column."""
    details = Path(version.path).parent / "curation.parquet"
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"rows_in": 0, "rows": 0})
    if details.is_file():
        table = pq.read_table(details, columns=["cohort", "kept"])
        for cohort, kept in zip(table.column("cohort").to_pylist(), table.column("kept").to_pylist(), strict=True):
            counts[cohort or "(none)"]["rows_in"] += 1
            counts[cohort or "(none)"]["rows"] += int(bool(kept))
    elif "cohort" in pq.read_schema(version.path).names:
        for cohort in pq.read_table(version.path, columns=["cohort"]).column("cohort").to_pylist():
            counts[cohort or "(none)"]["rows"] += 1
    return [{"cohort": k, **v} for k, v in sorted(counts.items())]


def _removed_chart(curation: dict[str, Any]) -> str:
    stages = curation.get("stages", [])
    names = [str(s["stage"]) for s in stages]
    removed = [float(s.get("removed", 0)) for s in stages]
    title = f"Rows removed per stage ({curation.get('rows_in', 0)} in, {curation.get('rows_out', 0)} out)"
    return plots.bars(names, {"rows removed": removed}, title=title, y_label="rows", width=5.6, height=2.8)


def _map_chart(version: DatasetVersion) -> str | None:
    """Return the curation report's embedding map by cohort, where a selection stage placed rows on one."""
    from posttrain.curation import report

    details = Path(version.path).parent / "curation.parquet"
    if not details.is_file():
        return None
    data = pq.read_table(details).to_pydict()
    mapped = [i for i, x in enumerate(data.get("x", [])) if x is not None]
    if not mapped:
        return None
    return plots.cached(("curation-map", version.id), lambda: report._map_svg(data, report._sample(mapped), "cohort"))


def _pii(version: DatasetVersion) -> dict[str, int]:
    scrubbed = version.stats.get("pii_scrubbed") or {}
    return {str(k): int(v) for k, v in scrubbed.items() if isinstance(v, int | float)}


def _version_page(project: Project, name: str, number: int, offset: int) -> dict[str, Any]:
    version = _resolve(project, name, number)
    manifest: Any = None
    if version.manifest_path and Path(version.manifest_path).is_file():
        try:
            manifest = json.loads(Path(version.manifest_path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            manifest = None
    if manifest is None:
        manifest = version.model_dump(mode="json")
    if not Path(version.path).is_file():
        rows: list[dict[str, Any]] = []
        columns: list[str] = []
        total = version.row_count
        missing = f"the rows of {version.ref} are missing: {version.path}"
    else:
        raw, columns, total = _sample_rows(version.path, offset, SAMPLE)
        rows = [_shown_row(r, columns) for r in raw]
        missing = None
    curation = version.stats.get("curation") or None
    models: list[ModelRecord] = [m for m in list_models(project) if version.ref in m.dataset_versions]
    return {
        "v": version, "manifest": json.dumps(manifest, indent=2, ensure_ascii=False, default=str),
        "recipe": json.dumps(version.recipe, indent=2, ensure_ascii=False, default=str),
        "sources": _sources(version), "by_source": version.stats.get("by_source", {}),
        "cohorts": _cohort_counts(version) if not missing else [], "curation": curation,
        "removed_chart": _removed_chart(curation) if curation else None,
        "map_chart": _map_chart(version) if curation else None,
        "pii": _pii(version), "models": models, "rows": rows, "columns": _shown_columns(columns), "total": total,
        "missing": missing,
    }  # fmt: skip


@router.get("/{name}/{version}")
@page
async def dataset_version(request: Request, name: str, version: str, offset: str | None = None) -> Response:
    """Show a version: manifest, recipe, row counts, curation and PII counts, models trained on it, sample rows."""
    session = view(request, READ)
    _check_name(name)
    number = _version_number(version)
    start = int_param(offset, "offset", default=0, low=0, high=MAX_OFFSET)
    context = await call(_version_page, request.app.state.project, name, number, start)
    base = f"/ui/datasets/{name}/{number}"
    following = start + SAMPLE
    next_url = f"{base}?offset={following}#rows" if following < context["total"] and following <= MAX_OFFSET else None
    return render_page(
        request, session, "ui/console/datasets_version.html", active="datasets", title=f"{name}@{number}",
        name=name, offset=start, next_url=next_url, first_url=f"{base}#rows" if start else None, **context,
    )  # fmt: skip
