"""Paths as the warehouse stores them: relative to the project, so a project folder can move.

A model, dataset file or checkpoint inside the project is stored relative to its root
(``artifacts/models/m1``) and resolved against the root it is opened at. A path outside the
project (a model registered from elsewhere) stays absolute, and a URL (a checkpoint Ray Train wrote to
object storage, ``s3://bucket/pt/ray-train/<job>/checkpoint-8``) stays as it is. Warehouses written before paths were
relative hold absolute ones; one that no longer exists but lies under an ``artifacts`` folder is
taken to be the same file under this project's ``artifacts`` (the project was copied or restored).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

_ARTIFACTS = "artifacts"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: Path | str) -> bool:
    """Return whether ``path`` is a URL (``s3://…``, ``file://…``) rather than a path on this machine."""
    return isinstance(path, str) and _URL.match(path) is not None


def store_path(root: Path, path: Path | str) -> str:
    """Return ``path`` as the warehouse stores it: relative to ``root`` when inside it; a URL as it is."""
    if is_url(path):
        return str(path)
    absolute = Path(path).expanduser().resolve()
    try:
        return absolute.relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(absolute)


def load_path(root: Path, stored: str) -> str:
    """Return the absolute path a stored path means for the project at ``root``."""
    if is_url(stored):
        return stored
    path = Path(stored)
    if not path.is_absolute():
        return str(root / PurePosixPath(stored))
    if path.exists() or _ARTIFACTS not in path.parts:
        return stored
    parts = path.parts
    last = len(parts) - 1 - parts[::-1].index(_ARTIFACTS)
    moved = root.joinpath(*parts[last:])
    return str(moved) if moved.exists() else stored
