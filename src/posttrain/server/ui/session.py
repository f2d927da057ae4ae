"""Sign-in sessions of the web pages: server-side tokens, their cookie, CSRF tokens, the role check.

A session is a random 256-bit token in an HttpOnly, SameSite=Strict cookie; the server keeps only
its SHA-256 (in memory, on ``app.state``) with who signed in, the CSRF token of its forms and when
it was last used. The API key itself is never kept, echoed or rendered: the session holds the key's
hash and each request re-checks that the key is still live (one indexed lookup), so revoking a
key ends its sessions at once. The role check is the API's own, ``keys.authorize``.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from posttrain import keys
from posttrain.clock import utc_now
from posttrain.errors import Forbidden, Unauthorized
from posttrain.records import Role

if TYPE_CHECKING:
    from posttrain.annotate import Assignment

COOKIE = "pt_session"
LOGIN_COOKIE = "pt_login"  # the CSRF token of the sign-in form (no session exists yet)
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
IDLE = timedelta(hours=12)
MAX_SESSIONS = 10_000
MAX_HELD = 8  # assignments remembered per session (to redraw an item with an inline error)


class LoginRequired(Unauthorized):
    """No live session: a page redirects to the sign-in form, a script request gets 401."""


@dataclass
class Session:
    """One signed-in browser: who it is, its CSRF token, and the items it was shown."""

    key_id: str
    key_hash: str
    role: Role
    csrf: str
    last_seen: datetime
    held: dict[str, Assignment] = field(default_factory=dict)
    name: str | None = None  # the key's name (``keys create --name``), shown instead of its id

    def hold(self, assignment: Assignment) -> None:
        """Remember an assignment shown to this session (the newest ``MAX_HELD``)."""
        self.held[assignment.lease_id] = assignment
        while len(self.held) > MAX_HELD:
            self.held.pop(next(iter(self.held)))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    """Sessions by the hash of their token, forgotten after ``idle`` without a request."""

    def __init__(self, idle: timedelta = IDLE, limit: int = MAX_SESSIONS) -> None:
        self._idle, self._limit = idle, limit
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def create(self, caller: keys.Caller, key_hash: str, *, name: str | None = None) -> tuple[str, Session]:
        """Start a session for ``caller``; return its token (for the cookie only) and the session."""
        token = secrets.token_urlsafe(32)
        session = Session(caller.key_id, key_hash, caller.role, secrets.token_urlsafe(32), utc_now(), name=name)
        with self._lock:
            self._prune()
            self._sessions[_digest(token)] = session
        return token, session

    def get(self, token: str) -> Session | None:
        """Return the live session of ``token`` (touching it), or None."""
        now = utc_now()
        with self._lock:
            session = self._sessions.get(_digest(token))
            if session is None:
                return None
            if now - session.last_seen > self._idle:
                del self._sessions[_digest(token)]
                return None
            session.last_seen = now
            return session

    def delete(self, token: str) -> None:
        """End the session of ``token`` (signing out)."""
        with self._lock:
            self._sessions.pop(_digest(token), None)

    def _prune(self) -> None:
        """Drop idle sessions; past the limit, the least recently used too."""
        now = utc_now()
        self._sessions = {k: s for k, s in self._sessions.items() if now - s.last_seen <= self._idle}
        while len(self._sessions) >= self._limit:
            oldest = min(self._sessions, key=lambda k: self._sessions[k].last_seen)
            del self._sessions[oldest]


def store(request: Request) -> SessionStore:
    """Return the app's session store, created on first use."""
    state = request.app.state
    if getattr(state, "ui_sessions", None) is None:
        state.ui_sessions = SessionStore()
    return state.ui_sessions  # type: ignore[no-any-return]


def key_is_live(request: Request, session: Session) -> bool:
    """Say whether the key behind ``session`` is still live (not revoked, not deleted)."""
    if session.key_id == keys.CONTROL_KEY_ID:
        return True  # the server's control token lives as long as the server
    row = (
        request.app.state.project.cursor()
        .execute("SELECT revoked_at FROM api_keys WHERE key_hash = ?", [session.key_hash])
        .fetchone()
    )
    return row is not None and row[0] is None


def current(request: Request, action: str) -> Session:
    """Return the request's live session whose role may do ``action``; raise LoginRequired or Forbidden."""
    token = request.cookies.get(COOKIE, "")
    sessions = store(request)
    session = sessions.get(token) if 0 < len(token) <= 100 else None
    if session is None:
        raise LoginRequired("sign in with your API key")
    if not key_is_live(request, session):
        sessions.delete(token)
        raise LoginRequired("your API key was revoked; sign in with a live key")
    request.state.ui_session = session  # a refusal page still offers to sign out
    keys.authorize(session.role, action)
    return session


def sign_in(request: Request, key: str) -> tuple[str, Session]:
    """Check ``key`` the way the API does and start a session; raise Unauthorized for a dead key."""
    caller = request.app.state.keys.caller(key)
    found = request.app.state.project.cursor().execute("SELECT name FROM api_keys WHERE id = ?", [caller.key_id])
    row = found.fetchone()
    return store(request).create(caller, keys.hash_key(key), name=row[0] if row else None)


def sign_out(request: Request) -> None:
    """End the request's session, if any."""
    token = request.cookies.get(COOKIE, "")
    if token:
        store(request).delete(token)


def check_csrf(request: Request, expected: str, sent: str | None) -> None:
    """Raise Forbidden unless the form field or ``X-CSRF-Token`` header matches ``expected``."""
    given = sent or request.headers.get(CSRF_HEADER, "")
    if not given or not expected or not secrets.compare_digest(given.encode(), expected.encode()):
        raise Forbidden("the form's security token is missing or stale; reload the page and try again")


def set_cookie(request: Request, response: Response, name: str, value: str, *, path: str = "/ui") -> None:
    """Set an HttpOnly, SameSite=Strict cookie (Secure when the request came over https)."""
    secure = request.url.scheme == "https"
    response.set_cookie(name, value, path=path, httponly=True, samesite="strict", secure=secure)


def new_login_token() -> str:
    """Return a fresh CSRF token for the sign-in form."""
    return secrets.token_urlsafe(32)
