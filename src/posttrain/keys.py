"""API keys: created with a role, stored as SHA-256 hashes, shown once, revocable.

What each role may do is the table ``PERMISSIONS``; every server route names one action.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from posttrain.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from posttrain.ids import new_id
from posttrain.project import Project
from posttrain.records import ROLES, ApiKey, NewApiKey, Role

PERMISSIONS: dict[str, frozenset[Role]] = {
    "capture.interactions": frozenset({"admin", "ingest"}),
    "capture.feedback": frozenset({"admin", "ingest", "annotator"}),
    "capture.export": frozenset({"admin", "viewer"}),
    "interactions.read": frozenset({"admin", "annotator", "viewer"}),
    "sql": frozenset({"admin", "viewer"}),
    "keys": frozenset({"admin"}),
    "models.read": frozenset({"admin", "annotator", "viewer"}),
    "datasets.read": frozenset({"admin", "annotator", "viewer"}),
    "datasets.build": frozenset({"admin"}),
    "jobs.read": frozenset({"admin", "viewer"}),
    "train": frozenset({"admin"}),
    "evals.read": frozenset({"admin", "viewer"}),
    "evals.write": frozenset({"admin"}),
    "experiments.read": frozenset({"admin", "viewer"}),
    "experiments.decide": frozenset({"admin"}),
    "experiments.write": frozenset({"admin"}),
    "routes.read": frozenset({"admin", "viewer"}),
    "routes.write": frozenset({"admin"}),
    "gateway": frozenset({"admin", "ingest"}),
}

_COLUMNS = "id, name, role, prefix, created_at, revoked_at"


def hash_key(key: str) -> str:
    """Return the stored form of a key (keys are 192-bit random, so a plain hash suffices)."""
    return hashlib.sha256(key.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def create_key(project: Project, role: str, *, name: str | None = None) -> NewApiKey:
    """Create a key with ``role``; the returned ``key`` is the only time the secret is shown."""
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}; choose one of {', '.join(ROLES)}", field="role")
    secret = "pt_" + secrets.token_urlsafe(24)
    record = NewApiKey(
        id=new_id(),
        name=name,
        role=role,
        prefix=secret[:10],
        created_at=_now(),
        key=secret,  # type: ignore[arg-type]
    )
    project.cursor().execute(
        "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, NULL)",
        [record.id, name, role, record.prefix, hash_key(secret), record.created_at],
    )
    return record


def list_keys(project: Project) -> list[ApiKey]:
    """Return every key, newest first, revoked ones included."""
    rows = project.cursor().execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at DESC, id DESC")
    return [ApiKey(**dict(zip(_COLUMNS.split(", "), r, strict=True))) for r in rows.fetchall()]


def revoke_key(project: Project, key_id: str) -> ApiKey:
    """Revoke a key by its id or its prefix; it stops working at once."""
    cur = project.cursor()
    row = cur.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ? OR prefix = ?", [key_id, key_id]).fetchone()
    if row is None:
        raise NotFound(f"no API key {key_id!r}; run 'posttrain keys list'", field="key_id")
    key = ApiKey(**dict(zip(_COLUMNS.split(", "), row, strict=True)))
    if key.revoked_at is None:
        key.revoked_at = _now()
        cur.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", [key.revoked_at, key.id])
    return key


def lookup_role(project: Project, key: str) -> Role:
    """Return the role of a live key; raise Unauthorized for an unknown or revoked one."""
    row = (
        project.cursor().execute("SELECT role, revoked_at FROM api_keys WHERE key_hash = ?", [hash_key(key)]).fetchone()
    )
    if row is None:
        raise Unauthorized("unknown API key; create one with 'posttrain keys create --role ROLE'")
    if row[1] is not None:
        raise Unauthorized("this API key was revoked; create a new one with 'posttrain keys create'")
    return row[0]  # type: ignore[no-any-return]


def authorize(role: Role, action: str) -> None:
    """Raise Forbidden unless ``role`` may perform ``action``."""
    allowed = PERMISSIONS[action]
    if role not in allowed:
        names = ", ".join(sorted(allowed))
        raise Forbidden(f"a {role} key may not do {action}; it needs one of: {names}")
