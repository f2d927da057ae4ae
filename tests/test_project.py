"""project: init, open, the settings file, the busy-warehouse message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from posttrain.errors import Conflict, NotFound, WarehouseBusy
from posttrain.project import init_project, open_project, resolve_root


def test_init_project_creates_its_files(tmp_path: Path) -> None:
    proj = init_project(tmp_path / "p")
    proj.close()
    for name in ("posttrain.toml", "warehouse.duckdb", "artifacts", ".posttrain"):
        assert (proj.root / name).exists()


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
