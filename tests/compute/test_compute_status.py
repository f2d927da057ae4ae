"""``posttrain compute status``: the backend, and on Ray the cluster's nodes; an unreachable cluster is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from posttrain.cli import app
from posttrain.project import init_project


def _project(tmp_path: Path) -> Path:
    init_project(tmp_path / "p").close()
    return tmp_path / "p"


def _posttrain(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "posttrain", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})  # fmt: skip


def test_local_backend_imports_no_ray(tmp_path: Path) -> None:
    root = _project(tmp_path)
    code = (
        "import sys, posttrain.cli\n"
        "from typer.testing import CliRunner\n"
        f"r = CliRunner().invoke(posttrain.cli.app, ['compute', 'status', '-p', {str(root)!r}])\n"
        "print(r.output); print('ray' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "backend: local (this process)" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "False"  # nothing imported Ray on the local backend


def test_an_address_nobody_listens_on_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    root = _project(tmp_path)
    env = {"POSTTRAIN_COMPUTE_BACKEND": "ray", "POSTTRAIN_COMPUTE_ADDRESS": "127.0.0.1:1"}
    done = _posttrain(["compute", "status", "-p", str(root)], env)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: no Ray cluster answers at compute.address = '127.0.0.1:1' (Connection refused); "
        "start one with 'ray start --head', or set compute.backend = local"
    ]


def test_a_bad_address_setting_names_the_setting(tmp_path: Path) -> None:
    root = _project(tmp_path)
    done = _posttrain(["compute", "status", "-p", str(root)], {"POSTTRAIN_COMPUTE_ADDRESS": "a b"})
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "setting compute.address" in done.stderr


@pytest.mark.slow
def test_status_lists_the_clusters_nodes(tmp_path: Path, ray_cluster: Any) -> None:
    root = _project(tmp_path)
    env = {"POSTTRAIN_COMPUTE_BACKEND": "ray", "POSTTRAIN_COMPUTE_ADDRESS": ray_cluster.address}
    result = CliRunner().invoke(app, ["compute", "status", "-p", str(root), "--json"], env=env)
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found["backend"] == "ray"
    alive = [n for n in found["nodes"] if n["alive"]]
    assert len(alive) == 2 and sum(n["head"] for n in alive) == 1
    assert found["cpus"] == 2
