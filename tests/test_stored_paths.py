"""Paths in the warehouse are relative to the project, so a copied or restored project still works."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa

from posttrain.datasets import read_rows, resolve, write_version
from posttrain.models.registry import get_model, register_model
from posttrain.project import Project, open_project
from posttrain.stored_paths import load_path, store_path


def _fill(project: Project, tiny_model: Path) -> None:
    folder = project.artifacts / "models" / "m"
    shutil.copytree(tiny_model, folder)
    register_model(project, "m", folder)
    write_version(project, "d", "sft", pa.table({"text": ["a", "b"]}), recipe={}, sources={"interactions": ["x"]})
    project.close()


def test_store_path_is_relative_inside_the_project_and_absolute_outside(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    assert store_path(root, root / "artifacts" / "models" / "m") == "artifacts/models/m"
    assert store_path(root, tmp_path / "elsewhere") == str(tmp_path / "elsewhere")
    assert load_path(root, "artifacts/models/m") == str(root / "artifacts" / "models" / "m")


def test_a_copied_project_finds_its_models_and_datasets(project: Project, tiny_model: Path, tmp_path: Path) -> None:
    _fill(project, tiny_model)
    stored = project.cursor().execute("SELECT path FROM models").fetchone()
    assert stored == ("artifacts/models/m",)
    copy = tmp_path / "moved"
    shutil.copytree(project.root, copy)
    shutil.rmtree(project.root)
    with open_project(copy) as moved:
        assert get_model(moved, "m").path == str(copy / "artifacts" / "models" / "m")
        version = resolve(moved, "d")
        assert version.path.startswith(str(copy)) and version.source_ids["file"].startswith(str(copy))
        assert read_rows(version).num_rows == 2


def test_old_absolute_paths_resolve_under_the_new_root(project: Project, tiny_model: Path, tmp_path: Path) -> None:
    _fill(project, tiny_model)
    old = project.root
    with open_project(old) as proj:  # a warehouse written before paths were relative
        proj.cursor().execute("UPDATE models SET path = ?", [str(old / "artifacts" / "models" / "m")])
        proj.cursor().execute(
            "UPDATE dataset_versions SET path = ?", [str(old / "artifacts/datasets/d/v1/data.parquet")]
        )
    copy = tmp_path / "restored"
    shutil.copytree(old, copy)
    shutil.rmtree(old)
    with open_project(copy) as moved:
        assert get_model(moved, "m").path == str(copy / "artifacts" / "models" / "m")
        assert read_rows(resolve(moved, "d")).num_rows == 2


def test_a_url_is_stored_and_loaded_as_it_is(tmp_path: Path) -> None:
    url = "s3://bucket/pt/ray-train/job_1/checkpoint-8"
    assert store_path(tmp_path, url) == url
    assert load_path(tmp_path, url) == url
    assert store_path(tmp_path, "file:///data/x") == "file:///data/x"
    assert store_path(tmp_path, tmp_path / "artifacts" / "runs") == "artifacts/runs"  # a path stays a path
