"""The model registry: every model posttrain knows, where it lives, and what made it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson

from posttrain.clock import utc_now
from posttrain.errors import Conflict, InvalidInput, NotFound
from posttrain.ids import new_id
from posttrain.names import check_name
from posttrain.project import Project
from posttrain.records import ModelKind, ModelRecord
from posttrain.stored_paths import load_path, store_path
from posttrain.warehouse.rows import fetch_all, fetch_one

_JSON = ("recipe", "dataset_versions", "metrics")


def folder_hash(path: Path) -> str:
    """Return a SHA-256 over the folder's weight and config files (names and bytes)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(file.relative_to(path).as_posix().encode())
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def register_model(
    project: Project,
    name: str,
    path: Path | str,
    *,
    kind: ModelKind = "causal-lm",
    base: str | None = None,
    parent: str | None = None,
    run_id: str | None = None,
    recipe: dict[str, Any] | None = None,
    dataset_versions: list[str] | None = None,
    metrics: dict[str, Any] | None = None,
    description: str | None = None,
) -> ModelRecord:
    """Register a local Hugging Face model folder under ``name``; ``parent`` is a registered name."""
    folder = Path(path).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise InvalidInput(f"{folder} is not a Hugging Face model folder (no config.json)", field="path")
    check_name_free(project, name)
    parent_id = get_model(project, parent).id if parent else None
    record = ModelRecord(
        id=new_id(),
        name=name,
        kind=kind,
        path=str(folder),
        base=base,
        parent_id=parent_id,
        run_id=run_id,
        recipe=recipe or {},
        dataset_versions=dataset_versions or [],
        content_hash=folder_hash(folder),
        metrics=metrics or {},
        description=description,
        created_at=utc_now(),
    )
    data = record.model_dump()
    data["path"] = store_path(project.root, folder)  # relative inside the project, so the project can move
    for field in _JSON:
        data[field] = orjson.dumps(data[field]).decode()
    columns = ", ".join(data)
    project.cursor().execute(
        f"INSERT INTO models ({columns}) VALUES ({', '.join('?' for _ in data)})", list(data.values())
    )
    return record


def check_name_free(project: Project, name: str) -> None:
    """Raise Conflict if a model is registered as ``name``, InvalidInput if the name is unusable."""
    check_name(name, what="model name")
    if _find(project, name) is not None:
        raise Conflict(f"a model named {name!r} exists; choose another name or see 'posttrain models show {name}'")


def _find(project: Project, name_or_id: str) -> ModelRecord | None:
    sql = "SELECT * FROM models WHERE name = ? OR id = ?"
    data = fetch_one(project.cursor(), sql, [name_or_id, name_or_id], json=_JSON)
    return None if data is None else _record(project, data)


def _record(project: Project, data: dict[str, Any]) -> ModelRecord:
    return ModelRecord(**{**data, "path": load_path(project.root, data["path"])})


def find_model(project: Project, name: str) -> ModelRecord | None:
    """Return a registered model by name (or id), or None."""
    return _find(project, name)


def get_model(project: Project, name: str) -> ModelRecord:
    """Return a registered model by name (or id); raise NotFound naming the fix."""
    found = _find(project, name)
    if found is None:
        raise NotFound(f"no model {name!r}; run 'posttrain models list' or 'posttrain models register'", field="model")
    return found


def list_models(project: Project) -> list[ModelRecord]:
    """Return every registered model, newest first."""
    rows = fetch_all(project.cursor(), "SELECT * FROM models ORDER BY created_at DESC, id DESC", json=_JSON)
    return [_record(project, r) for r in rows]
