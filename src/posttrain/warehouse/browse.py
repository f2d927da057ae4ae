"""Browse the interactions as the console shows them: a filtered, keyset-paged list and one interaction's story.

``search`` answers one page of the list in a single query over the columns the table shows (prompt
and response clipped in SQL), newest first by ``(timestamp, id)`` with no OFFSET, and counts the
feedback of the rows on that page only. An admin's ``where`` passes the same walls as users' SQL
(``posttrain.where`` and ``warehouse.sandbox``: one condition, tables checked, a read-only
transaction). ``trail`` answers what one interaction fed: its labels, the dataset versions whose
sources name it (or its feedback), and the models trained on those versions.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, get_args

import duckdb
import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq

from posttrain import versions
from posttrain.errors import InvalidInput
from posttrain.models.registry import list_models
from posttrain.project import Project
from posttrain.records import DatasetVersion, FeedbackKind, ModelRecord
from posttrain.warehouse import analytics, sandbox
from posttrain.where import check_where

FEEDBACK_KINDS: tuple[str, ...] = (*get_args(FeedbackKind), "any")
CLIP = 160  # characters of prompt and response a list row shows
MAX_LIMIT = 200
WHERE_SECONDS = 20.0  # an admin's condition that runs longer is interrupted

# The prompt a row shows: the last user message (else the last message), its text or its first part's text.
_LAST_USER = (
    "coalesce(list_filter(json_extract(i.messages, '$[*]'), lambda m: json_extract_string(m, '$.role') = 'user')[-1], "
    "json_extract(i.messages, '$[#-1]'))"
)
_PROMPT = (
    f"coalesce(json_extract_string({_LAST_USER}, '$.content[0].text'), json_extract_string({_LAST_USER}, '$.content'))"
)
# What ``q`` searches: every message's content, and the response (on PostgreSQL: the messages' JSON text).
_TEXT = "lower(array_to_string(json_extract_string(i.messages, '$[*].content'), chr(10)))"
_TEXT_PG = "lower(CAST(i.messages AS VARCHAR))"


@dataclass(frozen=True)
class Filters:
    """What the list is narrowed to; None (or empty) means no condition."""

    since: datetime | None = None
    until: datetime | None = None
    cohort: str | None = None
    model: str | None = None
    user: str | None = None
    tag: str | None = None
    feedback: str | None = None
    q: str | None = None
    where: str | None = None


@dataclass
class Row:
    """One interaction as a list row: its decision columns, clipped text and feedback counts by kind."""

    id: str
    timestamp: datetime
    cohort: str | None
    model: str | None
    user_id: str | None
    experiment: str | None
    variant: str | None
    prompt: str
    response: str
    feedback: dict[str, int] = field(default_factory=dict)


@dataclass
class Page:
    """One page of rows, and the (timestamp, id) key after which the next page starts (None at the end)."""

    rows: list[Row]
    next_key: tuple[datetime, str] | None


def _conditions(filters: Filters, *, postgres: bool = False) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    for clause, value in [
        ('i."timestamp" >= ?', filters.since),
        ('i."timestamp" < ?', filters.until),
        ("i.cohort = ?", filters.cohort),
        ("i.model = ?", filters.model),
        ("i.user_id = ?", filters.user),
        ("list_contains(i.tags, ?)", filters.tag),
    ]:
        if value is not None and value != "":
            where.append(clause)
            params.append(value)
    if filters.feedback == "any":
        where.append("EXISTS (SELECT 1 FROM feedback f WHERE f.interaction_id = i.id)")
    elif filters.feedback:
        if filters.feedback not in FEEDBACK_KINDS:
            raise InvalidInput(f"feedback: one of {', '.join(FEEDBACK_KINDS)}", field="feedback")
        where.append("EXISTS (SELECT 1 FROM feedback f WHERE f.interaction_id = i.id AND f.kind = ?)")
        params.append(filters.feedback)
    if filters.q:
        text = _TEXT_PG if postgres else _TEXT
        where.append(f"(contains({text}, ?) OR contains(lower(coalesce(i.response, '')), ?))")
        params += [filters.q.lower()] * 2
    return where, params


def checked_where(where: str | None) -> str | None:
    """Return an admin's condition over ``i`` (the interactions) if it is one; raise InvalidInput naming ``where``."""
    try:
        condition = check_where(where)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="where") from None
    if condition is None:
        return None
    try:
        sandbox.select_text(f"SELECT 1 FROM interactions i WHERE ({condition})")
    except InvalidInput as exc:
        raise InvalidInput(f"where: {exc.message}", field="where") from None
    return condition


def search(project: Project, filters: Filters, *, after: tuple[datetime, str] | None = None, limit: int = 50) -> Page:
    """Return one page of interactions matching ``filters``, newest first, starting after the key ``after``."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit: between 1 and {MAX_LIMIT}", field="limit")
    condition = checked_where(filters.where)
    where, params = _conditions(filters, postgres=project.is_postgres)
    if condition is not None:
        where.append(f"({condition})")
    if after is not None:  # the first half lets the scan skip row groups by their time range
        where.append('i."timestamp" <= ? AND (i."timestamp", i.id) < (?, ?)')
        params += [after[0], *after]
    keys_sql = (
        f'SELECT i.id, i."timestamp" FROM interactions i WHERE {" AND ".join(where) or "true"} '
        f'ORDER BY i."timestamp" DESC, i.id DESC LIMIT ?'
    )
    cur = project.cursor()
    if condition is None:
        keys = _run(cur, keys_sql, [*params, limit + 1])
    else:  # an admin's SQL: on PostgreSQL it runs on a DuckDB copy, behind DuckDB's walls, never as the owner
        with analytics.duckdb_over(project, keys_sql) as snapshot:
            keys = _run_where(snapshot, keys_sql, [*params, limit + 1])
    shown = keys[:limit]
    rows = _rows(cur, shown, postgres=project.is_postgres)
    counts = feedback_counts(cur, [r.id for r in rows])
    for row in rows:
        row.feedback = counts.get(row.id, {})
    last = shown[-1] if shown and len(keys) > limit else None
    return Page(rows=rows, next_key=(last[1], last[0]) if last else None)


def _rows(cur: Any, keys: list[tuple[Any, ...]], *, postgres: bool = False) -> list[Row]:
    """Return the list rows of ``keys`` (id, timestamp), in their order: only these rows' text is read and clipped.

    On PostgreSQL the messages are read whole and the prompt taken out here (DuckDB's JSON path
    wildcards and negative list indexes do not translate).
    """
    if not keys:
        return []
    ids = [k[0] for k in keys]
    times = [k[1] for k in keys]
    prompt = "i.messages" if postgres else f"left({_PROMPT}, {CLIP})"
    sql = (
        f'SELECT i.id, i."timestamp", i.cohort, i.model, i.user_id, i.experiment, i.variant, '
        f"{prompt} AS prompt, left(i.response, {CLIP}) AS response FROM interactions i "
        f'WHERE i."timestamp" BETWEEN ? AND ? AND list_contains(?, i.id)'
    )
    found = {r[0]: r for r in cur.execute(sql, [min(times), max(times), ids]).fetchall()}
    return [
        Row(id=r[0], timestamp=r[1], cohort=r[2], model=r[3], user_id=r[4], experiment=r[5], variant=r[6],
            prompt=(_prompt_of(r[7])[:CLIP] if postgres else r[7]) or "", response=r[8] or "")
        for r in (found[i] for i in ids if i in found)
    ]  # fmt: skip


def _prompt_of(messages: Any) -> str:
    """Return the last user message's text (else the last message's): its content, or its first part's text."""
    try:
        listed = orjson.loads(messages) if isinstance(messages, str) else messages
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(listed, list) or not listed:
        return ""
    users = [m for m in listed if isinstance(m, dict) and m.get("role") == "user"]
    last = users[-1] if users else listed[-1]
    content = last.get("content") if isinstance(last, dict) else None
    if isinstance(content, list):
        first = content[0] if content else None
        return str(first.get("text") or "") if isinstance(first, dict) else ""
    return "" if content is None else str(content)


def _run(cur: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    return cur.execute(sql, params).fetchall()


def _run_where(cur: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """Run the list with an admin's condition: tables checked, read-only, interrupted when it runs too long."""
    cur.execute("BEGIN TRANSACTION READ ONLY")
    timer = threading.Timer(WHERE_SECONDS, cur.interrupt)
    try:
        try:
            sandbox.check_tables(cur, sql, admin=False)
        except InvalidInput as exc:
            raise InvalidInput(f"where: {exc.message}", field="where") from None
        timer.start()
        try:
            return cur.execute(sql, params).fetchall()
        except duckdb.InterruptException:
            raise InvalidInput(
                f"where: the condition ran over {WHERE_SECONDS:.0f} s; narrow it", field="where"
            ) from None
        except duckdb.Error as exc:
            first = str(exc).splitlines()[0]
            raise InvalidInput(f"where is not a condition over interactions 'i': {first}", field="where") from None
    finally:
        timer.cancel()
        with contextlib.suppress(duckdb.Error):
            cur.execute("ROLLBACK")


def feedback_counts(cur: duckdb.DuckDBPyConnection, ids: list[str]) -> dict[str, dict[str, int]]:
    """Return, for each of ``ids``, its feedback events counted by kind."""
    if not ids:
        return {}
    sql = (
        "SELECT interaction_id, kind, count(*) FROM feedback WHERE list_contains(?, interaction_id) "
        "GROUP BY ALL ORDER BY 1, 2"
    )
    out: dict[str, dict[str, int]] = {}
    for interaction_id, kind, count in cur.execute(sql, [ids]).fetchall():
        out.setdefault(interaction_id, {})[kind] = count
    return out


@dataclass
class Label:
    """One annotator's or judge's label of an interaction, with its queue."""

    queue: str | None
    annotator: str
    source: str
    value: Any
    confidence: float | None
    created_at: datetime


@dataclass
class DatasetUse:
    """A dataset version built from an interaction: which of its records (the interaction, its feedback)."""

    version: DatasetVersion
    kinds: list[str]
    models: list[ModelRecord] = field(default_factory=list)


@dataclass
class Trail:
    """What an interaction fed: its labels, the dataset versions that used it and the models trained on them."""

    labels: list[Label]
    datasets: list[DatasetUse]


def labels_of(project: Project, interaction_id: str) -> list[Label]:
    """Return the annotation labels of ``interaction_id``, oldest first."""
    sql = (
        "SELECT q.name, l.annotator, l.source, l.value, l.confidence, l.created_at FROM labels l "
        "LEFT JOIN annotation_queues q ON q.id = l.queue_id WHERE l.interaction_id = ? ORDER BY l.created_at, l.id"
    )
    return [
        Label(queue, who, source, orjson.loads(value) if isinstance(value, str) else value, confidence, at)
        for queue, who, source, value, confidence, at in project.cursor().execute(sql, [interaction_id]).fetchall()
    ]


def _used_by(file: str, ids: list[str]) -> list[str]:
    """Return the kinds of source records in ``file`` (a version's sources.parquet) among ``ids``."""
    path = Path(file)
    if not path.is_file():
        return []
    table = pq.read_table(path, columns=["kind", "id"], filters=[("id", "in", ids)])
    if table.num_rows == 0:
        return []
    return sorted({str(k) for k in pc.unique(table.column("kind")).to_pylist() if k is not None})


def trail(project: Project, interaction_id: str, feedback_ids: list[str]) -> Trail:
    """Return ``interaction_id``'s labels, the versions whose sources name it or ``feedback_ids``, and their models."""
    ids = [interaction_id, *feedback_ids]
    uses: list[DatasetUse] = []
    for version in versions.list_versions(project):
        file = version.source_ids.get("file")
        if not isinstance(file, str) or not any(v for k, v in version.source_ids.items() if k != "file"):
            continue
        kinds = _used_by(file, ids)
        if kinds:
            uses.append(DatasetUse(version=version, kinds=kinds))
    if uses:
        models = list_models(project)
        for use in uses:
            use.models = [m for m in models if use.version.ref in m.dataset_versions]
    return Trail(labels=labels_of(project, interaction_id), datasets=uses)
