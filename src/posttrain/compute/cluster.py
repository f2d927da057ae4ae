"""A Ray cluster on this machine's loopback, made of real ``ray start`` processes (tests and benchmarks).

``LocalCluster(workers=2).start()`` runs ``ray start --head --block`` and one ``ray start --address
… --block`` per worker node, each in its own process group, on 127.0.0.1 and a free port;
``kill_worker(i)`` kills one node's processes (the test of a worker lost mid-job); ``stop()`` kills
them all. Nothing else on the machine is touched (``ray stop`` would stop every Ray node here).

The cluster uses Ray's token authentication with a token of its own (``RAY_AUTH_TOKEN`` when this
process already has one), set in this process's environment so that it and the processes it starts
connect as clients. Ray reads the mode once, when a process first imports it: a process that imports
Ray before ``start()`` sets ``os.environ.update(auth_environment())`` first (the tests' conftest
does). Leaving the mode to Ray's default does not work: since Ray 2.5x a head started while
``~/.ray/auth_token`` exists turns token mode on, and a worker node started the same way does not,
so it cannot join (``InvalidAuthToken``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from posttrain.errors import Unavailable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ray_cli() -> str:
    found = Path(sys.executable).with_name("ray")
    return str(found) if found.exists() else (shutil.which("ray") or "ray")


class LocalCluster:
    """A head node and ``workers`` worker nodes of ``cpus`` CPUs each (the head gets ``head_cpus``)."""

    def __init__(self, workers: int = 1, *, cpus: int = 1, head_cpus: int = 1, memory_gb: float = 2.0) -> None:
        self.workers, self.cpus, self.head_cpus = workers, cpus, head_cpus
        self.object_store = int(memory_gb * 1024**3 / 4)
        self.port = free_port()
        self.temp = Path(tempfile.mkdtemp(prefix="pt-ray-"))
        self.head: subprocess.Popen[bytes] | None = None
        self.nodes: list[subprocess.Popen[bytes]] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, **auth_environment(), "RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_IMPORT_WARNING": "1"}
        out = (self.temp / log).open("wb")
        return subprocess.Popen(
            [_ray_cli(), "start", *args, "--block", "--disable-usage-stats", "--node-ip-address", "127.0.0.1",
             "--object-store-memory", str(self.object_store)],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip

    def start(self, timeout: float = 180.0) -> LocalCluster:
        """Start the head and the workers; return once every node is alive."""
        os.environ.update(auth_environment())  # this process and its children are the cluster's clients
        self.head = self._start(
            ["--head", "--port", str(self.port), "--num-cpus", str(self.head_cpus), "--include-dashboard=false",
             "--temp-dir", str(self.temp / "ray")], "head.log",
        )  # fmt: skip
        self._wait_port(timeout)
        for index in range(self.workers):  # one at a time: a raylet that is not up in 30 s gives up
            for attempt in range(3):
                if attempt:
                    self.nodes.pop()
                self.add_worker(index)
                if self._joined(2 + index, timeout):
                    break
            else:
                raise Unavailable(
                    f"worker node {index} did not join the Ray cluster at {self.address} in 3 tries ({self._logs()})"
                )
        return self

    def _joined(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` nodes are alive; False when the newest node's ``ray start`` exited first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.alive_nodes() >= count:
                return True
            if self.nodes[-1].poll() is not None:
                return False
            time.sleep(0.5)
        return False

    def add_worker(self, index: int | None = None) -> None:
        """Start one more worker node."""
        index = len(self.nodes) if index is None else index
        self.nodes.append(self._start(["--address", self.address, "--num-cpus", str(self.cpus)], f"worker-{index}.log"))

    def _wait_port(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.head is not None and self.head.poll() is not None:
                raise Unavailable(f"ray start --head exited: {self.log('head.log')[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise Unavailable(f"the Ray head did not listen on {self.address} within {timeout:.0f} s")

    def alive_nodes(self) -> int:
        """Return how many nodes the cluster counts alive (asks the head through the ``ray`` CLI)."""
        done = subprocess.run(
            [sys.executable, "-c", _COUNT, self.address], capture_output=True, text=True, timeout=60,
            env={**os.environ, **auth_environment(), "RAY_USAGE_STATS_ENABLED": "0"},
        )  # fmt: skip
        return int(done.stdout.strip() or 0) if done.returncode == 0 else 0

    def wait_nodes(self, count: int, timeout: float = 180.0) -> None:
        """Wait until ``count`` nodes are alive."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.alive_nodes() >= count:
                return
            time.sleep(0.5)
        raise Unavailable(
            f"the Ray cluster at {self.address} did not reach {count} nodes in {timeout:.0f} s ({self._logs()})"
        )

    def _logs(self) -> str:
        return "; ".join(f"{name}: {self.log(name)[-600:]!r}" for name in ["head.log", *self._worker_logs()])

    def _worker_logs(self) -> list[str]:
        return [f"worker-{index}.log" for index in range(len(self.nodes))]

    def log(self, name: str) -> str:
        path = self.temp / name
        return path.read_text(errors="replace") if path.exists() else ""

    def kill_worker(self, index: int = 0) -> None:
        """Kill worker node ``index`` and everything it started (SIGKILL to its process group)."""
        _kill_group(self.nodes[index], signal.SIGKILL)

    def stop(self) -> None:
        """Stop every node of this cluster and remove its temp folder."""
        for process in [*self.nodes, *([self.head] if self.head else [])]:
            _kill_group(process, signal.SIGTERM)
        for process in [*self.nodes, *([self.head] if self.head else [])]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                _kill_group(process, signal.SIGKILL)
        _kill_session_leftovers(self.temp)
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


_COUNT = """
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(sum(1 for n in ray.nodes() if n["Alive"]))
"""


def auth_environment() -> dict[str, str]:
    """The environment that makes a Ray process use token authentication with this process's token."""
    token = os.environ.get("RAY_AUTH_TOKEN") or _TOKEN
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}


_TOKEN = secrets.token_hex(32)


def _kill_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _kill_session_leftovers(temp: Path) -> None:
    """Kill processes still running from this cluster's temp folder (Ray's workers detach from their node)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a dev requirement
        return
    marker = str(temp)
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in process.info["cmdline"] or []):
                process.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
