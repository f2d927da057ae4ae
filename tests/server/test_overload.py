"""Overload: many clients pushing large batches at once get 429/503, the server's memory stays
bounded, and every acknowledged event is stored exactly once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import httpx
import psutil
import pytest

from conftest import LiveServer
from posttrain import keys
from posttrain.project import init_project

IN_FLIGHT = 4
BACKLOG = 4000
BATCH = 2000  # events of ~1 KB: ~2 MB a request


@pytest.mark.slow
def test_overload_keeps_memory_bounded_and_loses_no_ack(tmp_path: Path) -> None:
    proj = init_project(tmp_path / "p")
    admin = keys.create_key(proj, "admin").key
    proj.close()
    env = {
        "POSTTRAIN_SERVER_MAX_REQUESTS_IN_FLIGHT": str(IN_FLIGHT),
        "POSTTRAIN_CAPTURE_MAX_BACKLOG_EVENTS": str(BACKLOG),
    }
    server = LiveServer(root=proj.root, admin_key=admin, env=env).start()
    assert server.proc is not None
    process = psutil.Process(server.proc.pid)
    baseline = process.memory_info().rss
    peak, stop = [baseline], threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            peak.append(process.memory_info().rss)

    def push(worker: int) -> tuple[set[str], list[int]]:
        acked, codes = set(), []
        with server.http() as http:
            for round_ in range(6):
                ids = [f"w{worker}-r{round_}-{i}" for i in range(BATCH)]
                events = [{"id": i, "messages": [{"role": "user", "content": "x" * 900}]} for i in ids]
                try:
                    response = http.post("/api/capture/interactions", json={"interactions": events})
                except httpx.TransportError:
                    codes.append(0)
                    continue
                codes.append(response.status_code)
                if response.status_code == 200:
                    acked.update(ids)
        return acked, codes

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(16) as pool:
            outcomes = list(pool.map(push, range(16)))
    finally:
        stop.set()
        watcher.join()
    acked = set().union(*(a for a, _ in outcomes))
    codes = [c for _, cs in outcomes for c in cs]
    server.stop()
    con = duckdb.connect(str(proj.warehouse_path), read_only=True)
    total, distinct = con.execute("SELECT count(*), count(DISTINCT id) FROM interactions").fetchone()  # type: ignore[misc]
    stored = {r[0] for r in con.execute("SELECT id FROM interactions").fetchall()}
    con.close()
    assert {429, 503} & set(codes), f"no overload answer in {sorted(set(codes))}"
    assert 200 in codes
    assert acked <= stored and total == distinct
    grown = (max(peak) - baseline) / 2**20
    # 16 clients x 2 MB bodies, but at most 4 requests in flight and 4,000 events queued
    print(f"overload: codes={sorted(set(codes))} acked={len(acked)} stored={total} grown={grown:.0f} MiB")
    assert grown < 600, f"server grew {grown:.0f} MiB under overload ({time.monotonic() - started:.1f} s)"
