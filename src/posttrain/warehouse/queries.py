"""Read queries over the warehouse: interactions with their feedback (users' own SQL: ``sandbox``)."""

from __future__ import annotations

import base64
from datetime import datetime

import duckdb

from posttrain.errors import InvalidInput, NotFound
from posttrain.records import InteractionPage, StoredFeedback, StoredInteraction
from posttrain.warehouse.rows import fetch_all, fetch_one

_JSON_COLUMNS = {"messages", "metadata", "consent", "media", "value"}
MAX_PAGE = 1000


def _encode_cursor(ts: datetime, event_id: str) -> str:
    return base64.urlsafe_b64encode(f"{ts.isoformat()}|{event_id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        ts, event_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromisoformat(ts), event_id
    except ValueError:
        raise InvalidInput("cursor is not one this server issued", field="cursor") from None


def list_interactions(
    cur: duckdb.DuckDBPyConnection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    user_id: str | None = None,
    cohort: str | None = None,
    model: str | None = None,
    tag: str | None = None,
    has_feedback: bool | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> InteractionPage:
    """Return interactions newest first, filtered, one page at a time."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    where, params = ["true"], []
    for clause, value in [
        ('i."timestamp" >= ?', since),
        ('i."timestamp" < ?', until),
        ("i.user_id = ?", user_id),
        ("i.cohort = ?", cohort),
        ("i.model = ?", model),
        ("list_contains(i.tags, ?)", tag),
    ]:
        if value is not None:
            where.append(clause)
            params.append(value)
    if has_feedback is not None:
        exists = "EXISTS (SELECT 1 FROM feedback f WHERE f.interaction_id = i.id)"
        where.append(exists if has_feedback else f"NOT {exists}")
    if cursor:
        ts, last_id = _decode_cursor(cursor)
        where.append('(i."timestamp", i.id) < (?, ?)')
        params += [ts, last_id]
    sql = f'SELECT * FROM interactions i WHERE {" AND ".join(where)} ORDER BY i."timestamp" DESC, i.id DESC LIMIT ?'
    rows = fetch_all(cur, sql, [*params, limit + 1], json=_JSON_COLUMNS)
    page = rows[:limit]
    feedback = _feedback_for(cur, [r["id"] for r in page])
    items = [StoredInteraction(**r, feedback=feedback.get(r["id"], [])) for r in page]
    next_cursor = _encode_cursor(page[-1]["timestamp"], page[-1]["id"]) if len(rows) > limit else None
    return InteractionPage(interactions=items, next_cursor=next_cursor)


def _feedback_for(cur: duckdb.DuckDBPyConnection, ids: list[str]) -> dict[str, list[StoredFeedback]]:
    if not ids:
        return {}
    sql = 'SELECT * FROM feedback WHERE list_contains(?, interaction_id) ORDER BY "timestamp", id'
    out: dict[str, list[StoredFeedback]] = {}
    for fb in fetch_all(cur, sql, [ids], json=_JSON_COLUMNS):
        fb.pop("score", None)
        out.setdefault(fb["interaction_id"], []).append(StoredFeedback.model_construct(**fb))
    return out


def get_interaction(cur: duckdb.DuckDBPyConnection, interaction_id: str) -> StoredInteraction:
    """Return one interaction with every feedback event that names it."""
    data = fetch_one(cur, "SELECT * FROM interactions WHERE id = ?", [interaction_id], json=_JSON_COLUMNS)
    if data is None:
        raise NotFound(f"no interaction {interaction_id!r}", field="interaction_id")
    return StoredInteraction(**data, feedback=_feedback_for(cur, [interaction_id]).get(interaction_id, []))
