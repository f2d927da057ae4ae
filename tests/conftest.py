"""Shared fixtures: a real project in tmp_path, the real app in-process, a real server subprocess."""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from posttrain import keys
from posttrain.compute.cluster import auth_environment
from posttrain.project import Project, init_project, open_project
from posttrain.server import create_app

# the loopback Ray clusters' token: Ray reads its auth mode once, when this process first imports it
os.environ.update(auth_environment())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run a test on every warehouse its closest ``warehouses`` mark names (a module's ``pytestmark``)."""
    mark = metafunc.definition.get_closest_marker("warehouses")
    if mark is not None and "warehouse" in metafunc.fixturenames:
        metafunc.parametrize("warehouse", list(mark.args), indirect=True)


@pytest.fixture
def warehouse(request: pytest.FixtureRequest) -> str:
    """The warehouse a test's project uses: ``duckdb`` (default) or ``postgresql`` (a fresh database)."""
    name = getattr(request, "param", "duckdb")
    if name == "postgresql":
        server = request.getfixturevalue("pg_server")
        import uuid

        return str(server.database(f"t_{uuid.uuid4().hex[:12]}"))
    return "duckdb"


@pytest.fixture
def project(tmp_path: Path, warehouse: str) -> Iterator[Project]:
    """A fresh project with a real warehouse: a DuckDB file, or a PostgreSQL database (``warehouses`` mark)."""
    proj = init_project(tmp_path / "proj", warehouse_url=None if warehouse == "duckdb" else warehouse)
    yield proj
    proj.close()


@pytest.fixture
def admin_key(project: Project) -> str:
    return keys.create_key(project, "admin", name="test admin").key


@pytest.fixture
def client(project: Project, admin_key: str) -> Iterator[TestClient]:
    """The real app in-process, authenticated as admin."""
    app = create_app(project)
    with TestClient(app, headers={"Authorization": f"Bearer {admin_key}"}) as test_client:
        yield test_client


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


@dataclass
class LiveServer:
    """A real ``posttrain serve`` subprocess on loopback."""

    root: Path
    admin_key: str
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    port: int = 0
    log: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=2000))

    def start(self, timeout: float = 30.0) -> LiveServer:
        server_file = self.root / ".posttrain" / "server.json"
        server_file.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "posttrain", "serve", "--project", str(self.root), "--port", str(self.port)]
        self.proc = subprocess.Popen(
            cmd, env={**os.environ, **self.env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        # drain stderr as it comes: a full pipe would block the server's next log line, and so the server
        self.log = collections.deque(maxlen=2000)
        reader = threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                reader.join(5)
                raise RuntimeError(f"server exited: {self.stderr()}")
            if server_file.exists():
                try:
                    self.url = json.loads(server_file.read_text())["url"]
                    if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                        self.port = int(self.url.rsplit(":", 1)[1])
                        return self
                except (json.JSONDecodeError, KeyError, httpx.HTTPError):
                    pass
            time.sleep(0.05)
        raise RuntimeError("server did not start in time")

    def _drain(self, stream: Any) -> None:
        for line in iter(stream.readline, b""):
            self.log.append(line.decode(errors="replace"))

    def stderr(self) -> str:
        """Return what the server wrote to stderr so far (its last 2,000 lines)."""
        return "".join(self.log)

    def kill(self) -> None:
        """kill -9: no shutdown hooks, no checkpoint."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def http(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture
def live_server(tmp_path: Path, warehouse: str) -> Iterator[LiveServer]:
    """A started server over a fresh project (on the test's warehouse); stopped after the test."""
    proj = init_project(tmp_path / "live", warehouse_url=None if warehouse == "duckdb" else warehouse)
    admin = keys.create_key(proj, "admin").key
    proj.close()
    server = LiveServer(root=proj.root, admin_key=admin).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny Qwen2 (hidden 64, 2 layers) with its chat tokenizer, built once per session."""
    from posttrain.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", arch="qwen2", hidden=64, layers=2)


@pytest.fixture(scope="session")
def flywheel(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """The folder of a closed project that ran two loop turns (the console's tests); ``keys.json`` beside it."""
    from ui.helpers import build_flywheel

    return build_flywheel(tmp_path_factory.mktemp("flywheel") / "proj", tiny_model)


@pytest.fixture
def console(flywheel: Path, tmp_path: Path, warehouse: str) -> Iterator[Any]:
    """A copy of the flywheel project, the real app over it, and sign-in per role (``ui.helpers.Console``).

    On a PostgreSQL ``warehouse`` the copy's tables are moved there by ``posttrain warehouse copy``.
    """
    from ui.helpers import Console

    root = tmp_path / "proj"
    shutil.copytree(flywheel, root)
    role_keys = json.loads((flywheel.parent / "keys.json").read_text())
    if warehouse != "duckdb":
        from posttrain.warehouse.copy import copy_to_postgres

        with open_project(root) as source:
            copy_to_postgres(source, warehouse)
        with (root / "posttrain.toml").open("a") as toml:
            toml.write(f'\n[warehouse]\nurl = "{warehouse}"\n')
    project = open_project(root)
    app = create_app(project)
    clients: list[TestClient] = []

    def make_client() -> TestClient:
        client = TestClient(app, base_url="http://127.0.0.1", follow_redirects=False)
        client.__enter__()
        clients.append(client)
        return client

    yield Console(project=project, keys=role_keys, new_client=make_client)
    for client in clients:
        client.__exit__(None, None, None)
    project.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """A real PostgreSQL server on loopback for the session (initdb + pg_ctl in a temp folder, a
    free port); stopped and removed after the session."""
    pytest.importorskip("psycopg")
    from posttrain.warehouse.pg_local import LocalPostgres

    server = LocalPostgres().start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server: Any) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    import uuid

    return str(pg_server.database(f"t_{uuid.uuid4().hex[:12]}"))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3-compatible server (moto's) on loopback for the session, in a process of its own;
    yields its endpoint URL."""
    import socket

    from posttrain.compute.cluster import free_port

    pytest.importorskip("s3fs")
    program = Path(sys.executable).with_name("moto_server")
    port = free_port()
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(program), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(10)


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the loopback S3 server; returns ``s3://<bucket>/pt``. The endpoint and
    credentials are set in the environment as a user would set them (``AWS_ENDPOINT_URL_S3`` …),
    so processes started meanwhile (a Ray cluster's nodes) reach the same server."""
    import uuid

    import s3fs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "posttrain-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "posttrain-test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server)
    s3fs.S3FileSystem.clear_instance_cache()  # none made before these variables were set
    bucket = f"pt-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem().mkdir(bucket)
    return f"s3://{bucket}/pt"


@pytest.fixture(scope="session")
def ray_cluster_session() -> Iterator[Any]:
    """A real Ray cluster on loopback for the session: a head and one worker node, each a ``ray start``
    process of its own (1 CPU each); stopped after the session."""
    pytest.importorskip("ray")
    from posttrain.compute import ray_runtime
    from posttrain.compute.cluster import LocalCluster

    cluster = LocalCluster(workers=1).start()
    yield cluster
    ray_runtime.disconnect()
    cluster.stop()


@pytest.fixture
def ray_cluster(ray_cluster_session: Any) -> Any:
    """The session's Ray cluster, this process connected to it (not to another a test made)."""
    from posttrain.compute import ray_runtime

    if ray_runtime.connected_to() not in (None, ray_cluster_session.address):
        ray_runtime.disconnect()
    return ray_cluster_session


@pytest.fixture
def ray_project(project: Project, ray_cluster: Any) -> Project:
    """The ``project`` fixture with ``[compute] backend = "ray"`` on the session's cluster."""
    use_ray(project, ray_cluster.address)
    return project


def use_ray(project: Project, address: str, **more: Any) -> None:
    """Switch ``project``'s compute settings to the Ray cluster at ``address``."""
    from posttrain.settings import ComputeSettings

    compute = ComputeSettings(backend="ray", address=address, rows_per_block=more.pop("rows_per_block", 200), **more)
    project.settings = project.settings.model_copy(update={"compute": compute})
