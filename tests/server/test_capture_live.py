"""Capture and read routes against a real ``posttrain serve`` subprocess on loopback.

One server (with small limits) serves the whole module; each test names its events with a
prefix of its own, so tests do not see each other's rows.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import LiveServer
from posttrain import keys
from posttrain.keys import PERMISSIONS
from posttrain.project import init_project
from posttrain.records import ROLES

MAX_EVENT_BYTES = 2048
MAX_BODY_BYTES = 65536
MAX_BATCH_EVENTS = 100
LIMITS = {
    "POSTTRAIN_CAPTURE_MAX_EVENT_BYTES": str(MAX_EVENT_BYTES),
    "POSTTRAIN_CAPTURE_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    "POSTTRAIN_CAPTURE_MAX_BATCH_EVENTS": str(MAX_BATCH_EVENTS),
}


def start_server(root: Path, env: dict[str, str]) -> LiveServer:
    """Create a project with an admin key at ``root`` and serve it with ``env``."""
    proj = init_project(root)
    admin = keys.create_key(proj, "admin", name="live test admin").key
    proj.close()
    return LiveServer(root=proj.root, admin_key=admin, env=env).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("capture") / "proj", LIMITS)
    yield live
    live.stop()


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with server.http() as client:
        yield client


@pytest.fixture
def prefix() -> str:
    """A prefix for this test's event ids (and its cohort), unique on the shared server."""
    return f"t{uuid.uuid4().hex[:10]}-"


def interaction(event_id: str | None, **fields: Any) -> dict[str, Any]:
    return {"id": event_id, "messages": [{"role": "user", "content": "hi"}], "response": "hello", **fields}


def thumb(event_id: str, interaction_id: str) -> dict[str, Any]:
    return {"id": event_id, "interaction_id": interaction_id, "kind": "thumb", "value": "up"}


def sql(http: httpx.Client, query: str) -> list[list[Any]]:
    response = http.post("/api/sql", json={"sql": query})
    assert response.status_code == 200, response.text
    return response.json()["rows"]  # type: ignore[no-any-return]


def stored_counts(http: httpx.Client, prefix: str, table: str = "interactions") -> dict[str, int]:
    """Return how many rows each id starting with ``prefix`` has in ``table``."""
    rows = sql(http, f"SELECT id, count(*) FROM {table} WHERE starts_with(id, '{prefix}') GROUP BY id")
    return {event_id: n for event_id, n in rows}


def statuses(response: httpx.Response) -> list[str]:
    return [r["status"] for r in response.json()["results"]]


def assert_error(response: httpx.Response, status: int, kind: str, field: str | None = None) -> str:
    """Check the one error shape; return its message."""
    assert response.status_code == status, response.text[:500]
    error = response.json()["error"]
    assert set(error) == {"type", "message", "field"}
    assert error["type"] == kind
    if field is not None:
        assert error["field"] == field
    return error["message"]  # type: ignore[no-any-return]


# --- idempotency -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["interactions", "feedback"])
def test_capture_replay_is_idempotent(http: httpx.Client, prefix: str, kind: str) -> None:
    ids = [f"{prefix}{i}" for i in range(20)]
    events = [interaction(i) if kind == "interactions" else thumb(i, f"{prefix}x") for i in ids]
    replies = [http.post(f"/api/capture/{kind}", json={kind: events}) for _ in range(3)]
    assert [r.status_code for r in replies] == [200, 200, 200]
    assert statuses(replies[0]) == ["created"] * 20
    assert statuses(replies[1]) == statuses(replies[2]) == ["duplicate"] * 20
    assert [r["id"] for r in replies[2].json()["results"]] == ids
    assert stored_counts(http, prefix, kind) == dict.fromkeys(ids, 1)


def test_capture_duplicates_inside_one_batch(http: httpx.Client, prefix: str) -> None:
    a, b = f"{prefix}a", f"{prefix}b"
    events = [interaction(a), interaction(a, response="other"), interaction(b), interaction(a)]
    reply = http.post("/api/capture/interactions", json={"interactions": events})
    assert reply.status_code == 200, reply.text
    assert statuses(reply) == ["created", "duplicate", "created", "duplicate"]
    assert stored_counts(http, prefix) == {a: 1, b: 1}
    assert http.get(f"/api/interactions/{a}").json()["response"] == "hello"  # the first one wins


def test_capture_concurrent_senders_of_one_id_create_it_once(server: LiveServer, prefix: str) -> None:
    event_id = f"{prefix}same"

    def send(_: int) -> str:
        with server.http() as client:
            return statuses(client.post("/api/capture/interactions", json={"interactions": [interaction(event_id)]}))[0]

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(send, range(16)))
    assert sorted(outcomes) == ["created"] + ["duplicate"] * 15
    with server.http() as client:
        assert stored_counts(client, prefix) == {event_id: 1}


def test_capture_event_without_id_gets_one(http: httpx.Client, prefix: str) -> None:
    reply = http.post("/api/capture/interactions", json={"interactions": [interaction(None, cohort=prefix)]})
    [result] = reply.json()["results"]
    assert result["status"] == "created" and result["id"]
    assert http.get(f"/api/interactions/{result['id']}").json()["cohort"] == prefix


# --- partial batches and limits ---------------------------------------------------------


def test_capture_partial_batch_reports_each_event(http: httpx.Client, prefix: str) -> None:
    oversize = interaction(f"{prefix}big", response="x" * (MAX_EVENT_BYTES + 1), cohort=prefix)
    events = [
        interaction(f"{prefix}ok1", cohort=prefix),
        {"id": f"{prefix}nomsg", "cohort": prefix},
        oversize,
        interaction(f"{prefix}role", messages=[{"role": "wizard", "content": "hi"}]),
        interaction(f"{prefix}bogus", bogus=1),
        interaction("bad id with spaces"),
        "not an object",
        interaction(f"{prefix}ok2", cohort=prefix),
    ]
    reply = http.post("/api/capture/interactions", json={"interactions": events})
    assert reply.status_code == 207, reply.text
    results = reply.json()["results"]
    assert [r["status"] for r in results] == ["created"] + ["error"] * 6 + ["created"]
    assert [r["id"] for r in results] == [
        f"{prefix}ok1",
        f"{prefix}nomsg",
        f"{prefix}big",
        f"{prefix}role",
        f"{prefix}bogus",
        "bad id with spaces",
        None,
        f"{prefix}ok2",
    ]
    fields = [r["field"] for r in results[1:7]]
    assert fields[:3] == ["messages", "event", "messages.0.role"]
    assert fields[3:5] == ["bogus", "id"]
    assert str(MAX_EVENT_BYTES) in results[2]["error"]
    assert all(r["error"] for r in results[1:7])
    assert stored_counts(http, prefix) == {f"{prefix}ok1": 1, f"{prefix}ok2": 1}
    listed = http.get("/api/interactions", params={"cohort": prefix}).json()["interactions"]
    assert sorted(i["id"] for i in listed) == [f"{prefix}ok1", f"{prefix}ok2"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"prompt_tokens": 2**63}, "prompt_tokens"),  # past BIGINT: once stopped the writer thread
        ({"completion_tokens": 2**64 - 1}, "completion_tokens"),
        ({"timestamp": "9999-12-31T23:59:59-05:00"}, "timestamp"),  # past year 9999 in UTC: once a 500
        ({"timestamp": "0001-01-01T00:00:00+05:00"}, "timestamp"),
    ],
)
def test_capture_out_of_range_value_fails_only_its_event(
    http: httpx.Client, prefix: str, fields: dict[str, Any], field: str
) -> None:
    events = [interaction(f"{prefix}bad", **fields), interaction(f"{prefix}ok")]
    reply = http.post("/api/capture/interactions", json={"interactions": events})
    assert reply.status_code == 207, reply.text
    assert [(r["status"], r["field"]) for r in reply.json()["results"]] == [("error", field), ("created", None)]
    again = http.post("/api/capture/interactions", json={"interactions": [interaction(f"{prefix}after")]})
    assert statuses(again) == ["created"]
    assert stored_counts(http, prefix) == {f"{prefix}ok": 1, f"{prefix}after": 1}


def test_capture_all_invalid_batch_is_207_and_stores_nothing(http: httpx.Client, prefix: str) -> None:
    reply = http.post("/api/capture/feedback", json={"feedback": [{"id": f"{prefix}f", "kind": "thumb"}]})
    assert reply.status_code == 207
    assert reply.json()["results"][0]["field"] == "interaction_id"
    assert stored_counts(http, prefix, "feedback") == {}


def _chunks(body: bytes, size: int = 4096) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_capture_body_over_limit_is_413(http: httpx.Client, prefix: str, framing: str) -> None:
    events = [interaction(f"{prefix}{i}", response="y" * 1000) for i in range(MAX_BATCH_EVENTS - 1)]
    body = httpx.Request("POST", "/", json={"interactions": events}).content
    assert len(body) > MAX_BODY_BYTES
    content = body if framing == "content-length" else _chunks(body)
    headers = {"Content-Type": "application/json"}
    reply = http.post("/api/capture/interactions", content=content, headers=headers)
    message = assert_error(reply, 413, "PayloadTooLarge")
    assert str(MAX_BODY_BYTES) in message and "capture.max_body_bytes" in message
    assert stored_counts(http, prefix) == {}


def test_capture_too_many_events_is_413(http: httpx.Client, prefix: str) -> None:
    events = [{"id": f"{prefix}{i}", "messages": [{"role": "user"}]} for i in range(MAX_BATCH_EVENTS + 1)]
    reply = http.post("/api/capture/interactions", json={"interactions": events})
    message = assert_error(reply, 413, "PayloadTooLarge", field="interactions")
    assert str(MAX_BATCH_EVENTS) in message and "capture.max_batch_events" in message
    assert stored_counts(http, prefix) == {}


# --- backpressure -----------------------------------------------------------------------

BACKLOG = 10


@pytest.fixture
def small_backlog_server(tmp_path: Path) -> Iterator[LiveServer]:
    live = start_server(tmp_path / "backlog", {"POSTTRAIN_CAPTURE_MAX_BACKLOG_EVENTS": str(BACKLOG)})
    yield live
    live.stop()


def _storm(server: LiveServer, batches: list[list[dict[str, Any]]], threads: int = 12) -> list[httpx.Response]:
    """Send every batch at once from many threads; return the replies in batch order."""
    replies: dict[int, httpx.Response] = {}

    def sender(first: int) -> None:
        with server.http() as http:
            for i in range(first, len(batches), threads):
                replies[i] = http.post("/api/capture/interactions", json={"interactions": batches[i]})

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(sender, range(threads)))
    return [replies[i] for i in range(len(batches))]


def _send_until_accepted(http: httpx.Client, batch: list[dict[str, Any]]) -> httpx.Response:
    for _ in range(30):
        reply = http.post("/api/capture/interactions", json={"interactions": batch})
        if reply.status_code != 429:
            return reply
        time.sleep(float(reply.headers["Retry-After"]))
    raise AssertionError("the backlog never drained")


def test_capture_backlog_over_bound_is_429_and_loses_no_ack(small_backlog_server: LiveServer) -> None:
    text = "z" * 400
    batches = [[interaction(f"b{b}-{i}", response=text) for i in range(150)] for b in range(60)]
    replies = _storm(small_backlog_server, batches)
    codes = [r.status_code for r in replies]
    assert set(codes) <= {200, 429}, codes
    rejected = [b for b, r in zip(batches, replies, strict=True) if r.status_code == 429]
    assert rejected, "no request was refused; the backlog bound did not bite"
    assert len(rejected) < len(batches)
    refusal = next(r for r in replies if r.status_code == 429)
    assert int(refusal.headers["Retry-After"]) >= 1
    assert str(BACKLOG) in assert_error(refusal, 429, "Overloaded")
    with small_backlog_server.http() as http:
        counts = stored_counts(http, "b")
        acked = {r["id"] for reply in replies if reply.status_code == 200 for r in reply.json()["results"]}
        assert all(counts.get(i) == 1 for i in acked)
        assert set(counts) == acked, "a refused (429) request stored something"
        for batch in rejected:
            assert statuses(_send_until_accepted(http, batch)) == ["created"] * len(batch)
        assert stored_counts(http, "b") == {e["id"]: 1 for batch in batches for e in batch}


# --- out-of-order feedback ----------------------------------------------------------------


def test_feedback_before_its_interaction_joins_on_arrival(http: httpx.Client, prefix: str) -> None:
    iid = f"{prefix}late"
    early = [thumb(f"{prefix}fb1", iid), {"id": f"{prefix}fb2", "interaction_id": iid, "kind": "rating", "value": 4}]
    assert statuses(http.post("/api/capture/feedback", json={"feedback": early})) == ["created"] * 2
    assert_error(http.get(f"/api/interactions/{iid}"), 404, "NotFound")
    late = http.post("/api/capture/interactions", json={"interactions": [interaction(iid, cohort=prefix)]})
    assert statuses(late) == ["created"]
    got = http.get(f"/api/interactions/{iid}").json()
    assert sorted(f["id"] for f in got["feedback"]) == [f"{prefix}fb1", f"{prefix}fb2"]
    listed = http.get("/api/interactions", params={"cohort": prefix, "has_feedback": "true"}).json()
    assert [i["id"] for i in listed["interactions"]] == [iid]
    assert len(listed["interactions"][0]["feedback"]) == 2


# --- who labelled it: source and author follow the key ----------------------------------------

SOURCE_RIGHTS = [  # (role, source, accepted)
    ("ingest", "user", True),
    ("ingest", "verifier", True),
    ("ingest", "annotator", False),
    ("ingest", "judge", False),
    ("annotator", "annotator", True),
    ("annotator", "user", True),
    ("annotator", "judge", False),
    ("annotator", "verifier", False),
    ("admin", "judge", True),
    ("admin", "annotator", True),
]


@pytest.mark.parametrize(("role", "source", "accepted"), SOURCE_RIGHTS)
def test_feedback_source_is_limited_by_the_key_role(
    http: httpx.Client, prefix: str, role: str, source: str, accepted: bool
) -> None:
    key = http.post("/api/keys", json={"role": role, "name": prefix}).json()
    event = {**thumb(f"{prefix}f", f"{prefix}i"), "source": source, "author": "someone-else"}
    with httpx.Client(base_url=str(http.base_url), timeout=30) as other:
        reply = other.post("/api/capture/feedback", json={"feedback": [event]}, headers=_bearer(key["key"]))
    result = reply.json()["results"][0]
    if accepted:
        assert (reply.status_code, result["status"]) == (200, "created"), reply.text
        assert sql(http, f"SELECT source, author FROM feedback WHERE id = '{prefix}f'") == [[source, key["id"]]]
    else:
        assert (reply.status_code, result["status"], result["field"]) == (207, "error", "source"), reply.text
        assert f"a {role} key may not send {source} feedback" in result["error"]
        assert stored_counts(http, prefix, "feedback") == {}


def test_feedback_author_is_the_annotator_key_not_the_body(http: httpx.Client, prefix: str) -> None:
    key = http.post("/api/keys", json={"role": "annotator", "name": prefix}).json()
    label = {"id": f"{prefix}e", "interaction_id": f"{prefix}i", "kind": "edit", "text": "better",
             "source": "annotator", "author": "admin"}  # fmt: skip
    with httpx.Client(base_url=str(http.base_url), timeout=30) as annotator:
        reply = annotator.post("/api/capture/feedback", json={"feedback": [label]}, headers=_bearer(key["key"]))
    assert statuses(reply) == ["created"]
    assert sql(http, f"SELECT source, author FROM feedback WHERE id = '{prefix}e'") == [["annotator", key["id"]]]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- auth ----------------------------------------------------------------------------------

Route = tuple[str, str, str, Callable[[str], Any]]  # action, method, path, json body from a prefix


ROUTES: list[Route] = [
    ("capture.interactions", "POST", "/api/capture/interactions", lambda p: {"interactions": [interaction(f"{p}a")]}),
    ("capture.feedback", "POST", "/api/capture/feedback", lambda p: {"feedback": [thumb(f"{p}f", "seed")]}),
    ("capture.export", "GET", "/api/capture/export", lambda p: None),
    ("interactions.read", "GET", "/api/interactions", lambda p: None),
    ("interactions.read", "GET", "/api/interactions/seed", lambda p: None),
    ("sql", "POST", "/api/sql", lambda p: {"sql": "SELECT 1"}),
    ("keys", "GET", "/api/keys", lambda p: None),
    ("keys", "POST", "/api/keys", lambda p: {"role": "viewer", "name": p}),
    ("keys", "DELETE", "/api/keys/{target}", lambda p: None),
]
ROUTE_IDS = [f"{method} {path}" for _, method, path, _ in ROUTES]


@pytest.fixture(scope="module")
def seeded(server: LiveServer) -> None:
    with server.http() as http:
        http.post("/api/capture/interactions", json={"interactions": [interaction("seed")]})


def _call(http: httpx.Client, route: Route, prefix: str, key: str | None) -> httpx.Response:
    _, method, path, body = route
    if "{target}" in path:
        target = http.post("/api/keys", json={"role": "viewer", "name": "revoke me"}).json()["id"]
        path = path.format(target=target)
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=str(http.base_url), timeout=30) as anonymous:
        return anonymous.request(method, path, json=body(prefix), headers=headers)


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("role", ROLES)
def test_auth_role_matrix(http: httpx.Client, prefix: str, role: str, route: Route) -> None:
    key = http.post("/api/keys", json={"role": role, "name": prefix}).json()
    reply = _call(http, route, prefix, key["key"])
    if role in PERMISSIONS[route[0]]:
        assert 200 <= reply.status_code < 300, reply.text
    else:
        assert route[0] in assert_error(reply, 403, "Forbidden")
    assert http.delete(f"/api/keys/{key['id']}").status_code == 200
    assert_error(_call(http, route, prefix, key["key"]), 401, "Unauthorized")


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize(
    "header",
    [None, "Bearer pt_not_a_key", "Bearer", "Basic dXNlcjpwYXNz"],
    ids=["missing", "unknown", "empty", "basic"],
)
def test_auth_without_a_valid_key_is_401(http: httpx.Client, prefix: str, route: Route, header: str | None) -> None:
    _, method, path, body = route
    headers = {} if header is None else {"Authorization": header}
    with httpx.Client(base_url=str(http.base_url), timeout=30) as anonymous:
        reply = anonymous.request(method, path.format(target="x"), json=body(prefix), headers=headers)
    assert_error(reply, 401, "Unauthorized")
    assert stored_counts(http, prefix) == {}


def test_health_needs_no_key(server: LiveServer) -> None:
    reply = httpx.get(f"{server.url}/health")
    assert reply.status_code == 200 and reply.json()["status"] == "ok"


# --- listing ----------------------------------------------------------------------------------

DAYS = 6
LISTED = [
    # (suffix, day, user, model, tags, feedback?)
    (f"{n:02d}", 1 + n % DAYS, f"u{n % 3}", "m-a" if n % 2 else "m-b", ["even"] if n % 2 == 0 else [], n % 4 == 0)
    for n in range(24)
]


@pytest.fixture(scope="module")
def listing(server: LiveServer) -> str:
    """Store LISTED under a cohort of its own; return the cohort."""
    cohort = f"list-{uuid.uuid4().hex[:8]}"
    events = [
        interaction(
            f"{cohort}-{s}",
            cohort=cohort,
            timestamp=f"2024-03-0{day}T12:00:00Z",
            user_id=user,
            model=model,
            tags=tags,
        )
        for s, day, user, model, tags, _ in LISTED
    ]
    feedback = [thumb(f"{cohort}-fb{s}", f"{cohort}-{s}") for s, *_, has in LISTED if has]
    with server.http() as http:
        assert http.post("/api/capture/interactions", json={"interactions": events}).status_code == 200
        assert http.post("/api/capture/feedback", json={"feedback": feedback}).status_code == 200
    return cohort


FILTERS: list[tuple[dict[str, str], Callable[[tuple[Any, ...]], bool]]] = [
    ({}, lambda e: True),
    ({"user_id": "u1"}, lambda e: e[2] == "u1"),
    ({"model": "m-b"}, lambda e: e[3] == "m-b"),
    ({"tag": "even"}, lambda e: "even" in e[4]),
    ({"has_feedback": "true"}, lambda e: e[5]),
    ({"has_feedback": "false"}, lambda e: not e[5]),
    ({"since": "2024-03-03T12:00:00"}, lambda e: e[1] >= 3),
    ({"until": "2024-03-03T12:00:00Z"}, lambda e: e[1] < 3),
    ({"since": "2024-03-03T14:00:00+02:00"}, lambda e: e[1] >= 3),
    (
        {"since": "2024-03-02T00:00:00Z", "until": "2024-03-05T00:00:00Z", "user_id": "u0"},
        lambda e: 2 <= e[1] < 5 and e[2] == "u0",
    ),
]


@pytest.mark.parametrize(("params", "keep"), FILTERS, ids=[str(p) or "none" for p, _ in FILTERS])
def test_list_interactions_filters(
    http: httpx.Client, listing: str, params: dict[str, str], keep: Callable[[tuple[Any, ...]], bool]
) -> None:
    reply = http.get("/api/interactions", params={"cohort": listing, **params, "limit": 1000})
    assert reply.status_code == 200, reply.text
    got = [i["id"] for i in reply.json()["interactions"]]
    expected = [f"{listing}-{e[0]}" for e in LISTED if keep(e)]
    assert sorted(got) == sorted(expected)
    assert reply.json()["next_cursor"] is None


@pytest.mark.parametrize("limit", [1, 5, 7, 24, 25])
def test_list_interactions_cursor_visits_each_once(http: httpx.Client, listing: str, limit: int) -> None:
    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"cohort": listing, "limit": limit}
    for _ in range(len(LISTED) + 2):
        page = http.get("/api/interactions", params=params).json()
        assert len(page["interactions"]) <= limit
        seen += page["interactions"]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    ids = [i["id"] for i in seen]
    assert sorted(ids) == sorted(f"{listing}-{e[0]}" for e in LISTED)
    order = [(i["timestamp"], i["id"]) for i in seen]
    assert order == sorted(order, reverse=True), "not newest first"


def test_list_interactions_bad_cursor_is_400(http: httpx.Client) -> None:
    assert_error(http.get("/api/interactions", params={"cursor": "garbage!"}), 400, "InvalidInput", field="cursor")


@pytest.mark.parametrize(
    "params", [{"limit": "0"}, {"limit": "100000"}, {"since": "yesterday"}, {"has_feedback": "maybe"}]
)
def test_list_interactions_bad_query_is_400(http: httpx.Client, params: dict[str, str]) -> None:
    [name] = params
    assert_error(http.get("/api/interactions", params=params), 400, "InvalidInput", field=name)


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/capture/interactions", b'{"interactions": [', "body"),
        ("/api/capture/interactions", b"", "body"),
        ("/api/capture/interactions", b"[1, 2]", "interactions"),
        ("/api/capture/interactions", b'{"interaction": []}', "interactions"),
        ("/api/capture/feedback", b'{"feedback": {"id": "x"}}', "feedback"),
        ("/api/sql", b'{"sql": ', "body"),
        ("/api/sql", b'{"query": "SELECT 1"}', "sql"),
        ("/api/keys", b"not json", "body"),
        ("/api/keys", b'{"role": "root"}', "role"),
    ],
)
def test_bad_json_is_400_naming_the_field(http: httpx.Client, path: str, body: bytes, field: str) -> None:
    reply = http.post(path, content=body, headers={"Content-Type": "application/json"})
    message = assert_error(reply, 400, "InvalidInput", field=field)
    assert message


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/capture/interactions", {"interactions": [], "bogus": 1}),
        ("/api/capture/feedback", {"feedback": [], "bogus": 1}),
        ("/api/sql", {"sql": "SELECT 1", "bogus": 1}),
        ("/api/keys", {"role": "viewer", "bogus": 1}),
    ],
)
def test_unknown_body_field_is_400_naming_it(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    assert_error(http.post(path, json=body), 400, "InvalidInput", field="bogus")


def test_unknown_query_parameter_is_400_naming_it(http: httpx.Client) -> None:
    # a misspelt filter must not silently return everything
    assert_error(http.get("/api/interactions", params={"user": "u1"}), 400, "InvalidInput", field="user")
