"""Capture throughput through a real ``posttrain serve``: HTTP batches, the SDK, and raw DuckDB.

    /work/main/.venv/bin/python benchmarks/ingest_http.py [--quick]

(a) events/s acknowledged over HTTP: batches of 500 interactions from 2 client processes, each
    with one keep-alive ``httpx.Client`` shared by a couple of threads;
(b) events/s through the SDK (``Client.log_interaction`` N times, then ``flush()``) and the
    latency of one ``log_interaction`` call;
(c) the limit: the same rows inserted straight into a fresh warehouse by DuckDB (Arrow batches
    of 500, each committed), plus what each step of the server's path costs in-process;
(d) the run of (a) on a PostgreSQL warehouse (a throwaway server on loopback, Debian's initdb and
    pg_ctl): one ``posttrain serve``, then two sharing the database, the client processes spread
    over them.

It reports figures beside their baseline and target; it never fails on a missed target.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import queue
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow as pa
from harness import Figure, Server, init_project, percentile, print_header, print_table, verdict
from workload import Workload

import posttrain
from posttrain import capture

BATCH = 500
TARGET_HTTP = 20_000  # events/s acked, 2 cores
TARGET_SDK_P50_US = 50.0


@dataclass
class Sizes:
    batches: int  # HTTP batches in all, shared by the client processes
    processes: int
    threads: int  # per client process
    sdk_events: int


def split(batches: int, processes: int) -> list[int]:
    """Return how many batches each client process sends."""
    return [batches // processes + (w < batches % processes) for w in range(processes)]


def worker_events(worker: int, batches: int) -> Iterator[list[dict[str, Any]]]:
    """Yield the batches client process ``worker`` sends (deterministic: the baseline rebuilds them)."""
    workload = Workload(seed=1000 + worker)
    for b in range(batches):
        yield workload.interactions(b * BATCH, BATCH)


def _post_all(http: httpx.Client, bodies: queue.SimpleQueue[bytes], tally: dict[str, Any]) -> None:
    lock = tally["lock"]
    while True:
        try:
            body = bodies.get_nowait()
        except queue.Empty:
            return
        while True:
            started = time.perf_counter()
            r = http.post("/api/capture/interactions", content=body)
            if r.status_code == 429:  # backlog full: honour Retry-After, as a real client does
                with lock:
                    tally["retries"] += 1
                time.sleep(float(r.headers.get("retry-after", "1")))
                continue
            elapsed = time.perf_counter() - started
            statuses = [x["status"] for x in orjson.loads(r.content)["results"]] if r.status_code in (200, 207) else []
            with lock:
                tally["latencies"].append(elapsed)
                tally["http_errors"] += r.status_code not in (200, 207)
                for s in statuses:
                    tally[s] = tally.get(s, 0) + 1
            break


def http_client_process(worker: int, url: str, key: str, batches: int, threads: int, barrier: Any, out: Any) -> None:
    """One client process: encode its batches, wait for the start, post them, report."""
    bodies: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    for events in worker_events(worker, batches):
        bodies.put(orjson.dumps({"interactions": events}))
    limits = httpx.Limits(max_connections=threads, max_keepalive_connections=threads)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    tally: dict[str, Any] = {"lock": threading.Lock(), "latencies": [], "retries": 0, "http_errors": 0}
    with httpx.Client(base_url=url, headers=headers, timeout=120, limits=limits) as http:
        http.get("/health")
        barrier.wait()
        cpu0, t0 = time.process_time(), time.monotonic()
        pool = [threading.Thread(target=_post_all, args=(http, bodies, tally)) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        t1 = time.monotonic()
    del tally["lock"]
    out.put({**tally, "t0": t0, "t1": t1, "cpu": time.process_time() - cpu0})


def bench_http(root: Path, sizes: Sizes, *, warehouse: str | None = None, servers: int = 1) -> dict[str, Any]:
    """(a) Start ``servers`` servers (on ``warehouse``: a PostgreSQL URL, else the project's DuckDB),
    post every batch from the client processes (spread over the servers), return the figures."""
    key = init_project(root / "s0", warehouse)
    for n in range(1, servers):
        init_project(root / f"s{n}", warehouse)  # another machine joining the same warehouse
    ctx = mp.get_context("spawn")
    per_worker = split(sizes.batches, sizes.processes)
    with contextlib.ExitStack() as stack:
        running = [stack.enter_context(Server(root / f"s{n}", key)) for n in range(servers)]
        server = running[0]
        warmup = orjson.dumps({"interactions": Workload(seed=7).interactions(0, BATCH)})
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        httpx.post(f"{server.url}/api/capture/interactions", content=warmup, headers=headers, timeout=60)
        barrier, out = ctx.Barrier(sizes.processes + 1), ctx.Queue()
        procs = [
            ctx.Process(
                target=http_client_process,
                args=(w, running[w % servers].url, key, per_worker[w], sizes.threads, barrier, out),
            )
            for w in range(sizes.processes)
        ]
        for p in procs:
            p.start()
        barrier.wait()
        server_cpu0 = sum(s.cpu_seconds() for s in running)
        reports = [out.get() for _ in procs]
        server_cpu = sum(s.cpu_seconds() for s in running) - server_cpu0
        for p in procs:
            p.join()
        stored = server.count() - BATCH
    seconds = max(r["t1"] for r in reports) - min(r["t0"] for r in reports)
    acked = sum(r.get("created", 0) + r.get("duplicate", 0) for r in reports)
    latencies = sorted(x for r in reports for x in r["latencies"])
    return {
        "seconds": seconds,
        "acked": acked,
        "stored": stored,
        "rate": acked / seconds,
        "errors": sum(r.get("error", 0) + r["http_errors"] for r in reports),
        "retries": sum(r["retries"] for r in reports),
        "p50_ms": 1000 * (percentile(latencies, 50) or 0),
        "p99_ms": 1000 * (percentile(latencies, 99) or 0),
        "server_cores": server_cpu / seconds,
        "client_cores": sum(r["cpu"] for r in reports) / seconds,
    }


def _sdk_calls(n: int) -> list[tuple[list[dict[str, Any]], str, dict[str, Any]]]:
    workload, calls = Workload(seed=2000), []
    for i in range(n):
        event = workload.interaction(i, with_id=False)
        messages, response = event.pop("messages"), event.pop("response")
        del event["timestamp"]  # the SDK stamps the time of the call
        calls.append((messages, response, event))
    return calls


def bench_sdk(root: Path, n: int) -> dict[str, Any]:
    """(b) Log ``n`` interactions through the SDK, timing each call, then flush."""
    try:
        client_class = posttrain.Client
    except (ImportError, AttributeError) as exc:
        return {"missing": f"{type(exc).__name__}: {exc}"}
    key = init_project(root)
    calls = _sdk_calls(n)
    with Server(root, key) as server:
        client = client_class(server.url, api_key=key)
        latencies: list[int] = []
        clock = time.perf_counter_ns
        cpu0, server_cpu0, started = time.process_time(), server.cpu_seconds(), time.perf_counter()
        for messages, response, fields in calls:
            t = clock()
            client.log_interaction(messages=messages, response=response, **fields)
            latencies.append(clock() - t)
        logged = time.perf_counter()
        client.flush()
        seconds = time.perf_counter() - started
        cpu, server_cpu = time.process_time() - cpu0, server.cpu_seconds() - server_cpu0
        counts = {"sent": client.sent, "failed": client.failed, "dropped": client.dropped}
        client.close()
        stored = server.count()
    latencies.sort()
    return {
        "seconds": seconds,
        "rate": n / seconds,
        "stored": stored,
        "log_seconds": logged - started,
        "p50_us": (percentile(latencies, 50) or 0) / 1000,
        "p99_us": (percentile(latencies, 99) or 0) / 1000,
        "max_us": latencies[-1] / 1000,
        **counts,
        "client_cores": cpu / seconds,
        "server_cores": server_cpu / seconds,
    }


def _rate(events: int, seconds: float) -> float:
    return events / seconds if seconds > 0 else float("inf")


class _Stopwatch:
    """Seconds spent in each named step, summed over batches."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._step, self._t = "", 0.0

    def start(self, step: str) -> None:
        now = time.perf_counter()
        if self._step:
            self.seconds[self._step] = self.seconds.get(self._step, 0.0) + now - self._t
        self._step, self._t = step, now

    def stop(self) -> None:
        self.start("")


def bench_duckdb(root: Path, sizes: Sizes) -> dict[str, Any]:
    """(c) Insert the HTTP run's rows straight into fresh warehouses; time each server step too.

    Batches are processed one at a time, as the server does, so no step pays for a heap full
    of other batches' objects.
    """
    plain, server_path = posttrain.init_project(root / "plain"), posttrain.init_project(root / "server_path")
    limits, schema, watch, events = plain.settings.capture, capture.SCHEMAS["interactions"], _Stopwatch(), 0
    cur, writer = plain.cursor(), server_path.cursor()
    try:
        for worker, count in enumerate(split(sizes.batches, sizes.processes)):
            for batch in worker_events(worker, count):
                body, events = orjson.dumps({"interactions": batch}), events + len(batch)
                watch.start("decode")
                decoded = orjson.loads(body)["interactions"]
                watch.start("validate")
                results, valid = capture.validate_events("interactions", decoded, limits, check_size=False)
                rows = [r for _, r in valid]
                watch.start("arrow")
                table = pa.Table.from_pylist(rows, schema=schema)
                watch.start("insert")
                cur.begin()
                cur.register("_batch", table)
                cur.execute("INSERT INTO interactions BY NAME SELECT * FROM _batch")
                cur.unregister("_batch")
                cur.commit()
                watch.start("commit")
                statuses = capture.commit(writer, [("interactions", rows)])[0]
                watch.start("respond")
                orjson.dumps({"results": capture.result_dicts(results, valid, statuses)})
                watch.stop()
        stored = cur.execute("SELECT count(*) FROM interactions").fetchone()[0]  # type: ignore[index]
    finally:
        plain.close()
        server_path.close()
    steps = watch.seconds
    path = steps["decode"] + steps["validate"] + steps["commit"] + steps["respond"]
    return {
        "events": events,
        "stored": stored,
        "python_path": _rate(events, path),
        **{k: _rate(events, v) for k, v in steps.items()},
    }


def _figures(http: dict[str, Any], sdk: dict[str, Any], db: dict[str, Any], sizes: Sizes) -> list[Figure]:
    limit = f"{db['insert']:,.0f} ev/s (raw DuckDB)"
    figures = [
        Figure(
            f"(a) HTTP acked, {sizes.processes} procs x {sizes.threads} threads",
            http["rate"],
            "ev/s",
            limit,
            f">= {TARGET_HTTP:,} ev/s",
            verdict(http["rate"], TARGET_HTTP),
        ),
        Figure("(a) request latency p50 (500 events)", http["p50_ms"], "ms"),
        Figure("(a) request latency p99 (500 events)", http["p99_ms"], "ms"),
        Figure("(a) server CPU while loaded", http["server_cores"], "cores"),
        Figure("(a) client CPU while loaded", http["client_cores"], "cores"),
    ]
    if "missing" in sdk:
        figures.append(Figure("(b) SDK: posttrain.Client not available", None, ""))
    else:
        figures += [
            Figure("(b) SDK log_interaction + flush", sdk["rate"], "ev/s", limit),
            Figure(
                "(b) SDK log_interaction p50",
                sdk["p50_us"],
                "us",
                "",
                f"<= {TARGET_SDK_P50_US:.0f} us",
                verdict(sdk["p50_us"], TARGET_SDK_P50_US, higher_is_better=False),
            ),
            Figure("(b) SDK log_interaction p99", sdk["p99_us"], "us"),
            Figure("(b) SDK log_interaction max", sdk["max_us"], "us"),
            Figure("(b) SDK calls alone (before flush)", sizes.sdk_events / sdk["log_seconds"], "calls/s"),
            Figure("(b) app+SDK CPU / server CPU", sdk["client_cores"], f"/ {sdk['server_cores']:.2f} cores"),
        ]
    figures += [
        Figure("(c) raw DuckDB INSERT, Arrow batches of 500", db["insert"], "ev/s", "the limit"),
        Figure("(c) in-process: orjson.loads of request bodies", db["decode"], "ev/s"),
        Figure("(c) in-process: capture.validate_events", db["validate"], "ev/s"),
        Figure("(c) in-process: pa.Table.from_pylist alone", db["arrow"], "ev/s"),
        Figure("(c) in-process: capture.commit (Arrow + INSERT)", db["commit"], "ev/s"),
        Figure("(c) in-process: result_dicts + orjson.dumps", db["respond"], "ev/s"),
        Figure(
            "(c) in-process: whole server path, one thread",
            db["python_path"],
            "ev/s",
            "",
            f">= {TARGET_HTTP:,} ev/s",
            verdict(db["python_path"], TARGET_HTTP),
        ),
    ]
    return figures


def _checks(http: dict[str, Any], sdk: dict[str, Any], db: dict[str, Any], sizes: Sizes) -> list[str]:
    sent = sizes.batches * BATCH
    notes = [
        f"(a) {http['acked']:,}/{sent:,} acked, {http['stored']:,} stored, "
        f"{http['errors']} errors, {http['retries']} 429 retries, {http['seconds']:.2f} s"
    ]
    if "missing" in sdk:
        notes.append(f"(b) skipped: {sdk['missing']}")
    else:
        notes.append(
            f"(b) {sizes.sdk_events:,} logged: {sdk['sent']:,} sent, {sdk['failed']} failed, "
            f"{sdk['dropped']} dropped; {sdk['stored']:,} stored after flush, {sdk['seconds']:.2f} s"
        )
    notes.append(f"(c) {db['stored']:,}/{db['events']:,} rows stored by the raw insert")
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run (< 30 s) for the smoke test")
    parser.add_argument("--batches", type=int, help="HTTP batches of 500 in all (default 200; quick 20)")
    parser.add_argument("--threads", type=int, default=2, help="threads per client process (default 2)")
    parser.add_argument("--sdk-events", type=int, help="events logged through the SDK (default 50,000; quick 5,000)")
    parser.add_argument("--no-postgres", action="store_true", help="skip (d), the PostgreSQL warehouse runs")
    args = parser.parse_args()
    sizes = Sizes(
        batches=args.batches or (20 if args.quick else 200),
        processes=2,
        threads=args.threads,
        sdk_events=args.sdk_events or (5_000 if args.quick else 50_000),
    )
    print_header(
        "posttrain capture: HTTP ingest",
        [
            (
                "HTTP run",
                f"{sizes.batches} batches x {BATCH} events, {sizes.processes} client processes "
                f"x {sizes.threads} threads, keep-alive httpx",
            ),
            ("SDK run", f"{sizes.sdk_events:,} log_interaction calls, then flush()"),
        ],
    )
    with tempfile.TemporaryDirectory(prefix="posttrain-bench-") as tmp:
        http = bench_http(Path(tmp) / "http", sizes)
        sdk = bench_sdk(Path(tmp) / "sdk", sizes.sdk_events)
        db = bench_duckdb(Path(tmp) / "duckdb", sizes)
        pg = {} if args.no_postgres else bench_postgres(Path(tmp) / "pg", sizes)
    print_table(_figures(http, sdk, db, sizes) + _pg_figures(pg, http, sizes))
    for note in _checks(http, sdk, db, sizes) + _pg_checks(pg, sizes):
        print(f"  {note}")


def bench_postgres(root: Path, sizes: Sizes) -> dict[str, dict[str, Any]]:
    """(d) The HTTP run of (a) against a PostgreSQL warehouse: one server, then two sharing it."""
    from posttrain.warehouse.pg_local import LocalPostgres

    out = {}
    with LocalPostgres() as pg:
        for servers in (1, 2):
            url = pg.database(f"bench_{servers}")
            out[f"{servers}"] = bench_http(root / f"n{servers}", sizes, warehouse=url, servers=servers)
    return out


def _pg_figures(pg: dict[str, dict[str, Any]], duck: dict[str, Any], sizes: Sizes) -> list[Figure]:
    if not pg:
        return []
    baseline = f"{duck['rate']:,.0f} ev/s (DuckDB, 1 server)"
    figures = []
    for servers, run in pg.items():
        label = f"(d) PostgreSQL, {servers} server{'s' if servers != '1' else ''}, HTTP acked"
        figures += [
            Figure(label, run["rate"], "ev/s", baseline),
            Figure(f"(d) PostgreSQL, {servers} server(s): request p50 (500 events)", run["p50_ms"], "ms"),
            Figure(f"(d) PostgreSQL, {servers} server(s): servers' CPU while loaded", run["server_cores"], "cores"),
        ]
    return figures


def _pg_checks(pg: dict[str, dict[str, Any]], sizes: Sizes) -> list[str]:
    sent = sizes.batches * BATCH
    return [
        f"(d) PostgreSQL, {servers} server(s): {run['acked']:,}/{sent:,} acked, {run['stored']:,} stored, "
        f"{run['errors']} errors, {run['seconds']:.2f} s"
        for servers, run in pg.items()
    ]


if __name__ == "__main__":
    main()
