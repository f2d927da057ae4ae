"""A plain ``pip install posttrain`` (no extras) in a fresh venv can init a project and serve it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _env(venv: Path) -> dict[str, str]:
    """The environment of a user of ``venv``: nothing of this checkout or its venv leaks in."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "POSTTRAIN_PROJECT")}
    return {**env, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}"}


def _run(venv: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, env=_env(venv), cwd=venv.parent, timeout=timeout)


def _serve_health(venv: Path, project: Path) -> int:
    """Start ``posttrain serve --port 0`` from ``venv``; return /health's status, then stop it."""
    server_file = project / ".posttrain" / "server.json"
    cmd = [str(venv / "bin" / "posttrain"), "serve", "--project", str(project), "--port", "0"]
    proc = subprocess.Popen(cmd, env=_env(venv), cwd=venv.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
            if server_file.exists():
                try:
                    url = json.loads(server_file.read_text())["url"]
                    return httpx.get(f"{url}/health", timeout=2).status_code
                except (json.JSONDecodeError, KeyError, httpx.HTTPError):
                    pass
            time.sleep(0.1)
        raise AssertionError("posttrain serve did not start within 60 s")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_base_install_serves_health_without_torch(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    pip = _run(venv, python, "-m", "pip", "install", "--no-cache-dir", str(ROOT), timeout=300)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    no_torch = _run(venv, python, "-c", "import torch", timeout=60)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    init = _run(venv, str(venv / "bin" / "posttrain"), "init", str(tmp_path / "proj"), "--json", timeout=120)
    assert init.returncode == 0, init.stderr
    assert _serve_health(venv, Path(json.loads(init.stdout)["project"])) == 200
