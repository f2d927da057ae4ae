"""Bearer-key authentication for every route but /health."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute

from posttrain import keys
from posttrain.errors import InvalidInput, Unauthorized
from posttrain.project import Project
from posttrain.records import Role

KEY_CACHE_SECONDS = 5.0  # how long a revocation made elsewhere may take to reach this server


class KeyCache:
    """Keys seen before (who holds each), so a request costs a dict lookup, not a query.

    An entry is trusted for ``KEY_CACHE_SECONDS``, then looked up again: a key revoked through
    another server of a PostgreSQL warehouse stops working here within that time (this server's
    own revocations drop the cache at once).
    """

    def __init__(self, project: Project, *, control_token: str | None = None) -> None:
        self._project = project
        self._lock = threading.Lock()
        self._control = keys.hash_key(control_token) if control_token else None
        self._callers: dict[str, tuple[keys.Caller, float]] = self._kept()

    def _kept(self) -> dict[str, tuple[keys.Caller, float]]:
        if self._control is None:
            return {}
        return {self._control: (keys.Caller(key_id=keys.CONTROL_KEY_ID, role="admin"), math.inf)}

    def caller(self, key: str) -> keys.Caller:
        """Return who holds ``key``; raise Unauthorized if unknown or revoked."""
        digest = keys.hash_key(key)
        cached = self._callers.get(digest)
        now = time.monotonic()
        if cached is not None and now - cached[1] < KEY_CACHE_SECONDS:
            return cached[0]
        caller = keys.lookup_key(self._project, key)
        with self._lock:
            if digest != self._control:
                self._callers[digest] = (caller, now)
        return caller

    def role(self, key: str) -> Role:
        """Return the role of ``key``; raise Unauthorized if unknown or revoked."""
        return self.caller(key).role

    def forget_all(self) -> None:
        """Drop cached keys (after a revocation), keeping the control token."""
        with self._lock:
            self._callers = self._kept()


def require(action: str) -> Callable[[Request], Coroutine[Any, Any, Role]]:
    """Return a dependency that admits a request whose key's role may do ``action``.

    It returns the role and records who sent the request as ``request.state.caller`` (a ``keys.Caller``).
    """

    async def dependency(request: Request) -> Role:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("missing API key; send 'Authorization: Bearer <key>'", field="Authorization")
        caller = request.app.state.keys.caller(key.strip())
        keys.authorize(caller.role, action)
        request.state.caller = caller
        _reject_unknown_query(request)  # after the key check: no route's parameters shown to a stranger
        return caller.role  # type: ignore[no-any-return]

    dependency.posttrain_action = action  # type: ignore[attr-defined]
    return dependency


async def check_access(request: Request) -> None:
    """Run the key checks of the request's route; for errors found before FastAPI ran them (a body not JSON)."""
    route = request.scope.get("route")
    todo = [route.dependant] if isinstance(route, APIRoute) else []
    while todo:
        dependant = todo.pop()
        if getattr(dependant.call, "posttrain_action", None) is not None:
            await dependant.call(request)  # type: ignore[misc]
        todo.extend(dependant.dependencies)


def _query_names(route: APIRoute) -> frozenset[str]:
    names: set[str] = set()
    todo = [route.dependant]
    while todo:
        dependant = todo.pop()
        names.update(param.alias for param in dependant.query_params)
        todo.extend(dependant.dependencies)
    return frozenset(names)


def _reject_unknown_query(request: Request) -> None:
    """Refuse query parameters a route does not take, so a misspelt filter is not ignored."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = _query_names(route)
    for name in request.query_params:
        if name not in known:
            takes = ", ".join(sorted(known)) or "none"
            raise InvalidInput(f"{name}: unknown query parameter; this route takes: {takes}", field=name)
