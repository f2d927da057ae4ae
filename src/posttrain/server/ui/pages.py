"""What every page route shares: errors drawn as pages (never a 5xx), bounded form reading."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from posttrain.errors import InvalidInput, NotFound, PosttrainError
from posttrain.server.ui.render import render, wants_fragment
from posttrain.server.ui.session import COOKIE, LoginRequired

MAX_FIELDS = 40
MAX_FIELD_BYTES = 100_000  # a rewrite is at most 20,000 characters (up to 4 bytes each)

TITLES = {400: "That did not work", 401: "Sign in", 403: "Not allowed", 404: "Not found", 409: "Not now"}

Handler = Callable[..., Awaitable[Response]]


def page(handler: Handler) -> Handler:
    """Wrap a page route: a missing session redirects to sign-in, posttrain's errors become pages."""

    @functools.wraps(handler)
    async def wrapped(request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(request, *args, **kwargs)
        except LoginRequired as exc:
            if request.method == "GET" and not wants_fragment(request):
                return RedirectResponse(f"/ui/login?next={quote(request.url.path)}", status_code=303)
            response = error_page(request, exc, None)
            response.delete_cookie(COOKIE, path="/ui")
            return response
        except PosttrainError as exc:
            return error_page(request, exc, getattr(request.state, "ui_session", None))

    return wrapped


def error_page(request: Request, exc: PosttrainError, session: Any) -> Response:
    """Draw ``exc`` as a page (or a fragment for the page's script) with its status."""
    status = exc.status if 400 <= exc.status < 500 else 400
    title = TITLES.get(status, "That did not work")
    if wants_fragment(request):
        return render("ui/fragment_error.html", status, status=status, title=title, message=exc.message)
    return render("ui/error.html", status, status=status, title=title, message=exc.message, session=session)


def not_found(what: str) -> NotFound:
    """Return the NotFound of a page that does not exist."""
    return NotFound(f"there is no {what}; pick one from the list of queues")


async def read_form(request: Request) -> FormData:
    """Read a posted form within bounds (no files); raise InvalidInput for one that is not."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not kind and request.headers.get("content-length", "0") == "0":
        return FormData()  # an empty post: its checks (the CSRF token first) refuse it
    if kind not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise InvalidInput("send the page's form (application/x-www-form-urlencoded)", field="body")
    try:
        return await request.form(max_files=0, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD_BYTES)
    except HTTPException as exc:  # starlette's answer to a form over its limits
        raise InvalidInput(f"the form is too large or malformed: {exc.detail}", field="body") from None


def field(form: FormData, name: str, limit: int, *, default: str = "") -> str:
    """Return the text field ``name`` (``default`` if absent); raise InvalidInput when over ``limit``."""
    value = form.get(name, default)
    if not isinstance(value, str):
        raise InvalidInput(f"{name}: send text, not a file", field=name)
    if len(value) > limit:
        raise InvalidInput(f"{name}: at most {limit} characters", field=name)
    return value
