"""The console's pages on a warehouse of 1,000,000 interactions: p95 page time, target <= 300 ms each.

    /work/main/.venv/bin/python benchmarks/console.py [--quick] [--rows N] [--loads N]

The warehouse is the curation benchmark's (``curation.generate``: ``rows`` interactions over 11
days of timestamps, four cohorts' worth of users, a thumb on nine in ten). A real ``posttrain
serve`` subprocess serves it; one browser-like client signs in at /ui/login with the admin key and
loads each page ``loads`` times in turn (after one warm-up load each), timing the whole HTTP
request (server-side rendering included, charts drawn by matplotlib). Pages timed:

- the interactions list (first page, 50 rows), the list filtered by cohort and by a feedback kind,
  its second page (the cursor), and a text search;
- an interaction's page (a different interaction each load, so nothing is cached);
- the overview.

Baseline of the same run: ``GET /api/interactions?limit=50`` (the JSON API's listing of the same
rows). It reports; it never fails.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from build_datasets import load
from harness import Figure, Server, percentile, print_header, print_table, verdict

import posttrain
from curation import generate
from posttrain import keys

TARGET_MS = 300.0


def sign_in(url: str, key: str) -> httpx.Client:
    """Return a client holding a console session of ``key`` (signed in through the form, as a browser does)."""
    client = httpx.Client(base_url=url, timeout=120, follow_redirects=False)
    form = client.get("/ui/login").text
    token = re.search(r'name="csrf" value="([^"]+)"', form)
    assert token is not None, "the sign-in form has no CSRF token"
    reply = client.post("/ui/login", data={"key": key, "csrf": token.group(1)})
    assert reply.status_code == 303, reply.text[:500]
    return client


def timed(client: httpx.Client, paths: list[str], loads: int, **kwargs: object) -> list[float]:
    """Load ``paths`` in turn ``loads`` times (after one warm-up each); return the times in ms, sorted."""
    for path in dict.fromkeys(paths):
        reply = client.get(path, **kwargs)  # type: ignore[arg-type]
        assert reply.status_code == 200, f"{path}: {reply.status_code} {reply.text[:300]}"
    times = []
    for i in range(loads):
        path = paths[i % len(paths)]
        started = time.perf_counter()
        reply = client.get(path, **kwargs)  # type: ignore[arg-type]
        times.append((time.perf_counter() - started) * 1000)
        assert reply.status_code == 200, f"{path}: {reply.status_code} {reply.text[:300]}"
    return sorted(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run for the smoke test")
    parser.add_argument("--rows", type=int, help="interactions (default 1,000,000; quick 20,000)")
    parser.add_argument("--loads", type=int, help="loads per page (default 40; quick 5)")
    args = parser.parse_args()
    rows = args.rows or (20_000 if args.quick else 1_000_000)
    loads = args.loads or (5 if args.quick else 40)
    with tempfile.TemporaryDirectory(prefix="posttrain-bench-") as tmp:
        root = Path(tmp) / "project"
        started = time.perf_counter()
        tables, _ = generate(rows)
        project = posttrain.init_project(root)
        admin = keys.create_key(project, "admin", name="bench").key
        load(project, tables)
        del tables
        project.close()
        setup_s = time.perf_counter() - started
        print_header("posttrain console: page times", [
            ("warehouse", f"{rows:,} interactions, their thumbs"),
            ("setup", f"generated and loaded in {setup_s:.1f} s"),
            ("loads", f"{loads} per page after one warm-up, one client, sequential"),
        ])  # fmt: skip
        with Server(root, admin) as server:
            api = httpx.Client(base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {admin}"})
            baseline = timed(api, ["/api/interactions?limit=50"], loads)
            api.close()
            client = sign_in(server.url, admin)
            first = client.get("/ui/interactions").text
            cursor = re.search(r'href="(/ui/interactions\?[^"]*cursor=[^"]+)"', first)
            second = cursor.group(1).replace("&amp;", "&") if cursor else "/ui/interactions"
            step = max(rows // (loads + 1), 1)
            ids = [f"/ui/interactions/i{(k * step):08d}" for k in range(loads + 1)]
            pages = {
                "interactions list": ["/ui/interactions"],
                "interactions, cohort=minor": ["/ui/interactions?cohort=minor"],
                "interactions, feedback=thumb": ["/ui/interactions?feedback=thumb"],
                "interactions, next page": [second],
                "interactions, text search": ["/ui/interactions?q=refund"],
                "an interaction's page": ids,
                "overview": ["/ui/overview"],
            }
            measured = {name: timed(client, paths, loads) for name, paths in pages.items()}
            client.close()
    base_p95 = percentile(baseline, 95)
    figures = [Figure("GET /api/interactions?limit=50 (baseline)", base_p95, "ms p95")]
    for name, times in measured.items():
        p95 = percentile(times, 95)
        figures.append(
            Figure(
                f"{name} (median {statistics.median(times):.0f} ms)",
                p95,
                "ms p95",
                f"API {base_p95:.0f} ms",
                f"<= {TARGET_MS:.0f} ms",
                verdict(p95, TARGET_MS, higher_is_better=False),
            )  # fmt: skip
        )
    print_table(figures)


if __name__ == "__main__":
    main()
