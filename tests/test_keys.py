"""keys: creation, hashing at rest, revocation, the role table; the in-process auth matrix."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from posttrain import keys
from posttrain.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from posttrain.project import Project
from posttrain.server import create_app

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")


def test_create_key_stores_only_a_hash(project: Project) -> None:
    key = keys.create_key(project, "viewer", name="dash")
    stored = project.cursor().execute("SELECT key_hash, prefix FROM api_keys WHERE id = ?", [key.id]).fetchone()
    assert stored is not None and key.key not in stored
    assert stored[0] == keys.hash_key(key.key) and key.key.startswith(stored[1])
    assert keys.lookup_role(project, key.key) == "viewer"


def test_create_key_refuses_unknown_role(project: Project) -> None:
    with pytest.raises(InvalidInput, match="choose one of admin"):
        keys.create_key(project, "root")


def test_revoke_key_by_prefix_stops_it(project: Project) -> None:
    key = keys.create_key(project, "ingest")
    keys.revoke_key(project, key.prefix)
    with pytest.raises(Unauthorized, match="revoked"):
        keys.lookup_role(project, key.key)
    assert keys.list_keys(project)[0].revoked_at is not None


def test_revoke_unknown_key_is_not_found(project: Project) -> None:
    with pytest.raises(NotFound, match="keys list"):
        keys.revoke_key(project, "nope")


def test_authorize_follows_the_permission_table() -> None:
    keys.authorize("ingest", "capture.interactions")
    with pytest.raises(Forbidden, match="needs one of"):
        keys.authorize("viewer", "capture.interactions")


_ROUTES = [
    ("POST", "/api/capture/interactions", {"interactions": []}, {"admin", "ingest"}),
    ("POST", "/api/capture/feedback", {"feedback": []}, {"admin", "ingest", "annotator"}),
    ("GET", "/api/interactions", None, {"admin", "annotator", "viewer"}),
    ("POST", "/api/sql", {"sql": "SELECT 1"}, {"admin", "viewer"}),
    ("GET", "/api/keys", None, {"admin"}),
    ("GET", "/api/capture/export", None, {"admin", "viewer"}),
]


@pytest.mark.parametrize("role", ["admin", "ingest", "annotator", "viewer"])
@pytest.mark.parametrize(("method", "path", "body", "allowed"), _ROUTES)
def test_route_admits_exactly_its_roles(
    project: Project, role: str, method: str, path: str, body: object, allowed: set[str]
) -> None:
    key = keys.create_key(project, role).key
    with TestClient(create_app(project, sandbox_sql=False)) as c:
        response = c.request(method, path, json=body, headers={"Authorization": f"Bearer {key}"})
        anonymous = c.request(method, path, json=body)
    assert response.status_code == (200 if role in allowed else 403), response.text
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["field"] == "Authorization"


def test_health_needs_no_key(client: TestClient) -> None:
    assert client.get("/health", headers={"Authorization": ""}).json()["status"] == "ok"


def test_revoked_key_is_refused_at_once(client: TestClient) -> None:
    created = client.post("/api/keys", json={"role": "viewer"}).json()
    headers = {"Authorization": f"Bearer {created['key']}"}
    assert client.get("/api/interactions", headers=headers).status_code == 200
    assert client.delete(f"/api/keys/{created['id']}").status_code == 200
    assert client.get("/api/interactions", headers=headers).status_code == 401
