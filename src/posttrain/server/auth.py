"""Bearer-key authentication for every route but /health."""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request

from posttrain import keys
from posttrain.errors import Unauthorized
from posttrain.project import Project
from posttrain.records import Role


class KeyCache:
    """Keys seen before (who holds each), so a request costs a dict lookup, not a query."""

    def __init__(self, project: Project, *, control_token: str | None = None) -> None:
        self._project = project
        self._lock = threading.Lock()
        self._control = keys.hash_key(control_token) if control_token else None
        self._callers: dict[str, keys.Caller] = self._kept()

    def _kept(self) -> dict[str, keys.Caller]:
        if self._control is None:
            return {}
        return {self._control: keys.Caller(key_id=keys.CONTROL_KEY_ID, role="admin")}

    def caller(self, key: str) -> keys.Caller:
        """Return who holds ``key``; raise Unauthorized if unknown or revoked."""
        digest = keys.hash_key(key)
        caller = self._callers.get(digest)
        if caller is None:
            caller = keys.lookup_key(self._project, key)
            with self._lock:
                self._callers[digest] = caller
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
        return caller.role  # type: ignore[no-any-return]

    return dependency
