"""A flood of slow SQL degrades SQL alone: capture, the gateway and reads keep answering; SIGTERM still exits fast.

Real ``posttrain serve`` subprocesses on loopback, a stub OpenAI upstream for the gateway.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import LiveServer
from posttrain import keys
from posttrain.project import init_project
from upstream_stub import running_upstream

pytestmark = pytest.mark.slow

# A cross join of 10^11 rows: far past any time limit, all cores busy while it runs.
SLOW = "SELECT count(*) FROM range(100000000) a, range(1000) b WHERE a.range + b.range = -1"
FLOOD = 40


def _serve(root: Path, env: dict[str, str]) -> tuple[LiveServer, str]:
    proj = init_project(root)
    admin = keys.create_key(proj, "admin").key
    viewer = keys.create_key(proj, "viewer").key
    proj.close()
    return LiveServer(root=proj.root, admin_key=admin, env=env).start(), viewer


@pytest.fixture
def upstream() -> Iterator[str]:
    with running_upstream() as url:
        yield url


class Flood:
    """``FLOOD`` threads that keep a slow viewer query in flight each until stopped."""

    def __init__(self, url: str, key: str) -> None:
        self.statuses: list[int] = []
        self.errors = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(url, key), daemon=True) for _ in range(FLOOD)]

    def _send(self, url: str, key: str) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
            while not self._stop.is_set():
                try:
                    self.statuses.append(http.post("/api/sql", json={"sql": SLOW}).status_code)
                except httpx.HTTPError:
                    self.errors += 1  # the server went away (SIGTERM): expected at the end
                    time.sleep(0.05)

    def __enter__(self) -> Flood:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(70)


def _timed(call: object) -> float:
    started = time.perf_counter()
    response = call()  # type: ignore[operator]
    assert response.status_code < 300, response.text
    return time.perf_counter() - started


def test_sql_flood_leaves_other_routes_answering_and_sigterm_exits_fast(tmp_path: Path, upstream: str) -> None:
    env = {"POSTTRAIN_GATEWAY_UPSTREAM_URL": upstream, "POSTTRAIN_GATEWAY_UPSTREAM_MODELS": "stub-echo"}
    server, viewer = _serve(tmp_path / "proj", env)
    chat = {"model": "stub-echo", "messages": [{"role": "user", "content": "hi"}]}
    try:
        with Flood(server.url, viewer) as flood, server.http() as http:
            time.sleep(2.0)  # every flood query is running or waiting for a slot
            latencies: dict[str, list[float]] = {"capture": [], "gateway": [], "interactions": []}
            for n in range(6):
                event = {"id": f"e{n}", "messages": [{"role": "user", "content": "q"}], "response": "a"}
                latencies["capture"].append(
                    _timed(lambda e=event: http.post("/api/capture/interactions", json={"interactions": [e]}))
                )
                latencies["gateway"].append(_timed(lambda: http.post("/v1/chat/completions", json=chat)))
                latencies["interactions"].append(_timed(lambda: http.get("/api/interactions", params={"limit": 10})))
                time.sleep(0.5)
            assert {name: max(values) for name, values in latencies.items()} == pytest.approx(
                {name: 0.5 for name in latencies}, abs=0.5
            ), latencies  # every call within 1 s
            started = time.perf_counter()
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            server.proc.wait(15)
            stopped_in = time.perf_counter() - started
        assert stopped_in <= 5.0, f"SIGTERM took {stopped_in:.1f} s"
        assert flood.statuses and all(status in (400, 429, 503) for status in flood.statuses), set(flood.statuses)
        assert 400 in flood.statuses  # queries hit their time limit, they did not run on
    finally:
        server.stop()


def test_client_hang_up_cancels_its_query(tmp_path: Path) -> None:
    server, viewer = _serve(tmp_path / "proj", {"POSTTRAIN_SQL_MAX_CONCURRENT": "1"})
    try:
        # an admin's query may run 60 s; this client leaves after 1 s
        with server.http() as admin, pytest.raises(httpx.ReadTimeout):
            admin.post("/api/sql", json={"sql": SLOW}, timeout=1.0)
        started = time.perf_counter()
        with server.http(viewer) as http:
            reply = http.post("/api/sql", json={"sql": "SELECT 42"})
        assert reply.status_code == 200, reply.text  # the one slot came free: the hung-up query was interrupted
        assert time.perf_counter() - started < 2.5
    finally:
        server.stop()


def test_slow_query_stops_at_its_time_limit(tmp_path: Path) -> None:
    server, viewer = _serve(tmp_path / "proj", {"POSTTRAIN_SQL_TIMEOUT_SECONDS": "1"})
    try:
        started = time.perf_counter()
        with server.http(viewer) as http:
            reply = http.post("/api/sql", json={"sql": SLOW})
        assert reply.status_code == 400 and reply.json()["error"]["field"] == "sql"
        assert "past its 1 s limit" in reply.json()["error"]["message"]
        assert time.perf_counter() - started < 3.0
    finally:
        server.stop()
