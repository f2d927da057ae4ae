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
    """Roles of keys seen before, so a request costs a dict lookup, not a query."""

    def __init__(self, project: Project, *, control_token: str | None = None) -> None:
        self._project = project
        self._roles: dict[str, Role] = {}
        self._lock = threading.Lock()
        if control_token:
            self._roles[keys.hash_key(control_token)] = "admin"
        self._control = keys.hash_key(control_token) if control_token else None

    def role(self, key: str) -> Role:
        """Return the role of ``key``; raise Unauthorized if unknown or revoked."""
        digest = keys.hash_key(key)
        role = self._roles.get(digest)
        if role is None:
            role = keys.lookup_role(self._project, key)
            with self._lock:
                self._roles[digest] = role
        return role

    def forget_all(self) -> None:
        """Drop cached roles (after a revocation), keeping the control token."""
        with self._lock:
            kept = {self._control: "admin"} if self._control else {}
            self._roles = kept  # type: ignore[assignment]


def require(action: str) -> Callable[[Request], Coroutine[Any, Any, Role]]:
    """Return a dependency that admits a request whose key's role may do ``action``."""

    async def dependency(request: Request) -> Role:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("missing API key; send 'Authorization: Bearer <key>'", field="Authorization")
        role = request.app.state.keys.role(key.strip())
        keys.authorize(role, action)
        return role  # type: ignore[no-any-return]

    return dependency
