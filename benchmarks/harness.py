"""What every benchmark needs: machine facts, a real ``posttrain serve`` subprocess, a figures table."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow
import pydantic

import posttrain


def machine_facts() -> list[tuple[str, str]]:
    """Return the facts a reader needs to compare figures between machines."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        ("cores", f"{usable} usable ({os.cpu_count()} online), {cpu}"),
        ("python", f"{platform.python_implementation()} {platform.python_version()} on {platform.system()}"),
        ("duckdb", duckdb.__version__),
        ("pyarrow / pydantic", f"{pyarrow.__version__} / {pydantic.VERSION}"),
        ("posttrain", posttrain.__version__),
        (
            "load average",
            "{:.2f} {:.2f} {:.2f} (1/5/15 min at start; other work skews figures)".format(*os.getloadavg()),
        ),
    ]


def print_header(title: str, settings: list[tuple[str, str]]) -> None:
    """Print the benchmark's title, the machine facts and the run's settings."""
    print(f"\n== {title} ==")
    for name, value in machine_facts() + settings:
        print(f"  {name:<20} {value}")
    print()


@dataclass
class Figure:
    """One measured figure with what it is compared against."""

    name: str
    value: float | None
    unit: str
    baseline: str = ""
    target: str = ""
    verdict: str = ""


def fmt(value: float | None, unit: str) -> str:
    """Format a figure for the table: thousands separators, sensible decimals."""
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:,.2f} {unit}"


def verdict(value: float | None, target: float, *, higher_is_better: bool = True) -> str:
    """Return 'meets' or 'MISSES' (the benchmark reports; it never fails)."""
    if value is None:
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "meets" if ok else "MISSES"


def print_table(figures: list[Figure]) -> None:
    """Print figures as an aligned table: measured, baseline, target, verdict."""
    header = ("figure", "measured", "baseline", "target", "")
    rows = [(f.name, fmt(f.value, f.unit), f.baseline, f.target, f.verdict) for f in figures]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print(line)
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    print()


def init_project(root: Path, warehouse: str | None = None) -> str:
    """Create a project with ``posttrain init DIR --json`` (``--warehouse URL`` if given); return its admin key
    (None when it joined a PostgreSQL warehouse that already had one)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "posttrain",
            "init",
            str(root),
            "--json",
            *(["--warehouse", warehouse] if warehouse else []),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)["admin_key"]  # type: ignore[no-any-return]


@dataclass
class Server:
    """A real ``posttrain serve --port 0`` subprocess on 127.0.0.1."""

    root: Path
    admin_key: str
    url: str = ""
    proc: subprocess.Popen[bytes] | None = None
    _log: Any = field(default=None, repr=False)

    def start(self, timeout: float = 60.0) -> Server:
        server_file = self.root / ".posttrain" / "server.json"
        server_file.unlink(missing_ok=True)
        self._log = (self.root / "serve.log").open("wb")
        cmd = [
            sys.executable,
            "-m",
            "posttrain",
            "serve",
            "--project",
            str(self.root),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"posttrain serve exited:\n{(self.root / 'serve.log').read_text()}")
            if self._healthy(server_file):
                return self
            time.sleep(0.05)
        self.stop()
        log = (self.root / "serve.log").read_text()
        raise RuntimeError(f"posttrain serve did not answer /health in {timeout:.0f} s:\n{log}")

    def _healthy(self, server_file: Path) -> bool:
        try:
            self.url = json.loads(server_file.read_text())["url"]
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except (FileNotFoundError, json.JSONDecodeError, KeyError, httpx.HTTPError):
            return False

    def count(self, table: str = "interactions") -> int:
        """Return how many rows ``table`` holds, through ``POST /api/sql``."""
        headers = {"Authorization": f"Bearer {self.admin_key}"}
        body = {"sql": f"SELECT count(*) FROM {table}"}
        r = httpx.post(f"{self.url}/api/sql", json=body, headers=headers, timeout=60)
        r.raise_for_status()
        return int(r.json()["rows"][0][0])

    def cpu_seconds(self) -> float:
        """Return the CPU time (user + system, all threads) the server has used so far."""
        assert self.proc is not None
        return process_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        """Stop with SIGINT (graceful: the writer drains, the warehouse checkpoints)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def process_cpu_seconds(pid: int) -> float:
    """Return a process's CPU time (user + system, all threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Return the ``q``-th percentile (0-100) of already sorted values, nearest rank."""
    if not sorted_values:
        return None
    rank = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]
