"""What the console's pages share: the top navigation, the role check, rendering, forms, charts, paging.

Every console page is a route in its own module under ``posttrain.server.ui`` that

1. calls ``view(request, ACTION)`` first (the session, or a redirect to sign-in / a 403 page; the
   role check is ``keys.authorize``, as in the API),
2. reads its data with posttrain's library functions in a worker thread (``await call(fn, ...)``),
   never with SQL of its own where the library has a function, and
3. answers ``render_page(request, session, "ui/console/x.html", active="x", title=..., ...)``.

A form that changes something (``admin_form``) checks the session's role and its CSRF token. Page
errors (``PosttrainError``) become pages through ``pages.page``; query parameters are bounded with
``text_param`` / ``int_param`` (a 400 page naming the parameter). Charts come from
``posttrain.plots`` and are embedded with ``chart(svg, alt)`` as ``<img src="data:...">`` (the
CSP forbids inline styles; an image is its own document).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse

from posttrain.errors import InvalidInput
from posttrain.server.ui import session as sessions
from posttrain.server.ui.nav import READ
from posttrain.server.ui.pages import field, read_form
from posttrain.server.ui.render import render

T = TypeVar("T")


def view(request: Request, action: str = READ) -> sessions.Session:
    """Return the live session allowed ``action``; raise LoginRequired (redirect) or Forbidden (403 page)."""
    return sessions.current(request, action)


async def admin_form(request: Request, action: str) -> tuple[sessions.Session, FormData]:
    """Read a posted form of a session allowed ``action``, its CSRF token checked; return both."""
    session = sessions.current(request, action)
    form = await read_form(request)
    sessions.check_csrf(request, session.csrf, field(form, sessions.CSRF_FIELD, 100))
    return session, form


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run the blocking library function ``fn`` in a worker thread (DuckDB calls block)."""
    return await run_in_threadpool(fn, *args, **kwargs)


def render_page(
    request: Request, session: sessions.Session, template: str, /, *, active: str, status: int = 200, **context: Any
) -> HTMLResponse:
    """Render a console page: the navigation (``active`` highlighted), the session, ``context``."""
    return render(template, status, session=session, active=active, path=request.url.path, **context)


def text_param(value: str | None, name: str, limit: int = 200) -> str:
    """Return the query parameter ``name`` stripped, at most ``limit`` characters; raise InvalidInput."""
    text = (value or "").strip()
    if len(text) > limit:
        raise InvalidInput(f"{name}: at most {limit} characters", field=name)
    if any(ord(c) < 32 for c in text):
        raise InvalidInput(f"{name}: no control characters", field=name)
    return text


def int_param(value: str | None, name: str, *, default: int, low: int = 1, high: int = 1000) -> int:
    """Return the query parameter ``name`` as an int in [low, high] (``default`` if empty); raise InvalidInput."""
    text = (value or "").strip()
    if not text:
        return default
    try:
        number = int(text)
    except ValueError:
        raise InvalidInput(f"{name}: a whole number, got {text[:20]!r}", field=name) from None
    if not low <= number <= high:
        raise InvalidInput(f"{name}: between {low} and {high}, got {number}", field=name)
    return number


def encode_cursor(values: dict[str, Any]) -> str:
    """Return an opaque cursor (url-safe base64 of JSON) for the next page."""
    raw = json.dumps(values, separators=(",", ":"), default=str).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str | None, name: str = "cursor") -> dict[str, Any] | None:
    """Return the values of a cursor made by ``encode_cursor`` (None if empty); raise InvalidInput if not one."""
    text = (cursor or "").strip()
    if not text:
        return None
    if len(text) > 500:
        raise InvalidInput(f"{name}: at most 500 characters", field=name)
    try:
        values = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(f"{name}: not a cursor this page made; follow the page's own links", field=name) from None
    if not isinstance(values, dict):
        raise InvalidInput(f"{name}: not a cursor this page made; follow the page's own links", field=name)
    return values
