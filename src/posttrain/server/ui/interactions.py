"""The console's interactions: GET /ui/interactions (search, filter, cursor-paged) and GET /ui/interactions/{id}.

The list reads ``warehouse.browse.search`` (one keyset page, text clipped in SQL, feedback counted for
the rows shown); an admin may narrow it with a SQL ``where`` over ``i`` (the interactions), which
passes the same walls as users' SQL. An interaction's page shows the conversation part by part, its
feedback and labels, the serving decision, and what it fed: dataset versions and their models.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from posttrain.errors import Forbidden, InvalidInput, NotFound
from posttrain.server.ui.console import call, decode_cursor, encode_cursor, int_param, render_page, text_param, view
from posttrain.server.ui.pages import page
from posttrain.warehouse import browse, queries

router = APIRouter(prefix="/interactions")

ACTION = "interactions.read"
PAGE = 50
MAX_ID = 200
MAX_WHERE = 2000
ALIASES = {"pairwise": "choice"}  # what the gateway's side-by-side calls a choice
TEXT_FILTERS = ("cohort", "model", "user", "tag")


def _when(value: str | None, name: str) -> datetime | None:
    """Return the query parameter ``name`` as a naive UTC time (an ISO date or time); raise InvalidInput."""
    text = text_param(value, name, 40)
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{name}: an ISO date or time, as in 2026-01-31 or 2026-01-31T09:30Z", field=name) from None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _after(cursor: str | None) -> tuple[datetime, str] | None:
    """Return the (timestamp, id) key a cursor made by this page holds; raise InvalidInput naming ``cursor``."""
    values = decode_cursor(cursor)
    if values is None:
        return None
    try:
        moment, last = datetime.fromisoformat(str(values["t"])), values["id"]
    except (KeyError, ValueError):
        moment, last = None, None
    if moment is None or not isinstance(last, str) or len(last) > MAX_ID:
        raise InvalidInput("cursor: not a cursor this page made; follow the page's own links", field="cursor")
    return moment, last


def _link(params: dict[str, str], **changes: str | None) -> str:
    """Return the list's URL with ``params`` (empty ones left out), ``changes`` applied."""
    merged = {k: v for k, v in {**params, **changes}.items() if v}
    return "/ui/interactions" + (f"?{urlencode(merged)}" if merged else "")


@router.get("")
@page
async def list_page(
    request: Request,
    since: str | None = None,
    until: str | None = None,
    cohort: str | None = None,
    model: str | None = None,
    user: str | None = None,
    tag: str | None = None,
    feedback: str | None = None,
    q: str | None = None,
    where: str | None = None,
    cursor: str | None = None,
    limit: str | None = None,
) -> Response:
    """List interactions newest first, filtered and searched, 50 a page (``limit`` up to 200)."""
    session = view(request, ACTION)
    texts = {
        name: text_param(value, name) for name, value in zip(TEXT_FILTERS, (cohort, model, user, tag), strict=True)
    }
    kind = text_param(feedback, "feedback", 20)
    kind = ALIASES.get(kind, kind)
    if kind and kind not in browse.FEEDBACK_KINDS:
        raise InvalidInput(f"feedback: one of {', '.join(browse.FEEDBACK_KINDS)}", field="feedback")
    search = text_param(q, "q")
    condition = text_param(where, "where", MAX_WHERE)
    if condition and session.role != "admin":
        raise Forbidden("where: a SQL condition is for admins; use the other filters")
    shown = int_param(limit, "limit", default=PAGE, high=browse.MAX_LIMIT)
    filters = browse.Filters(
        since=_when(since, "since"),
        until=_when(until, "until"),
        feedback=kind or None,
        q=search or None,
        where=browse.checked_where(condition),
        **{k: v or None for k, v in texts.items()},
    )
    after = _after(cursor)
    found = await call(browse.search, request.app.state.project, filters, after=after, limit=shown)
    params = {
        "since": text_param(since, "since", 40),
        "until": text_param(until, "until", 40),
        **texts,
        "feedback": kind,
        "q": search,
        "where": condition,
        "limit": str(shown) if shown != PAGE else "",
    }
    next_url = None
    if found.next_key is not None:
        moment, last = found.next_key
        next_url = _link(params, cursor=encode_cursor({"t": moment.isoformat(), "id": last}))
    return render_page(
        request, session, "ui/console/interactions.html", active="interactions", title="Interactions",
        rows=found.rows, params=params, kinds=browse.FEEDBACK_KINDS, limit=shown, max_limit=browse.MAX_LIMIT,
        next_url=next_url, first_url=_link(params) if after else None, paged=after is not None,
    )  # fmt: skip


def _part(part: Any) -> dict[str, Any]:
    """Return one content part as shown: text as text, anything else as a labelled placeholder."""
    if isinstance(part, dict) and part.get("type") == "text":
        return {"text": str(part.get("text", ""))}
    kind = str(part.get("type", "part"))[:40] if isinstance(part, dict) else type(part).__name__
    detail = ""
    body = part.get(kind) if isinstance(part, dict) else None
    url = body.get("url") if isinstance(body, dict) else None
    if isinstance(url, str):
        detail = f"{len(url):,} characters of data" if url.startswith("data:") else url[:200]
    elif isinstance(body, dict) and isinstance(body.get("format"), str):
        detail = body["format"][:40]
    return {"placeholder": kind, "detail": detail}


def _message(message: Any) -> dict[str, Any]:
    """Return a chat message as the page draws it: role, name, parts, tool calls as JSON."""
    if not isinstance(message, dict):
        return {"role": "unknown", "parts": [{"text": json.dumps(message, ensure_ascii=False)}]}
    content = message.get("content")
    if isinstance(content, list):
        parts = [_part(p) for p in content]
    elif content is None:
        parts = []
    else:
        parts = [{"text": str(content)}]
    kept = {"role", "content", "name", "tool_calls", "tool_call_id"}
    extra = {k: v for k, v in message.items() if k not in kept}
    return {
        "role": str(message.get("role", "unknown"))[:20],
        "name": message.get("name"),
        "tool_call_id": message.get("tool_call_id"),
        "parts": parts,
        "tool_calls": _json(message["tool_calls"]) if message.get("tool_calls") else None,
        "extra": _json(extra) if extra else None,
    }


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _detail(project: Any, interaction_id: str) -> dict[str, Any]:
    """Return everything an interaction's page shows (blocking: run in a worker thread)."""
    if not interaction_id or len(interaction_id) > MAX_ID:
        raise NotFound("there is no such interaction; pick one from the list")
    try:
        found = queries.get_interaction(project.cursor(), interaction_id)
    except NotFound:
        raise NotFound(f"there is no interaction {interaction_id!r}; pick one from the list") from None
    trail = browse.trail(project, found.id, [f.id for f in found.feedback])
    metadata = dict(found.metadata)
    answer = metadata.pop("response_message", None)
    return {
        "item": found,
        "messages": [_message(m) for m in found.messages],
        "answer": _message(answer) if isinstance(answer, dict) else None,
        "metadata": _json(metadata) if metadata else None,
        "route": metadata.get("route"),
        "backend": metadata.get("backend"),
        "consent": _json(found.consent) if found.consent else None,
        "media": [m.model_dump() for m in found.media],
        "feedback": [
            {
                "kind": f.kind,
                "value": None if f.value is None else json.dumps(f.value, ensure_ascii=False),
                "text": f.text,
                "source": f.source,
                "author": f.author,
                "at": f.timestamp,
            }
            for f in found.feedback
        ],  # fmt: skip
        "labels": [
            {
                "queue": label.queue,
                "source": label.source,
                "annotator": label.annotator,
                "value": json.dumps(label.value, ensure_ascii=False, sort_keys=True),
                "confidence": label.confidence,
                "at": label.created_at,
            }
            for label in trail.labels
        ],  # fmt: skip
        "datasets": trail.datasets,
    }


@router.get("/{interaction_id}")
@page
async def detail_page(request: Request, interaction_id: str) -> Response:
    """Show one interaction: its conversation, feedback and labels, serving decision, datasets and models."""
    session = view(request, ACTION)
    context = await call(_detail, request.app.state.project, interaction_id)
    return render_page(
        request, session, "ui/console/interaction.html", active="interactions", title=f"Interaction {interaction_id}",
        **context,
    )  # fmt: skip
