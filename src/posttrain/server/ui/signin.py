"""GET/POST /ui/login, POST /ui/logout, GET /ui/static/{name}: signing in and the pages' files."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from posttrain.errors import Forbidden, NotFound, Unauthorized
from posttrain.server.ui import session as sessions
from posttrain.server.ui.nav import home_for
from posttrain.server.ui.pages import field, page, read_form
from posttrain.server.ui.render import render, static_file

router = APIRouter()

HOME = "/ui"


def _safe_next(target: str) -> str:
    """Return ``target`` if it is a page of this UI, else the home page (no open redirect)."""
    if target == HOME:
        return target
    if target.startswith("/ui/") and not target.startswith("//") and "\\" not in target and len(target) <= 300:
        return target
    return HOME


def _login_form(request: Request, *, status: int = 200, error: str | None = None, target: str = HOME) -> Response:
    token = sessions.new_login_token()
    response = render("ui/login.html", status, csrf=token, next=_safe_next(target), error=error)
    sessions.set_cookie(request, response, sessions.LOGIN_COOKIE, token, path="/ui/login")
    return response


@router.get("")
async def home(request: Request) -> Response:
    """Send the browser to the first page its role may open (the overview, or annotation); else to sign in."""
    token = request.cookies.get(sessions.COOKIE, "")
    live = sessions.store(request).get(token) if 0 < len(token) <= 100 else None
    return RedirectResponse(home_for(live) if live is not None else "/ui/login", status_code=303)


@router.get("/login")
async def login_form(request: Request, target: Annotated[str, Query(alias="next")] = HOME) -> Response:
    """Show the sign-in form."""
    return _login_form(request, target=target[:300])


@router.post("/login")
@page
async def login(request: Request) -> Response:
    """Check the key the way the API does and start a session; the key is never shown back."""
    form = await read_form(request)
    expected = request.cookies.get(sessions.LOGIN_COOKIE, "")
    sent = field(form, "csrf", 100)
    if not expected or not sent or not secrets.compare_digest(sent.encode(), expected.encode()):
        raise Forbidden("the sign-in form expired; reload the page and sign in again")
    target = field(form, "next", 300, default=HOME)
    key = field(form, "key", 200).strip()
    if not key:
        return _login_form(request, status=400, error="Paste your API key.", target=target)
    try:
        token, _ = sessions.sign_in(request, key)
    except Unauthorized:
        error = "That key was not accepted: it is unknown or revoked. Check it, or ask an admin for a new one."
        return _login_form(request, status=401, error=error, target=target)
    response = RedirectResponse(_safe_next(target), status_code=303)
    sessions.set_cookie(request, response, sessions.COOKIE, token)
    response.delete_cookie(sessions.LOGIN_COOKIE, path="/ui/login")
    return response


@router.post("/logout")
@page
async def logout(request: Request) -> Response:
    """End the session (its token is deleted on the server) and show the sign-in form."""
    form = await read_form(request)
    token = request.cookies.get(sessions.COOKIE, "")
    live = sessions.store(request).get(token) if 0 < len(token) <= 100 else None
    if live is not None:
        sessions.check_csrf(request, live.csrf, field(form, "csrf", 100))
        sessions.sign_out(request)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(sessions.COOKIE, path="/ui")
    return response


@router.get("/static/{name}")
@page
async def static(request: Request, name: str) -> Response:
    """Serve a script or style sheet shipped in the package."""
    found = static_file(name[:100])
    if found is None:
        raise NotFound(f"no static file {name[:100]!r}")
    return found
