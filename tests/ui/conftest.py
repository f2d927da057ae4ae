"""The console's pages over a project that ran two turns of the loop (a tiny model, simulated traffic).

``flywheel`` is built once per test session (about a minute): product logs with thumbs, two loop
turns with an eval suite, experiments per cohort and their decisions, one key per role. Each test
that uses ``console`` gets its own copy of that folder, the real app over it in-process, and a
``sign_in(role)`` that signs in at /ui/login like a browser.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from posttrain.project import open_project
from posttrain.server import create_app
from ui.helpers import Console, build_flywheel


@pytest.fixture(scope="session")
def flywheel(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """The folder of a closed project that ran two loop turns; ``keys.json`` beside it holds a key per role."""
    return build_flywheel(tmp_path_factory.mktemp("flywheel") / "proj", tiny_model)


@pytest.fixture
def console(flywheel: Path, tmp_path: Path) -> Iterator[Console]:
    """A copy of the flywheel project, the real app over it, and sign-in per role."""
    root = tmp_path / "proj"
    shutil.copytree(flywheel, root)
    role_keys = json.loads((flywheel.parent / "keys.json").read_text())
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


SignIn = Callable[[str], tuple[TestClient, str]]
