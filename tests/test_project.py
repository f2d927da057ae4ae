"""project: init, open, the settings file, the busy-warehouse message."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import LiveServer
from posttrain.errors import Conflict, NotFound, WarehouseBusy
from posttrain.project import init_project, open_project, resolve_root


def test_init_project_creates_its_files(tmp_path: Path) -> None:
    proj = init_project(tmp_path / "p")
    proj.close()
    for name in ("posttrain.toml", "warehouse.duckdb", "artifacts", ".posttrain"):
        assert (proj.root / name).exists()


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Run with umask 0, so a mode can only come from posttrain itself."""
    old = os.umask(0)
    yield
    os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    paths = [root, *root.rglob("*")]
    return {str(p.relative_to(root.parent)): stat.S_IMODE(p.stat().st_mode) for p in paths}


@pytest.mark.usefixtures("open_umask")
def test_init_project_creates_private_files_and_folders(tmp_path: Path) -> None:
    proj = init_project(tmp_path / "p")
    proj.close()
    expected = {"p": 0o700, "p/posttrain.toml": 0o600, "p/warehouse.duckdb": 0o600,
                "p/artifacts": 0o700, "p/.posttrain": 0o700}  # fmt: skip
    assert _modes(proj.root) == expected


def test_served_project_files_are_private(live_server: LiveServer) -> None:
    with live_server.http() as http:
        body = {"interactions": [{"messages": [{"role": "user", "content": "hi"}], "response": "hello"}]}
        assert http.post("/api/capture/interactions", json=body).status_code == 200
    modes = _modes(live_server.root)
    assert {"live/.posttrain/server.json", "live/warehouse.duckdb", "live/warehouse.duckdb.wal"} <= set(modes)
    assert {path: mode for path, mode in modes.items() if mode & 0o077} == {}


def test_init_project_twice_is_a_conflict(tmp_path: Path) -> None:
    init_project(tmp_path / "p").close()
    with pytest.raises(Conflict, match="already a posttrain project"):
        init_project(tmp_path / "p")


def test_open_project_without_one_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="posttrain init"):
        open_project(tmp_path)


def test_resolve_root_prefers_argument_then_env(tmp_path: Path) -> None:
    assert resolve_root(tmp_path, env={"POSTTRAIN_PROJECT": "/elsewhere"}) == tmp_path
    assert resolve_root(None, env={"POSTTRAIN_PROJECT": str(tmp_path)}) == tmp_path


def test_open_project_reads_toml_env_and_overrides(tmp_path: Path) -> None:
    init_project(tmp_path / "p").close()
    toml = tmp_path / "p" / "posttrain.toml"
    toml.write_text(toml.read_text().replace("port = 8321", "port = 9000"))
    assert open_project(tmp_path / "p").settings.server.port == 9000
    env = {"POSTTRAIN_SERVER_PORT": "9100"}
    assert open_project(tmp_path / "p", env=env).settings.server.port == 9100
    assert open_project(tmp_path / "p", env=env, **{"server.port": 9200}).settings.server.port == 9200


def test_warehouse_held_by_another_process_is_warehouse_busy(tmp_path: Path) -> None:
    proj = init_project(tmp_path / "p")
    hold = f"import duckdb,time; c=duckdb.connect({str(proj.warehouse_path)!r}); print('ok',flush=True); time.sleep(30)"
    holder = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE)
    proj.close()
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"ok"
        with pytest.raises(WarehouseBusy, match=f"process {holder.pid}"):
            _ = open_project(proj.root).con
    finally:
        holder.kill()
        holder.wait()
