"""API keys: created with a role, stored as SHA-256 hashes, shown once, revocable.

The roles:

- ``admin``: everything, including keys, training, SQL and labels of every source;
- ``ingest``: the product's backend: capture interactions and user (or verifier) feedback, call the gateway;
- ``annotator``: read interactions and label them (feedback with source ``annotator``);
- ``viewer``: read only.

What each role may do is the table ``PERMISSIONS``; every server route names one action. Which
feedback ``source`` a role may claim is ``FEEDBACK_SOURCES``: an annotator label only from admin and
annotator keys, a judge label only from admin keys (the server's own judges write through the
library). Over HTTP the stored ``author`` of feedback is the sending key's id (``control`` for the
server's control token), whatever the body says; only local imports and library calls set it.
"""

from __future__ import annotations

import hashlib
import secrets

from pydantic import BaseModel

from posttrain.clock import utc_now
from posttrain.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from posttrain.ids import new_id
from posttrain.project import Project
from posttrain.records import ROLES, ApiKey, FeedbackSource, NewApiKey, Role

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
    "annotate.read": frozenset({"admin", "annotator", "viewer"}),
    "annotate.label": frozenset({"admin", "annotator"}),
    "annotate.admin": frozenset({"admin"}),
    "console.read": frozenset({"admin", "viewer"}),  # the console's pages (/ui) beyond interactions and annotation
}

FEEDBACK_SOURCES: dict[Role, frozenset[FeedbackSource]] = {
    "admin": frozenset({"user", "annotator", "judge", "verifier"}),
    "ingest": frozenset({"user", "verifier"}),
    "annotator": frozenset({"user", "annotator"}),
    "viewer": frozenset(),
}

CONTROL_KEY_ID = "control"

_COLUMNS = "id, name, role, prefix, created_at, revoked_at"


class Caller(BaseModel):
    """Who sent a request: the key's id (``control`` for the server's control token) and its role."""

    key_id: str
    role: Role


def hash_key(key: str) -> str:
    """Return the stored form of a key (keys are 192-bit random, so a plain hash suffices)."""
    return hashlib.sha256(key.encode()).hexdigest()


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
        created_at=utc_now(),
        key=secret,  # type: ignore[arg-type]
    )
    project.cursor().execute(
        "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, NULL)",
        [record.id, name, role, record.prefix, hash_key(secret), record.created_at],
    )
    return record


def has_admin(project: Project) -> bool:
    """Return whether the warehouse holds an admin key that is not revoked."""
    sql = "SELECT count(*) FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL"
    return bool(project.cursor().execute(sql).fetchone()[0])  # type: ignore[index]


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
        key.revoked_at = utc_now()
        cur.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", [key.revoked_at, key.id])
    return key


def lookup_key(project: Project, key: str) -> Caller:
    """Return who holds a live key; raise Unauthorized for an unknown or revoked one."""
    row = (
        project.cursor()
        .execute("SELECT id, role, revoked_at FROM api_keys WHERE key_hash = ?", [hash_key(key)])
        .fetchone()
    )
    if row is None:
        raise Unauthorized("unknown API key; create one with 'posttrain keys create --role ROLE'")
    if row[2] is not None:
        raise Unauthorized("this API key was revoked; create a new one with 'posttrain keys create'")
    return Caller(key_id=row[0], role=row[1])


def lookup_role(project: Project, key: str) -> Role:
    """Return the role of a live key; raise Unauthorized for an unknown or revoked one."""
    return lookup_key(project, key).role


def feedback_source_error(role: Role, source: str) -> str | None:
    """Return why a ``role`` key may not send feedback from ``source``, or None when it may."""
    allowed = FEEDBACK_SOURCES[role]
    if source in allowed:
        return None
    names = ", ".join(sorted(allowed)) or "none"
    return f"a {role} key may not send {source} feedback; it may send: {names}"


def authorize(role: Role, action: str) -> None:
    """Raise Forbidden unless ``role`` may perform ``action``."""
    allowed = PERMISSIONS[action]
    if role not in allowed:
        names = ", ".join(sorted(allowed))
        raise Forbidden(f"a {role} key may not do {action}; it needs one of: {names}")
