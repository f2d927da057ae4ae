"""Filling a queue with items: from a SQL condition, a dataset version, given ids, or active selection.

An item is one interaction, or on a pairwise queue two answers to the same prompt. A where or a
dataset fill on a pairwise queue pairs up answers that share a prompt and differ. An interaction
(or pair) already in the queue is not added again. Gold items carry a known answer and are mixed
into what annotators are served, to measure each annotator's accuracy.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from posttrain import datasets
from posttrain.annotate.queues import get_queue
from posttrain.annotate.records import FillResult, Queue
from posttrain.annotate.tasks import check_label, place_choice
from posttrain.clock import utc_now
from posttrain.errors import InvalidInput, NotFound
from posttrain.ids import new_id
from posttrain.project import Project
from posttrain.warehouse import analytics

MAX_FILL = 100_000

Candidate = tuple[str, str | None]  # (interaction id, second interaction id or None)


def _where_ids(project: Project, where: str, limit: int, pairwise: bool) -> list[Candidate]:
    try:
        condition = datasets.check_where(where)
    except ValueError as exc:
        raise InvalidInput(f"where: {exc}", field="where") from None
    if not pairwise:
        sql = f'SELECT i.id FROM interactions i WHERE ({condition}) ORDER BY i."timestamp", i.id LIMIT ?'
        return [(r[0], None) for r in _run(project, sql, [limit])]
    return _pairs(project, f"SELECT i.id FROM interactions i WHERE ({condition})", [], limit)


def _run(project: Project, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    try:
        with analytics.duckdb_over(project, sql) as cur:  # PostgreSQL: a DuckDB copy; a user's condition runs there
            return cur.execute(sql, params).fetchall()
    except Exception as exc:  # a user's condition that DuckDB refuses: say so, as a 400
        raise InvalidInput(f"where: {str(exc).splitlines()[0][:300]}", field="where") from None


def _pairs(project: Project, ids_sql: str, params: list[Any], limit: int) -> list[Candidate]:
    """Pair consecutive distinct answers to the same prompt among the interactions ``ids_sql`` selects."""
    sql = f"""
    WITH c AS (
        SELECT i.id, hash(i.messages::VARCHAR) AS prompt, hash(coalesce(i.response, '')) AS answer, i."timestamp"
        FROM interactions i WHERE i.id IN ({ids_sql}) AND i.response IS NOT NULL
    ), one AS (  -- one interaction per distinct answer
        SELECT prompt, answer, arg_min(id, ("timestamp", id)) AS id, min("timestamp") AS t FROM c GROUP BY ALL
    ), numbered AS (
        SELECT *, row_number() OVER (PARTITION BY prompt ORDER BY t, id) AS n FROM one
    )
    SELECT a.id, b.id FROM numbered a JOIN numbered b ON a.prompt = b.prompt AND b.n = a.n + 1
    WHERE a.n % 2 = 1 ORDER BY a.t, a.id LIMIT ?"""
    return [(r[0], r[1]) for r in _run(project, sql, [*params, limit])]


def _dataset_ids(project: Project, ref: str, limit: int, pairwise: bool) -> list[Candidate]:
    version = datasets.resolve(project, ref)
    file = version.source_ids.get("file") if isinstance(version.source_ids, dict) else None
    if not isinstance(file, str):
        raise NotFound(f"{version.ref} records no source ids; rebuild it", field="dataset")
    table = pq.read_table(file)
    ids = [i for k, i in zip(table.column("kind").to_pylist(), table.column("id").to_pylist(), strict=True)
           if k == "interactions"]  # fmt: skip
    ids = list(dict.fromkeys(ids))
    if not pairwise:
        return [(i, None) for i in ids[:limit]]
    return _pairs(project, "SELECT unnest(?)", [ids], limit)


def _known(project: Project, queue: Queue, candidates: Sequence[Candidate]) -> list[Candidate]:
    """Return the candidates that exist as interactions and are not in the queue yet, in order, once each."""
    ids = sorted({i for pair in candidates for i in pair if i is not None})
    cur = project.cursor()
    cur.register("_fill_check", pa.table({"id": ids}))
    try:
        found = {r[0] for r in cur.execute("SELECT id FROM interactions SEMI JOIN _fill_check USING (id)").fetchall()}
    finally:
        cur.unregister("_fill_check")
    rows = cur.execute(
        "SELECT interaction_id, second_interaction_id FROM annotation_items WHERE queue_id = ? AND gold IS NULL",
        [queue.id],
    ).fetchall()
    seen = {(a, b) for a, b in rows} | {(b, a) for a, b in rows if b is not None}
    missing = sorted({i for pair in candidates for i in pair if i is not None} - found)
    if missing:
        raise NotFound(f"no interaction {missing[0][:64]!r} (and {len(missing) - 1} more)", field="interaction_ids")
    out = []
    for pair in candidates:
        if pair not in seen:
            seen.add(pair)
            out.append(pair)
    return out


def _check_pairs(queue: Queue, candidates: Sequence[Candidate]) -> None:
    pairwise = queue.task == "pairwise"
    for first, second in candidates:
        if pairwise and (second is None or second == first):
            raise InvalidInput("pairs: a pairwise queue takes pairs of two different interactions", field="pairs")
        if not pairwise and second is not None:
            raise InvalidInput(f"pairs: a {queue.task} queue takes single interactions", field="pairs")


def fill(
    project: Project,
    name: str,
    *,
    where: str | None = None,
    dataset: str | None = None,
    interaction_ids: Sequence[str] | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
    limit: int = 1000,
    origin: str | None = None,
    priorities: Sequence[float] | None = None,
    reasons: Sequence[str | None] | None = None,
) -> FillResult:
    """Add items to a queue from exactly one source; ``priorities``/``reasons`` go with given ids or pairs."""
    given = [x for x in (where, dataset, interaction_ids, pairs) if x is not None]
    if len(given) != 1:
        raise InvalidInput("fill from exactly one of: where, dataset, interaction_ids, pairs", field="where")
    if not 1 <= limit <= MAX_FILL:
        raise InvalidInput(f"limit: from 1 to {MAX_FILL}", field="limit")
    queue = get_queue(project, name)
    pairwise = queue.task == "pairwise"
    if where is not None:
        candidates, kind = _where_ids(project, where, limit, pairwise), "where"
    elif dataset is not None:
        candidates, kind = _dataset_ids(project, dataset, limit, pairwise), "dataset"
    else:
        given_ids: list[Candidate] = [(a, b) for a, b in pairs] if pairs is not None else \
            [(i, None) for i in interaction_ids or []]  # fmt: skip
        if len(given_ids) > MAX_FILL:
            raise InvalidInput(f"interaction_ids: at most {MAX_FILL} per fill", field="interaction_ids")
        candidates, kind = given_ids[:limit], "ids"
    _check_pairs(queue, candidates)
    extra = _extras(candidates, priorities, reasons)
    fresh = _known(project, queue, candidates)
    added = _insert(project, queue, fresh, extra, origin or kind)
    return FillResult(queue=queue.name, added=added, existing=len(candidates) - added, origin=origin or kind)


def _extras(
    candidates: Sequence[Candidate], priorities: Sequence[float] | None, reasons: Sequence[str | None] | None
) -> dict[Candidate, tuple[float | None, str | None]]:
    for given, what in ((priorities, "priorities"), (reasons, "reasons")):
        if given is not None and len(given) != len(candidates):
            raise InvalidInput(f"{what}: one per interaction ({len(candidates)})", field=what)
    return {
        c: (None if priorities is None else float(priorities[n]), None if reasons is None else reasons[n])
        for n, c in enumerate(candidates)
    }


def _count(project: Project, sql: str, params: list[Any]) -> int:
    row = project.cursor().execute(sql, params).fetchone()
    return int(row[0]) if row else 0


def _priority(queue: Queue, given: float | None, rng: random.Random, n: int) -> float:
    if given is not None:
        return given
    return rng.random() if queue.priority == "random" else -float(n) * 1e-9  # fifo: earlier first


def _insert(
    project: Project,
    queue: Queue,
    fresh: Sequence[Candidate],
    extra: dict[Candidate, tuple[float | None, str | None]],
    origin: str,
    *,
    gold: str | None = None,
) -> int:
    if not fresh:
        return 0
    now, rng = utc_now(), random.Random()
    start = _count(project, "SELECT count(*) FROM annotation_items WHERE queue_id = ?", [queue.id])
    table = pa.table({
        "id": [new_id() for _ in fresh],
        "queue_id": [queue.id] * len(fresh),
        "interaction_id": [a for a, _ in fresh],
        "second_interaction_id": pa.array([b for _, b in fresh], pa.string()),
        "origin": [origin] * len(fresh),
        "priority": [_priority(queue, extra.get(c, (None, None))[0], rng, start + n) for n, c in enumerate(fresh)],
        "reason": pa.array([extra.get(c, (None, None))[1] for c in fresh], pa.string()),
        "gold": pa.array([gold] * len(fresh), pa.string()),
        "created_at": pa.array([now] * len(fresh), pa.timestamp("us")),
    })  # fmt: skip
    cur = project.cursor()
    cur.register("_new_items", table)
    try:
        cur.execute("""
            INSERT INTO annotation_items (id, queue_id, interaction_id, second_interaction_id, origin, priority,
                                          reason, cohort, gold, status, created_at)
            SELECT n.id, n.queue_id, n.interaction_id, n.second_interaction_id, n.origin, n.priority, n.reason,
                   i.cohort, n.gold::JSON, 'open', n.created_at
            FROM _new_items n JOIN interactions i ON i.id = n.interaction_id""")
    finally:
        cur.unregister("_new_items")
    return len(fresh)


def add_gold(
    project: Project,
    name: str,
    interaction_id: str,
    answer: dict[str, Any],
    *,
    second_interaction_id: str | None = None,
) -> FillResult:
    """Add a gold item: an interaction (or pair, answer 'a' meaning the first) whose right label is known."""
    queue = get_queue(project, name)
    value = check_label(queue, answer)
    candidate = (interaction_id, second_interaction_id)
    _check_pairs(queue, [candidate])
    if queue.task == "pairwise":
        value = place_choice(value, (interaction_id, second_interaction_id))
    found = _count(project, "SELECT count(*) FROM interactions WHERE id IN (?, ?)",
                   [interaction_id, second_interaction_id or interaction_id])  # fmt: skip
    if found != (2 if second_interaction_id else 1):
        raise NotFound(f"no interaction {interaction_id[:64]!r} (or its pair)", field="interaction_id")
    added = _insert(project, queue, [candidate], {}, "gold", gold=orjson.dumps(value).decode())
    return FillResult(queue=queue.name, added=added, origin="gold")
