"""The annotator's workspace: GET /ui/annotate (the open queues), GET /ui/annotate/{queue} (label
one item after another), POST .../label, .../skip and .../next (each answers the next item).

Every route calls posttrain.annotate's own functions (the ones the API calls); the page's script
(static/annotate.js) posts the same forms with ``X-Fragment: 1`` and swaps in the item fragment,
so the next item arrives without a reload. Without the script the forms still work, page by page.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from posttrain import annotate, keys
from posttrain.annotate.tasks import MAX_COMMENT, MAX_TEXT
from posttrain.annotate.work import lease_expired
from posttrain.clock import utc_now
from posttrain.errors import Conflict, Forbidden, InvalidInput, NotFound
from posttrain.names import name_problem
from posttrain.server.ui import session as sessions
from posttrain.server.ui.pages import field, page, read_form
from posttrain.server.ui.render import render, wants_fragment

router = APIRouter(prefix="/annotate")

LABEL = "annotate.label"
READ = "annotate.read"
EXPIRED = "The lease on the previous item expired, so it went back to the pool. Here is the next one."
MAX_CATEGORIES = 50


def _session(request: Request, action: str) -> sessions.Session:
    return sessions.current(request, action)


def _checked_form_session(request: Request, form: FormData) -> sessions.Session:
    session = _session(request, LABEL)
    sessions.check_csrf(request, session.csrf, field(form, sessions.CSRF_FIELD, 100))
    return session


async def _queue(request: Request, name: str) -> annotate.Queue:
    if len(name) > 128 or name_problem(name) is not None:
        raise NotFound(f"there is no queue {name[:64]!r}; pick one from the list of queues")
    try:
        return await run_in_threadpool(annotate.get_queue, request.app.state.project, name)
    except NotFound:
        raise NotFound(f"there is no queue {name!r}; pick one from the list of queues") from None


def _message_text(content: Any) -> str:
    """Return the text of a chat message's content (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def _item_context(session: sessions.Session, queue: annotate.Queue, assignment: annotate.Assignment | None) -> dict:
    """Return what the item fragment draws for ``assignment`` (None: the queue is done)."""
    context: dict[str, Any] = {"session": session, "queue": queue, "assignment": assignment}
    if assignment is not None:
        session.hold(assignment)
        prompt = [
            {"role": str(m.get("role", "user"))[:20], "text": _message_text(m.get("content"))}
            for m in assignment.item.prompt
        ]
        context["prompt"] = prompt
        context["lease_seconds"] = round(max(0.0, (assignment.expires_at - utc_now()).total_seconds()), 1)
    return context


async def _next(request: Request, session: sessions.Session, queue: annotate.Queue) -> dict:
    project = request.app.state.project
    assignment = await run_in_threadpool(annotate.next_item, project, queue.name, session.key_id)
    return _item_context(session, queue, assignment)


def _answer(request: Request, queue: annotate.Queue, context: dict, status: int = 200) -> Response:
    """Answer the item fragment to the page's script, or the whole page to a plain form post."""
    if wants_fragment(request):
        return render("ui/item.html", status, **context)
    return render("ui/workspace.html", status, **context)


@router.get("")
@page
async def queues(request: Request) -> Response:
    """List the open queues with their task and progress."""
    session = _session(request, READ)
    listed = await run_in_threadpool(annotate.list_queues, request.app.state.project)
    can_label = session.role in keys.PERMISSIONS[LABEL]
    shown = [q for q in listed if q.state == "open"]
    return render("ui/queues.html", session=session, queues=shown, can_label=can_label)


@router.get("/{queue}")
@page
async def workspace(request: Request, queue: str) -> Response:
    """Show a queue's guidelines and its next item for this annotator."""
    session = _session(request, LABEL)
    found = await _queue(request, queue)
    return render("ui/workspace.html", **await _next(request, session, found))


@router.post("/{queue}/next")
@page
async def next_item(request: Request, queue: str) -> Response:
    """Answer the next item (after a lease expired on the page)."""
    form = await read_form(request)
    session = _checked_form_session(request, form)
    found = await _queue(request, queue)
    context = await _next(request, session, found)
    if field(form, "expired", 10) == "1":
        context["notice"] = EXPIRED
    return _answer(request, found, context)


def _label_value(queue: annotate.Queue, form: FormData) -> dict[str, Any]:
    """Return the label the form holds, in the library's wire form (the library checks it)."""
    task = queue.task
    value: dict[str, Any]
    if task == "rating":
        raw = field(form, "rating", 20).strip()
        value = {"rating": int(raw) if raw.lstrip("-").isdigit() else raw or None}
    elif task == "accept":
        raw = field(form, "accept", 10)
        value = {"accept": {"yes": True, "no": False}.get(raw, raw or None)}
    elif task in ("rewrite", "comment"):
        value = {"text": field(form, "text", 2 * MAX_TEXT).replace("\r\n", "\n")}
    elif task == "pairwise":
        value = {"choice": field(form, "choice", 10)}
    else:
        picked = form.getlist("categories")
        if len(picked) > MAX_CATEGORIES or any(not isinstance(c, str) or len(c) > 64 for c in picked):
            raise InvalidInput("label.categories: pick from the listed categories", field="label.categories")
        value = {"categories": list(picked)}
    note = field(form, "comment", MAX_COMMENT).strip() if task != "comment" else ""
    if note:
        value["comment"] = note
    return value


def _seconds(form: FormData) -> float | None:
    raw = field(form, "seconds", 20).strip()
    try:
        seconds = float(raw)
    except ValueError:
        return None
    return seconds if 0 < seconds <= 86_400 else None


async def _expired(request: Request, session: sessions.Session, lease_id: str) -> bool:
    project = request.app.state.project
    return await run_in_threadpool(lease_expired, project, lease_id, session.key_id)  # type: ignore[no-any-return]


async def _after(
    request: Request, session: sessions.Session, found: annotate.Queue, lease_id: str, *, expired: bool
) -> Response:
    """Answer what comes after a label or a skip: the next item, noting a lease that had expired."""
    if expired:
        return _answer(request, found, {**await _next(request, session, found), "notice": EXPIRED})
    session.held.pop(lease_id, None)
    if not wants_fragment(request):
        return RedirectResponse(f"/ui/annotate/{found.name}", status_code=303)
    return _answer(request, found, await _next(request, session, found))


@router.post("/{queue}/label")
@page
async def label(request: Request, queue: str) -> Response:
    """Store the label of the leased item and answer the next item; a wrong label is shown inline."""
    form = await read_form(request)
    session = _checked_form_session(request, form)
    found = await _queue(request, queue)
    lease_id = field(form, "lease_id", 64)
    project = request.app.state.project
    try:
        value = _label_value(found, form)
        await run_in_threadpool(annotate.submit, project, lease_id, session.key_id, value, seconds=_seconds(form))
    except InvalidInput as exc:
        held = session.held.get(lease_id)
        if held is None or await _expired(request, session, lease_id):
            raise
        context = _item_context(session, found, held)
        draft = form.get("text")
        context.update(error=exc.message, error_field=exc.field, draft=draft, note=form.get("comment"))
        return _answer(request, found, context, status=400)
    except (Conflict, NotFound, Forbidden):
        if not await _expired(request, session, lease_id):
            raise
        return await _after(request, session, found, lease_id, expired=True)
    return await _after(request, session, found, lease_id, expired=False)


@router.post("/{queue}/skip")
@page
async def skip(request: Request, queue: str) -> Response:
    """Hand the leased item back (it goes to the next annotator) and answer the next item."""
    form = await read_form(request)
    session = _checked_form_session(request, form)
    found = await _queue(request, queue)
    lease_id = field(form, "lease_id", 64)
    try:
        await run_in_threadpool(annotate.skip, request.app.state.project, lease_id, session.key_id)
    except (Conflict, NotFound, Forbidden):
        if not await _expired(request, session, lease_id):
            raise
        return await _after(request, session, found, lease_id, expired=True)
    return await _after(request, session, found, lease_id, expired=False)
