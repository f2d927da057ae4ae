"""Build the console tests' project (two loop turns on a tiny model) and sign in to its pages."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from fastapi.testclient import TestClient

from posttrain import keys, loop
from posttrain.capture import capture
from posttrain.datasets import write_version
from posttrain.models.registry import register_model
from posttrain.project import Project, init_project
from test_loop import _ab_traffic, _product_logs, _recipe

ROLES = ("admin", "viewer", "annotator", "ingest")
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def build_flywheel(root: Path, tiny_model: Path) -> Path:
    """Run two loop turns (SFT, an eval gate, an A/B experiment per cohort) on simulated logs; return ``root``.

    Besides thumbs, turn 1's logs get a rating, an edit, a comment, a flag and a side-by-side choice,
    so an interaction's page has every kind of feedback to show. ``keys.json`` beside ``root``
    holds one key per role (``admin``, ``viewer``, ``annotator``, ``ingest``).
    """
    project = init_project(root)
    try:
        register_model(project, "base", tiny_model)
        suite = [{"prompt": [{"role": "user", "content": f"add {a} {b}"}], "answer": str(a + b),
                  "cohort": "adult" if a % 2 else "minor"} for a in range(4) for b in range(4)]  # fmt: skip
        write_version(project, "suite", "eval", pa.Table.from_pylist(suite), recipe={}, sources={"interaction_ids": []})
        recipe = _recipe(eval={"dataset": "suite", "samples": 1, "temperature": 0.0, "margin": 1.0})
        _product_logs(project, seed=0)
        extra = capture(project, "feedback", [
            {"interaction_id": "s0-1", "kind": "rating", "value": 4},
            {"interaction_id": "s0-1", "kind": "edit", "text": "the fixed answer"},
            {"interaction_id": "s0-1", "kind": "comment", "text": "close, but off by one"},
            {"interaction_id": "s0-2", "kind": "flag", "value": "unsafe"},
            {"interaction_id": "s0-3", "kind": "choice", "value": "s0-4"},  # s0-4 was chosen over s0-3
        ])  # fmt: skip
        assert all(r.status == "created" for r in extra), extra
        loop.run(project, recipe, 1, base="base", traffic=_ab_traffic)
        _product_logs(project, seed=1)
        loop.run(project, recipe, 1, traffic=_ab_traffic)
        role_keys = {role: keys.create_key(project, role, name=f"{role} key").key for role in ROLES}
    finally:
        project.close()
    (root.parent / "keys.json").write_text(json.dumps(role_keys))
    return root


@dataclass
class Console:
    """A copy of the flywheel project, its app, and browsers signed in per role."""

    project: Project
    keys: dict[str, str]
    new_client: Callable[[], TestClient]
    _signed: dict[str, tuple[TestClient, str]] = field(default_factory=dict)

    def sign_in(self, role: str) -> tuple[TestClient, str]:
        """Return a client signed in as ``role`` at /ui/login (holding the cookie) and its CSRF token."""
        if role not in self._signed:
            client = self.new_client()
            token = CSRF.search(client.get("/ui/login").text).group(1)  # type: ignore[union-attr]
            reply = client.post("/ui/login", data={"key": self.keys[role], "csrf": token})
            assert reply.status_code == 303, reply.text
            home = client.get(reply.headers["location"], follow_redirects=True).text
            found = CSRF.search(home)
            self._signed[role] = (client, found.group(1) if found else "")
        return self._signed[role]
