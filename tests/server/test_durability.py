"""Acked ⇒ durable: ``kill -9`` a real ``posttrain serve`` and check what it acknowledged.

The invariants (Jepsen-style, notes §4.3): every id acknowledged with 200/207 is stored exactly
once after any crash and restart; ids are unique; the stored count never goes down.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from conftest import LiveServer
from posttrain import keys
from posttrain.project import init_project

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")


def start_server(root: Path, warehouse: str = "duckdb") -> LiveServer:
    """Create a project with an admin key at ``root`` (on ``warehouse``: duckdb or a PostgreSQL URL) and serve it."""
    proj = init_project(root, warehouse_url=None if warehouse == "duckdb" else warehouse)
    admin = keys.create_key(proj, "admin", name="durability admin").key
    proj.close()
    return LiveServer(root=proj.root, admin_key=admin).start()


@pytest.fixture
def server(tmp_path: Path, warehouse: str) -> Iterator[LiveServer]:
    live = start_server(tmp_path / "proj", warehouse)
    yield live
    live.stop()


def interaction(event_id: str) -> dict[str, Any]:
    return {"id": event_id, "messages": [{"role": "user", "content": f"question {event_id}"}], "response": "ok"}


def send(http: httpx.Client, ids: list[str]) -> httpx.Response:
    return http.post("/api/capture/interactions", json={"interactions": [interaction(i) for i in ids]})


def acked_ids(reply: httpx.Response) -> set[str]:
    """Return the ids a reply acknowledges (stored now or before)."""
    if reply.status_code not in (200, 207):
        return set()
    return {r["id"] for r in reply.json()["results"] if r["status"] in ("created", "duplicate")}


def stored_counts(server: LiveServer) -> dict[str, int]:
    with server.http() as http:
        reply = http.post("/api/sql", json={"sql": "SELECT id, count(*) FROM interactions GROUP BY id"})
    assert reply.status_code == 200, reply.text
    return {event_id: n for event_id, n in reply.json()["rows"]}


def assert_each_stored_once(server: LiveServer, acked: set[str]) -> dict[str, int]:
    counts = stored_counts(server)
    missing = acked - set(counts)
    assert not missing, f"{len(missing)} acknowledged ids lost, e.g. {sorted(missing)[:5]}"
    assert all(n == 1 for n in counts.values()), "an id is stored twice"
    return counts


@pytest.mark.slow  # one of the slowest of the default suite; CI runs it in make test-slow
def test_acked_batches_survive_kill_9_after_each_reply(server: LiveServer) -> None:
    acked: set[str] = set()
    for round_ in range(5):
        with server.http() as http:
            for b in range(3):
                reply = send(http, [f"r{round_}-{b}-{i}" for i in range(40)])
                assert reply.status_code == 200, reply.text
                acked |= acked_ids(reply)
        server.kill()  # right after the last reply: no shutdown hook, no checkpoint
        server.start()
    assert len(assert_each_stored_once(server, acked)) == len(acked) == 5 * 3 * 40


class _Sender(threading.Thread):
    """Send fresh batches until told to stop; remember what was acked and what is unknown."""

    def __init__(self, server: LiveServer, name: str, replied: threading.Event) -> None:
        super().__init__(daemon=True)
        self.server, self.name_, self.replied = server, name, replied
        self.stop = threading.Event()
        self.acked: set[str] = set()
        self.unknown: list[list[str]] = []  # batches sent without a reply: stored or not

    def run(self) -> None:
        with self.server.http() as http:
            n = 0
            while not self.stop.is_set():
                ids = [f"{self.name_}-{n}-{i}" for i in range(25)]
                n += 1
                try:
                    reply = send(http, ids)
                except httpx.HTTPError:
                    self.unknown.append(ids)
                    return
                if reply.status_code == 200:
                    self.acked |= acked_ids(reply)
                    self.replied.set()
                else:
                    self.unknown.append(ids)  # 503 while shutting down: retried below


@pytest.mark.parametrize("crash", ["kill -9", "graceful stop"])
@pytest.mark.slow  # one of the slowest of the default suite; CI runs it in make test-slow
def test_acked_batches_survive_a_crash_under_load(server: LiveServer, crash: str) -> None:
    acked: set[str] = set()
    unknown: list[list[str]] = []
    for round_ in range(3):
        replied = threading.Event()
        senders = [_Sender(server, f"c{round_}s{s}", replied) for s in range(4)]
        for sender in senders:
            sender.start()
        for _ in range(8):  # let a few batches through, then crash right after a reply
            assert replied.wait(30)
            replied.clear()
        server.kill() if crash == "kill -9" else server.stop()  # while other batches are in flight
        for sender in senders:
            sender.stop.set()
            sender.join(30)
            acked |= sender.acked
            unknown += sender.unknown
        server.start()
        assert_each_stored_once(server, acked)
    with server.http() as http:  # the client's retry of every unanswered batch adds each id once
        for ids in unknown:
            reply = send(http, ids)
            assert set(r["status"] for r in reply.json()["results"]) <= {"created", "duplicate"}
            acked |= acked_ids(reply)
    assert set(assert_each_stored_once(server, acked)) == acked


# --- Hypothesis histories ------------------------------------------------------------------


class CaptureHistory(RuleBasedStateMachine):
    """Random send / retry / crash / restart histories against one real server."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="posttrain-history-"))
        self.server = start_server(self.dir / "proj")
        self.up = True
        self.sent: list[list[str]] = []
        self.acked: set[str] = set()
        self.stored = 0

    def _send(self, ids: list[str]) -> list[str]:
        with self.server.http() as http:
            reply = send(http, ids)
        assert reply.status_code == 200, reply.text
        results = reply.json()["results"]
        assert [r["id"] for r in results] == ids
        statuses = [r["status"] for r in results]
        assert all(s == "duplicate" for i, s in zip(ids, statuses, strict=True) if i in self.acked)
        self.acked |= set(ids)
        return statuses

    @precondition(lambda self: self.up)
    @rule(size=st.integers(1, 30))
    def send_new_batch(self, size: int) -> None:
        ids = [f"b{len(self.sent)}-{i}" for i in range(size)]
        self.sent.append(ids)
        assert self._send(ids) == ["created"] * size

    @precondition(lambda self: self.up and self.sent)
    @rule(data=st.data())
    def retry_an_earlier_batch(self, data: st.DataObject) -> None:
        """Resend a batch: acked ids come back duplicate; unacked ones created (or duplicate if
        the lost reply's commit happened)."""
        assert set(self._send(data.draw(st.sampled_from(self.sent), label="batch"))) <= {"created", "duplicate"}

    @precondition(lambda self: self.up)
    @rule(size=st.integers(1, 200), delay=st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.2]))
    def send_then_kill_9(self, size: int, delay: float) -> None:
        """Crash while a batch may be in flight: it is stored or not, but never acked and lost."""
        ids = [f"b{len(self.sent)}-{i}" for i in range(size)]
        self.sent.append(ids)
        replies: list[httpx.Response] = []

        def post() -> None:
            try:
                with self.server.http() as http:
                    replies.append(send(http, ids))
            except httpx.HTTPError:
                pass

        thread = threading.Thread(target=post)
        thread.start()
        time.sleep(delay)
        self.server.kill()
        thread.join(30)
        self.up = False
        for reply in replies:
            self.acked |= acked_ids(reply)

    @precondition(lambda self: self.up)
    @rule()
    def kill_9(self) -> None:
        self.server.kill()
        self.up = False

    @precondition(lambda self: not self.up)
    @rule()
    def restart(self) -> None:
        self.server.start()
        self.up = True

    @precondition(lambda self: self.up)
    @rule()
    def stop_and_start(self) -> None:
        self.server.stop()
        self.server.start()

    @invariant()
    def acked_are_stored_once_and_count_grows(self) -> None:
        if not self.up:
            return
        counts = assert_each_stored_once(self.server, self.acked)
        assert set(counts) <= {i for batch in self.sent for i in batch}
        assert len(counts) >= self.stored, "the stored count went down"
        self.stored = len(counts)

    def teardown(self) -> None:
        if self.up:
            self.server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.mark.slow
def test_capture_histories_keep_acked_events() -> None:
    run_state_machine_as_test(
        CaptureHistory,
        settings=settings(
            max_examples=6,
            stateful_step_count=10,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


# --- the CLI while the server owns the warehouse --------------------------------------------


def posttrain(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "posttrain", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_works_through_the_running_server(live_server: LiveServer) -> None:
    with live_server.http() as http:
        assert send(http, [f"cli-{i}" for i in range(7)]).status_code == 200
    root = str(live_server.root)
    runs = {
        "sql": posttrain("sql", "SELECT count(*) AS n FROM interactions", "--project", root, "--json"),
        "list": posttrain("keys", "list", "--project", root, "--json"),
        "create": posttrain("keys", "create", "--role", "viewer", "--project", root, "--json"),
    }
    for name, run in runs.items():
        assert run.returncode == 0, f"{name}: {run.stderr}"
        assert "Traceback" not in run.stderr and "lock" not in run.stderr.lower(), run.stderr
    assert json.loads(runs["sql"].stdout) == [{"n": 7}]
    assert [k["role"] for k in json.loads(runs["list"].stdout)] == ["admin"]
    new_key = json.loads(runs["create"].stdout)["key"]
    with live_server.http(new_key) as viewer:  # created through the server: usable at once
        assert viewer.post("/api/sql", json={"sql": "SELECT 1"}).status_code == 200


def test_cli_error_through_the_server_is_one_line(live_server: LiveServer) -> None:
    run = posttrain("sql", "DELETE FROM interactions", "--project", str(live_server.root))
    assert run.returncode != 0
    assert run.stderr.startswith("error: ") and "Traceback" not in run.stderr
    assert "read-only" in run.stderr
