"""Added latency and throughput of the OpenAI-compatible gateway over calling its upstream directly.

    /work/main/.venv/bin/python benchmarks/gateway.py [--quick]

A minimal stub upstream (raw asyncio HTTP/1.1, keep-alive, one fixed ``chat.completion`` with
usage) runs in its own process on 127.0.0.1; a real ``posttrain serve`` on a fresh project
forwards the model ``stub-fast`` to it. In one run:

(a) latency, sequential: the same chat request posted N times straight to the stub and N times
    through ``POST /v1/chat/completions``, one keep-alive ``httpx.Client`` each, interleaved in
    rounds so both see the same machine load; overhead = gateway p50 - direct p50 (p99 likewise);
(b) throughput: a fixed number of requests from client processes each holding several keep-alive
    connections (a raw asyncio HTTP/1.1 load generator, so the clients cost little of the shared
    cores), through the gateway and, for reference, straight to the stub;
(c) every gateway request logged: the ``interactions`` rows, counted through ``/api/sql`` once
    the server's background writer has committed them.

It reports figures beside their baseline and target; it never fails on a missed target (it exits
non-zero only when something errs: a request fails, a process does not start).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from harness import Figure, Server, init_project, percentile, print_header, print_table, process_cpu_seconds, verdict

MODEL = "stub-fast"
TARGET_P50_OVERHEAD_MS = 2.0
TARGET_RATE = 1_000  # req/s through the gateway, 2 cores
STUB_KEY = "sk-stub-bench"

REQUEST = {
    "model": MODEL,
    "messages": [
        {"role": "system", "content": "You are a concise support assistant for an online shop."},
        {"role": "user", "content": "My order 48213 has not arrived after ten days. Can I get a refund?"},
    ],
    "temperature": 0.7,
    "max_tokens": 128,
    "user": "bench-user",
}
REPLY = {
    "id": "chatcmpl-stub",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "I'm sorry your order is late. I have opened a refund request; expect it in 3-5 days.",
            },
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 42, "completion_tokens": 24, "total_tokens": 66},
}


# --- the stub upstream (its own process) ----------------------------------------------------------


def _response(status: bytes, body: bytes) -> bytes:
    head = b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
    return head + str(len(body)).encode() + b"\r\n\r\n" + body


class _StubProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, pipelining-safe: answer each complete request from the buffer."""

    served = 0
    ok = _response(b"200 OK", orjson.dumps(REPLY))
    missing = _response(b"404 Not Found", b'{"error": {"message": "not found"}}')

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            line = head.split(b"\r\n", 1)[0]
            if line.startswith(b"POST /v1/chat/completions "):
                _StubProtocol.served += 1
                self.transport.write(self.ok)
            elif line.startswith(b"GET /served "):
                self.transport.write(_response(b"200 OK", str(_StubProtocol.served).encode()))
            else:
                self.transport.write(self.missing)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()  # type: ignore[no-any-return]
    except ImportError:
        return asyncio.new_event_loop()


def stub_upstream(ready: Any) -> None:
    """Serve the stub on a free port of 127.0.0.1 until terminated; put the port on ``ready``."""
    loop = _new_loop()
    server = loop.run_until_complete(loop.create_server(_StubProtocol, "127.0.0.1", 0, backlog=1024))
    ready.put(server.sockets[0].getsockname()[1])
    loop.run_forever()


# --- the load generator (client processes) --------------------------------------------------------


async def _connection(
    port: int, request: bytes, todo: list[int], latencies: list[float], tally: dict[str, int], deadline: float
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    clock = time.perf_counter
    try:
        while todo and time.monotonic() < deadline:
            todo.pop()
            started = clock()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(clock() - started)
            if head[9:12] != b"200":
                tally["errors"] += 1
    finally:
        writer.close()


async def _load(port: int, request: bytes, n: int, conns: int, seconds: float, barrier: Any) -> dict[str, Any]:
    todo, latencies, tally = list(range(n)), [], {"errors": 0}
    await asyncio.to_thread(barrier.wait)
    cpu0, t0 = time.process_time(), time.monotonic()
    deadline = t0 + seconds
    await asyncio.gather(*(_connection(port, request, todo, latencies, tally, deadline) for _ in range(conns)))
    t1 = time.monotonic()
    return {"t0": t0, "t1": t1, "cpu": time.process_time() - cpu0, "latencies": latencies, **tally}


def load_process(port: int, request: bytes, n: int, conns: int, seconds: float, barrier: Any, out: Any) -> None:
    """One client process: ``conns`` keep-alive connections share ``n`` requests (at most ``seconds``); report."""
    loop = _new_loop()
    try:
        out.put(loop.run_until_complete(_load(port, request, n, conns, seconds, barrier)))
    except Exception as exc:  # the parent reports it and exits non-zero
        out.put({"failed": f"{type(exc).__name__}: {exc}"})
    finally:
        loop.close()


def raw_request(path: str, host: str, body: bytes, headers: dict[str, str]) -> bytes:
    """Return one HTTP/1.1 keep-alive POST as bytes."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Sizes:
    latency: int  # sequential requests each way
    rounds: int  # the latency requests are split into this many interleaved rounds
    load: int  # throughput requests each way
    processes: int
    conns: int  # per client process
    max_seconds: float  # a throughput run stops early past this, so a slow gateway cannot stall the run
    warmup: int


def throughput(port: int, request: bytes, sizes: Sizes, cpu_pids: dict[str, int]) -> dict[str, Any]:
    """Send ``sizes.load`` requests from the client processes; return req/s, latency and CPU use."""
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(sizes.processes + 1), ctx.Queue()
    shares = [sizes.load // sizes.processes + (w < sizes.load % sizes.processes) for w in range(sizes.processes)]
    procs = [
        ctx.Process(target=load_process, args=(port, request, share, sizes.conns, sizes.max_seconds, barrier, out))
        for share in shares
    ]
    for p in procs:
        p.start()
    barrier.wait(timeout=60)
    cpu0 = {name: process_cpu_seconds(pid) for name, pid in cpu_pids.items()}
    reports = [out.get(timeout=600) for _ in procs]
    cpu = {name: process_cpu_seconds(pid) - cpu0[name] for name, pid in cpu_pids.items()}
    for p in procs:
        p.join()
    failed = [r["failed"] for r in reports if "failed" in r]
    if failed:
        raise RuntimeError(f"a client process failed: {failed[0]}")
    seconds = max(r["t1"] for r in reports) - min(r["t0"] for r in reports)
    latencies = sorted(x for r in reports for x in r["latencies"])
    return {
        "seconds": seconds,
        "done": len(latencies),
        "rate": len(latencies) / seconds,
        "errors": sum(r["errors"] for r in reports),
        "p50_ms": 1000 * (percentile(latencies, 50) or 0),
        "p99_ms": 1000 * (percentile(latencies, 99) or 0),
        "client_cores": sum(r["cpu"] for r in reports) / seconds,
        **{f"{name}_cores": c / seconds for name, c in cpu.items()},
    }


# --- the run ---------------------------------------------------------------------------------------


def latency(direct: httpx.Client, gateway: httpx.Client, body: bytes, sizes: Sizes) -> dict[str, Any]:
    """Post ``body`` sequentially to both, interleaved in rounds; return sorted latencies in ms."""
    times: dict[str, list[float]] = {"direct": [], "gateway": []}
    errors = 0
    per_round = max(1, sizes.latency // sizes.rounds)
    clock = time.perf_counter
    for r in range(sizes.rounds):
        order = [("direct", direct), ("gateway", gateway)]
        for name, client in order if r % 2 == 0 else order[::-1]:
            for _ in range(per_round):
                started = clock()
                reply = client.post("/v1/chat/completions", content=body)
                times[name].append(1000 * (clock() - started))
                errors += reply.status_code != 200
    return {name: sorted(values) for name, values in times.items()} | {"errors": errors}


def wait_logged(server: Server, expected: int, timeout: float = 60.0) -> tuple[int, float]:
    """Return the interactions stored once ``expected`` are there (or the count stops growing)."""
    started, last, still = time.monotonic(), -1, 0
    while time.monotonic() - started < timeout:
        stored = server.count()
        if stored >= expected:
            return stored, time.monotonic() - started
        still = still + 1 if stored == last else 0
        if still >= 20:  # unchanged for ~2 s: the rest are lost, not late
            break
        last = stored
        time.sleep(0.1)
    return server.count(), time.monotonic() - started


def run(root: Path, sizes: Sizes, warehouse: str | None = None) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    ready = ctx.Queue()
    stub = ctx.Process(target=stub_upstream, args=(ready,), daemon=True)
    stub.start()
    try:
        port = ready.get(timeout=60)
        key = init_project(root, warehouse)
        os.environ |= {
            "POSTTRAIN_GATEWAY_UPSTREAM_URL": f"http://127.0.0.1:{port}/v1",
            "POSTTRAIN_GATEWAY_UPSTREAM_MODELS": MODEL,
            "POSTTRAIN_GATEWAY_UPSTREAM_API_KEY_ENV": "POSTTRAIN_BENCH_STUB_KEY",
            "POSTTRAIN_BENCH_STUB_KEY": STUB_KEY,
        }
        with Server(root, key) as server:
            admin = {"Authorization": f"Bearer {key}"}
            made = httpx.post(f"{server.url}/api/keys", json={"role": "ingest"}, headers=admin, timeout=30)
            made.raise_for_status()
            client_key = made.json()["key"]
            body = orjson.dumps(REQUEST)
            json_header = {"Content-Type": "application/json"}
            gw_headers = json_header | {"Authorization": f"Bearer {client_key}"}
            direct_headers = json_header | {"Authorization": f"Bearer {STUB_KEY}"}
            with (
                httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=direct_headers, timeout=60) as direct,
                httpx.Client(base_url=server.url, headers=gw_headers, timeout=60) as gateway,
            ):
                for _ in range(sizes.warmup):
                    direct.post("/v1/chat/completions", content=body).raise_for_status()
                    reply = gateway.post("/v1/chat/completions", content=body)
                    if reply.status_code != 200:
                        raise RuntimeError(f"the gateway answered {reply.status_code}: {reply.text[:500]}")
                answer = reply.json()
                if answer["choices"][0]["message"]["content"] != REPLY["choices"][0]["message"]["content"]:  # type: ignore[index]
                    raise RuntimeError(f"the gateway did not relay the stub's answer: {answer}")
                lat = latency(direct, gateway, body, sizes)
            server_port = int(server.url.rsplit(":", 1)[1])
            pids = {"server": server.proc.pid, "stub": stub.pid}  # type: ignore[union-attr, dict-item]
            gw_request = raw_request("/v1/chat/completions", f"127.0.0.1:{server_port}", body, gw_headers)
            direct_request = raw_request("/v1/chat/completions", f"127.0.0.1:{port}", body, direct_headers)
            load_gateway = throughput(server_port, gw_request, sizes, pids)
            load_direct = throughput(port, direct_request, sizes, {"stub": stub.pid})  # type: ignore[dict-item]
            sent = sizes.warmup + len(lat["gateway"]) + load_gateway["done"]
            stored, waited = wait_logged(server, sent)
            bad = server.count("interactions WHERE source <> 'gateway' OR model <> 'stub-fast'")
        served = int(httpx.get(f"http://127.0.0.1:{port}/served", timeout=10).text)
    finally:
        stub.terminate()
        stub.join(10)
    return {
        "latency": lat,
        "gateway_load": load_gateway,
        "direct_load": load_direct,
        "sent": sent,
        "stored": stored,
        "bad_rows": bad,
        "waited": waited,
        "stub_served": served,
        "stub_expected": 2 * sizes.warmup
        + len(lat["direct"])
        + len(lat["gateway"])
        + load_gateway["done"]
        + load_direct["done"],
    }


def _figures(res: dict[str, Any], sizes: Sizes) -> list[Figure]:
    lat, gw, dr = res["latency"], res["gateway_load"], res["direct_load"]
    p = {(name, q): percentile(lat[name], q) or 0.0 for name in ("direct", "gateway") for q in (50, 99)}
    over50 = p["gateway", 50] - p["direct", 50]
    over99 = p["gateway", 99] - p["direct", 99]
    clients = f"{sizes.processes} procs x {sizes.conns} conns"
    per_core = gw["rate"] / gw["server_cores"] if gw["server_cores"] > 0 else None
    return [
        Figure("(a) latency p50, direct to the stub", p["direct", 50], "ms"),
        Figure("(a) latency p50, through the gateway", p["gateway", 50], "ms", f"{p['direct', 50]:.3f} ms direct"),
        Figure(
            "(a) added latency p50 (gateway - direct)",
            over50,
            "ms",
            "0 ms",
            f"<= {TARGET_P50_OVERHEAD_MS:.0f} ms",
            verdict(over50, TARGET_P50_OVERHEAD_MS, higher_is_better=False),
        ),
        Figure("(a) latency p99, direct to the stub", p["direct", 99], "ms"),
        Figure("(a) latency p99, through the gateway", p["gateway", 99], "ms", f"{p['direct', 99]:.3f} ms direct"),
        Figure("(a) added latency p99 (gateway - direct)", over99, "ms", "0 ms"),
        Figure(
            f"(b) gateway throughput, {clients}",
            gw["rate"],
            "req/s",
            f"{dr['rate']:,.0f} req/s direct",
            f">= {TARGET_RATE:,} req/s",
            verdict(gw["rate"], TARGET_RATE),
        ),
        Figure(f"(b) direct-to-stub throughput, {clients}", dr["rate"], "req/s", "the stub's limit"),
        Figure("(b) gateway latency under load p50", gw["p50_ms"], "ms", f"{dr['p50_ms']:.2f} ms direct"),
        Figure("(b) gateway latency under load p99", gw["p99_ms"], "ms", f"{dr['p99_ms']:.2f} ms direct"),
        Figure("(b) server CPU while loaded", gw["server_cores"], "cores"),
        Figure("(b) gateway req/s per server core", per_core, "req/s"),
        Figure("(b) stub / client CPU while loaded", gw["stub_cores"], f"/ {gw['client_cores']:.2f} cores"),
    ]


def _checks(res: dict[str, Any], sizes: Sizes) -> list[str]:
    lat, gw, dr = res["latency"], res["gateway_load"], res["direct_load"]
    cut = f" (stopped at the {sizes.max_seconds:.0f} s limit)"
    return [
        f"(a) {len(lat['direct']):,} direct + {len(lat['gateway']):,} gateway requests, {lat['errors']} errors",
        f"(b) gateway {gw['done']:,}/{sizes.load:,} requests in {gw['seconds']:.2f} s, {gw['errors']} errors"
        f"{cut if gw['done'] < sizes.load else ''}; direct {dr['done']:,}/{sizes.load:,} in {dr['seconds']:.2f} s, "
        f"{dr['errors']} errors{cut if dr['done'] < sizes.load else ''}",
        f"(c) {res['stored']:,}/{res['sent']:,} gateway requests logged as interactions "
        f"({res['bad_rows']} with the wrong source or model; counted {res['waited']:.1f} s after the last request)",
        f"    the stub served {res['stub_served']:,} chat completions (expected {res['stub_expected']:,})",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run (< 30 s) for the smoke test")
    parser.add_argument("--latency", type=int, help="sequential requests each way (default 3,000; quick 300)")
    parser.add_argument("--load", type=int, help="throughput requests each way (default 8,000; quick 1,000)")
    parser.add_argument("--processes", type=int, default=2, help="client processes for throughput (default 2)")
    parser.add_argument("--conns", type=int, default=8, help="keep-alive connections per client process (default 8)")
    parser.add_argument(
        "--max-seconds", type=float, help="stop a throughput run early past this (default 40 s; quick 8 s)"
    )
    parser.add_argument(
        "--postgres", action="store_true",
        help="the warehouse on a throwaway PostgreSQL server on loopback (initdb + pg_ctl), not the DuckDB file",
    )  # fmt: skip
    args = parser.parse_args()
    sizes = Sizes(
        latency=args.latency or (300 if args.quick else 3_000),
        rounds=4 if args.quick else 20,
        load=args.load or (1_000 if args.quick else 8_000),
        processes=args.processes,
        conns=args.conns,
        max_seconds=args.max_seconds or (8.0 if args.quick else 40.0),
        warmup=50 if args.quick else 200,
    )
    sizes.latency -= sizes.latency % sizes.rounds
    print_header(
        "posttrain gateway: added latency and throughput over a stub upstream",
        [
            ("upstream", "stub OpenAI-compatible server, raw asyncio HTTP/1.1, own process, fixed reply"),
            (
                "latency run",
                f"{sizes.latency:,} sequential requests each way, keep-alive httpx.Client, "
                f"interleaved in {sizes.rounds} rounds, after {sizes.warmup} warm-up requests",
            ),
            (
                "throughput run",
                f"{sizes.load:,} requests each way (at most {sizes.max_seconds:.0f} s), {sizes.processes} client "
                f"processes x {sizes.conns} keep-alive connections (raw asyncio HTTP/1.1)",
            ),
        ],
    )
    with tempfile.TemporaryDirectory(prefix="posttrain-bench-") as tmp, contextlib.ExitStack() as stack:
        warehouse = None
        if args.postgres:
            from posttrain.warehouse.pg_local import LocalPostgres

            warehouse = stack.enter_context(LocalPostgres()).database("bench_gateway")
        print(f"  warehouse: {'PostgreSQL (loopback)' if warehouse else 'DuckDB (the project file)'}\n")
        res = run(Path(tmp) / "gateway", sizes, warehouse)
    print_table(_figures(res, sizes))
    for note in _checks(res, sizes):
        print(f"  {note}")
    failed = res["latency"]["errors"] + res["gateway_load"]["errors"] + res["direct_load"]["errors"]
    if failed:
        print(f"\n  ERROR: {failed} requests failed")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
