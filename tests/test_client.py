"""The SDK against a real ``posttrain serve``, and against a stub HTTP server for the rare answers.

The stub is a real HTTP server on loopback (the true external, faked at the transport boundary):
it lets a test script 429, 5xx and 413 answers and count the requests that reach it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import posttrain
from conftest import LiveServer
from posttrain import keys
from posttrain.errors import Forbidden, InvalidInput, Overloaded, Unauthorized, Unavailable
from posttrain.ids import new_id
from posttrain.project import init_project

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]
Event = dict[str, Any]
Answer = tuple[int, dict[str, str], dict[str, Any]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _created(events: list[Event]) -> Answer:
    return 200, {}, {"results": [{"id": e["id"], "status": "created"} for e in events]}


class Stub:
    """A real HTTP server on loopback standing in for the capture API; ``answer`` scripts it."""

    def __init__(self) -> None:
        self.requests: list[tuple[float, list[Event]]] = []
        self.answer: Callable[[int, list[Event]], Answer] = lambda _n, events: _created(events)
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                events = body.get("interactions", body.get("feedback"))
                stub.requests.append((time.monotonic(), events))
                status, headers, payload = stub.answer(len(stub.requests), events)
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(data))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def ids(self, n: int) -> list[str]:
        """Return the ids in request ``n`` (1-based)."""
        return [e["id"] for e in self.requests[n - 1][1]]


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real ``posttrain serve`` for the tests that only add events with fresh ids."""
    proj = init_project(tmp_path_factory.mktemp("client") / "proj")
    admin = keys.create_key(proj, "admin").key
    proj.close()
    live = LiveServer(root=proj.root, admin_key=admin).start()
    yield live
    live.stop()


def _count(server: LiveServer, table: str, ids: list[str]) -> int:
    quoted = ", ".join(f"'{i}'" for i in ids)
    with server.http() as http:
        r = http.post("/api/sql", json={"sql": f"SELECT count(*) FROM {table} WHERE id IN ({quoted})"})
    assert r.status_code == 200, r.text
    return int(r.json()["rows"][0][0])


def _offline(**options: Any) -> posttrain.Client:
    return posttrain.Client(f"http://127.0.0.1:{_free_port()}", "pt_nobody", **options)


# --- against the real server -------------------------------------------------------------------


def test_log_interaction_returns_id_and_event_lands_once(server: LiveServer) -> None:
    with posttrain.Client(server.url, server.admin_key) as client:
        ids = [
            client.log_interaction(messages=MESSAGES, response=f"4 ({i})", user_id="u1", tags=["math"])
            for i in range(5)
        ]
        assert all(len(i) == 26 for i in ids) and len(set(ids)) == 5
        assert client.flush() is True
        assert (client.sent, client.failed, client.dropped, client.pending) == (5, 0, 0, 0)
    with server.http() as http:
        stored = http.get(f"/api/interactions/{ids[3]}").json()
    assert (stored["response"], stored["user_id"], stored["tags"]) == ("4 (3)", "u1", ["math"])
    assert _count(server, "interactions", ids) == 5


def test_log_feedback_before_its_interaction_both_land(server: LiveServer) -> None:
    interaction_id = new_id()
    with posttrain.Client(server.url, server.admin_key) as client:
        feedback_id = client.log_feedback(interaction_id, "thumb", True, text="nice")
        assert client.flush() is True
        assert client.log_interaction(MESSAGES, "4", id=interaction_id) == interaction_id
        assert client.flush() is True
    with server.http() as http:
        stored = http.get(f"/api/interactions/{interaction_id}").json()
    assert [(f["id"], f["value"]) for f in stored["feedback"]] == [(feedback_id, 1)]


def test_client_context_manager_flushes_on_exit(server: LiveServer) -> None:
    with posttrain.Client(server.url, server.admin_key, flush_interval=60) as client:
        event_id = client.log_interaction(MESSAGES, "4")
    assert (client.sent, client.pending) == (1, 0)
    assert _count(server, "interactions", [event_id]) == 1


def test_client_counts_rejected_events_in_failed(server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    with posttrain.Client(server.url, server.admin_key) as client:
        good = client.log_interaction(MESSAGES, "4")
        bad = client.log_interaction(MESSAGES, "4", assignment_prob=2.0)
        client.log_feedback(good, "thumb", "sideways")
        assert client.flush() is True
    assert (client.sent, client.failed, client.dropped) == (1, 2, 0)
    assert isinstance(client.last_error, InvalidInput)
    assert "rejected 1 of 1" in caplog.text
    assert _count(server, "interactions", [good, bad]) == 1


def _key(server: LiveServer, kind: str) -> str:
    if kind == "unknown":
        return "pt_" + "x" * 32
    with server.http() as http:
        created = http.post("/api/keys", json={"role": "viewer" if kind == "viewer" else "ingest"}).json()
        if kind == "revoked":
            assert http.delete(f"/api/keys/{created['id']}").status_code == 200
    return str(created["key"])


@pytest.mark.parametrize(
    ("kind", "error"), [("unknown", Unauthorized), ("revoked", Unauthorized), ("viewer", Forbidden)]
)
def test_client_bad_key_sets_last_error_and_stops(server: LiveServer, kind: str, error: type) -> None:
    client = posttrain.Client(server.url, _key(server, kind))
    client.log_interaction(MESSAGES, "4")
    started = time.monotonic()
    assert client.flush(timeout=10) is False
    assert time.monotonic() - started < 5
    assert isinstance(client.last_error, error)
    client.log_interaction(MESSAGES, "4")
    assert (client.sent, client.dropped, client.pending) == (0, 2, 0)
    client.close()


@pytest.mark.slow  # one of the slowest of the default suite; CI runs it in make test-slow
def test_client_delivers_events_logged_while_server_is_down(tmp_path: Path) -> None:
    proj = init_project(tmp_path / "down")
    admin = keys.create_key(proj, "admin").key
    proj.close()
    port = _free_port()
    live = LiveServer(root=proj.root, admin_key=admin, port=port).start()
    client = posttrain.Client(live.url, admin, max_backoff=0.5)
    try:
        ids = [client.log_interaction(MESSAGES, "before")]
        assert client.flush(timeout=10) is True
        live.kill()
        ids += [client.log_interaction(MESSAGES, f"during {i}") for i in range(20)]
        feedback_id = client.log_feedback(ids[-1], "rating", 5)
        time.sleep(0.6)  # a few resends fail meanwhile
        assert client.pending == 21 and isinstance(client.last_error, Unavailable)
        live.port = port
        live.start()
        assert client.flush(timeout=30) is True
        assert (client.sent, client.failed, client.dropped) == (22, 0, 0)
        assert _count(live, "interactions", ids) == 21
        assert _count(live, "feedback", [feedback_id]) == 1
    finally:
        client.close(timeout=1)
        live.stop()


def test_client_flushes_at_interpreter_exit(server: LiveServer) -> None:
    script = (
        "import posttrain\n"
        f"client = posttrain.Client({server.url!r}, {server.admin_key!r}, flush_interval=60)\n"
        "print(client.log_interaction([{'role': 'user', 'content': 'bye'}], 'bye'))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert _count(server, "interactions", [done.stdout.strip()]) == 1


def test_async_client_delivers_interactions_and_feedback(server: LiveServer) -> None:
    async def log() -> tuple[posttrain.AsyncClient, str, str]:
        async with posttrain.AsyncClient(server.url, server.admin_key) as client:
            interaction_id = client.log_interaction(MESSAGES, "4", model="tiny")
            feedback_id = client.log_feedback(interaction_id, "rating", 4, source="annotator")
            assert await client.flush() is True
        return client, interaction_id, feedback_id

    client, interaction_id, feedback_id = asyncio.run(log())
    assert (client.sent, client.failed, client.dropped, client.pending) == (2, 0, 0, 0)
    with server.http() as http:
        stored = http.get(f"/api/interactions/{interaction_id}").json()
    assert stored["model"] == "tiny"
    assert [(f["id"], f["value"], f["source"]) for f in stored["feedback"]] == [(feedback_id, 4, "annotator")]


# --- the hot path, offline ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fields", "field"),
    [
        ([[]], {}, "messages"),
        (["hello"], {}, "messages"),
        ([MESSAGES], {"usr_id": "u1"}, "usr_id"),
    ],
)
def test_log_interaction_rejects_bad_input(args: list[Any], fields: Event, field: str) -> None:
    client = _offline()
    with pytest.raises(InvalidInput) as info:
        client.log_interaction(*args, **fields)
    assert info.value.field == field
    client.close(timeout=0)


@pytest.mark.parametrize(
    ("args", "fields", "field"),
    [
        (["", "thumb"], {}, "interaction_id"),
        (["i1", "like"], {}, "kind"),
        (["i1", "thumb"], {"source": "robot"}, "source"),
        (["i1", "thumb"], {"note": "x"}, "note"),
    ],
)
def test_log_feedback_rejects_bad_input(args: list[Any], fields: Event, field: str) -> None:
    client = _offline()
    with pytest.raises(InvalidInput) as info:
        client.log_feedback(*args, **fields)
    assert info.value.field == field
    client.close(timeout=0)


@pytest.mark.parametrize(
    ("url", "options", "field"),
    [
        ("localhost:8321", {}, "url"),
        ("http://x", {"batch_size": 0}, "batch_size"),
        ("http://x", {"max_retries": -1}, "max_retries"),
    ],
)
def test_client_rejects_bad_options(url: str, options: Event, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        posttrain.Client(url, "pt_key", **options)
    assert info.value.field == field


def test_client_full_buffer_drops_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    client = _offline(max_buffer=10, flush_interval=60)
    ids = [client.log_interaction(MESSAGES, str(i)) for i in range(15)]
    assert len(set(ids)) == 15
    assert (client.pending, client.dropped) == (10, 5)
    assert "max_buffer=10 is full" in caplog.text
    client.close(timeout=0.5)
    assert (client.pending, client.dropped, client.sent) == (0, 15, 0)


def test_log_interaction_is_fast_while_the_server_hangs() -> None:
    with socket.socket() as hung:  # the kernel accepts connections; nothing ever answers
        hung.bind(("127.0.0.1", 0))
        hung.listen()
        client = posttrain.Client(f"http://127.0.0.1:{hung.getsockname()[1]}", "pt_key", batch_size=100)
        times = []
        for i in range(10_000):
            started = time.perf_counter_ns()
            client.log_interaction(MESSAGES, "4", user_id="u1", tags=["t"], metadata={"i": i})
            times.append(time.perf_counter_ns() - started)
        assert (client.pending, client.sent) == (10_000, 0)
    client.close(timeout=0)
    times.sort()
    assert times[len(times) // 2] < 50_000  # p50 under 50 µs
    assert times[-1] < 1_000_000_000  # no call waited on the hung request


# --- the rare answers, from the stub -----------------------------------------------------------


def test_client_resends_the_same_ids_after_a_server_error(stub: Stub) -> None:
    stub.answer = lambda n, events: (503, {}, {"error": {"message": "busy"}}) if n == 1 else _created(events)
    with posttrain.Client(stub.url, "pt_key") as client:
        for i in range(3):
            client.log_interaction(MESSAGES, str(i))
        assert client.flush(timeout=10) is True
    assert len(stub.requests) == 2 and stub.ids(1) == stub.ids(2)
    assert (client.sent, client.dropped) == (3, 0)


def test_client_waits_retry_after_on_429(stub: Stub) -> None:
    busy: Answer = (429, {"Retry-After": "1"}, {"error": {"message": "backlog full"}})
    stub.answer = lambda n, events: busy if n == 1 else _created(events)
    with posttrain.Client(stub.url, "pt_key") as client:
        client.log_interaction(MESSAGES, "4")
        assert client.flush(timeout=10) is True
        assert isinstance(client.last_error, Overloaded)
    assert stub.requests[1][0] - stub.requests[0][0] >= 1.0
    assert stub.ids(1) == stub.ids(2)


def test_client_halves_a_batch_on_413(stub: Stub) -> None:
    too_big: Answer = (413, {}, {"error": {"message": "body too large"}})
    stub.answer = lambda _n, events: too_big if len(events) > 2 else _created(events)
    with posttrain.Client(stub.url, "pt_key") as client:
        ids = [client.log_interaction(MESSAGES, str(i)) for i in range(7)]
        assert client.flush(timeout=10) is True
    delivered = [i for _, events in stub.requests if len(events) <= 2 for i in (e["id"] for e in events)]
    assert delivered == ids
    assert (client.sent, client.dropped) == (7, 0)


def test_client_drops_a_lone_event_too_large(stub: Stub) -> None:
    too_big: Answer = (413, {}, {"error": {"message": "body too large"}})
    stub.answer = lambda _n, events: too_big if any(e["response"] == "huge" for e in events) else _created(events)
    with posttrain.Client(stub.url, "pt_key") as client:
        for response in ("a", "huge", "b", "c"):
            client.log_interaction(MESSAGES, response)
        assert client.flush(timeout=10) is True
    assert (client.sent, client.dropped) == (3, 1)


def test_client_does_not_resend_rejected_events(stub: Stub) -> None:
    def answer(_n: int, events: list[Event]) -> Answer:
        results = [{"id": e["id"], "status": "created"} for e in events]
        results[0] = {"id": events[0]["id"], "status": "error", "error": "messages: bad", "field": "messages"}
        return 207, {}, {"results": results}

    stub.answer = answer
    with posttrain.Client(stub.url, "pt_key") as client:
        client.log_interaction(MESSAGES, "a")
        client.log_interaction(MESSAGES, "b")
        assert client.flush(timeout=10) is True
        time.sleep(0.3)
    assert len(stub.requests) == 1
    assert (client.sent, client.failed) == (1, 1)


def test_client_gives_up_after_max_retries(stub: Stub) -> None:
    stub.answer = lambda _n, _events: (500, {}, {"error": {"message": "boom"}})
    with posttrain.Client(stub.url, "pt_key", max_retries=2, max_backoff=0.05) as client:
        client.log_interaction(MESSAGES, "a")
        client.log_interaction(MESSAGES, "b")
        assert client.flush(timeout=10) is True
    assert len(stub.requests) == 3
    assert (client.sent, client.dropped) == (0, 2)


def test_client_fatal_error_does_not_spin(stub: Stub) -> None:
    stub.answer = lambda _n, _events: (401, {}, {"error": {"message": "unknown API key"}})
    client = posttrain.Client(stub.url, "pt_key", flush_interval=0.05)
    for _ in range(3):
        client.log_interaction(MESSAGES, "4")
    assert client.flush(timeout=10) is False
    client.log_interaction(MESSAGES, "4")
    time.sleep(0.3)
    assert len(stub.requests) == 1
    assert isinstance(client.last_error, Unauthorized) and "unknown API key" in str(client.last_error)
    assert (client.dropped, client.pending) == (4, 0)
    client.close()


def test_async_client_resends_after_a_server_error(stub: Stub) -> None:
    stub.answer = lambda n, events: (502, {}, {}) if n == 1 else _created(events)

    async def log() -> posttrain.AsyncClient:
        client = posttrain.AsyncClient(stub.url, "pt_key")
        client.log_interaction(MESSAGES, "4")
        client.log_feedback("i1", "flag")
        assert await client.flush(timeout=10) is True
        await client.aclose()
        return client

    client = asyncio.run(log())
    assert (client.sent, client.dropped, client.pending) == (2, 0, 0)
    assert stub.ids(1) == stub.ids(2)


def test_async_client_bad_key_stops(stub: Stub) -> None:
    stub.answer = lambda _n, _events: (403, {}, {"error": {"message": "a viewer key may not"}})

    async def log() -> tuple[posttrain.AsyncClient, bool]:
        async with posttrain.AsyncClient(stub.url, "pt_key") as client:
            client.log_interaction(MESSAGES, "4")
            flushed = await client.flush(timeout=10)
        return client, flushed

    client, flushed = asyncio.run(log())
    assert flushed is False and isinstance(client.last_error, Forbidden)
    assert (client.dropped, len(stub.requests)) == (1, 1)
