"""Artifacts addressed by URL, through fsspec: a local folder by default, object storage where configured.

Workers on other machines cannot read the project's folder, so what they need (a dataset's rows, a
base model) is put under ``compute.storage`` first and what they make (checkpoints, a trained model)
is written there and fetched back. A local path or ``file://`` URL costs no copy.

A checkpoint Ray Train wrote to object storage is recorded in its job by URL; ``--resume`` checks it
is there (``folder_exists``) and whoever trains from it, a Ray worker or a local run, copies it into
a scratch folder first (``local_folder``): Hugging Face's trainer resumes only from a local folder.
"""

from __future__ import annotations

import posixpath
import shutil
from pathlib import Path
from typing import Any

from posttrain.errors import InvalidInput
from posttrain.stored_paths import is_url


class Storage:
    """One storage root: ``Storage("s3://bucket/pt")``, ``Storage("/data/pt")``."""

    def __init__(self, url: str, *, field: str = "compute.storage") -> None:
        import fsspec

        try:
            self.fs, self.root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise InvalidInput(f"{field} {url!r}: {exc}", field=field) from None
        self.url_root = url

    @property
    def is_local(self) -> bool:
        """Return whether the root is a local folder (paths need no copy)."""
        protocol = self.fs.protocol
        return "file" in (protocol if isinstance(protocol, tuple | list) else (protocol,))

    def path(self, *parts: str) -> str:
        """Return the filesystem path of ``parts`` under the root (a local path when local)."""
        return posixpath.join(self.root, *parts)

    def url(self, *parts: str) -> str:
        """Return the full URL of ``parts`` under the root."""
        return str(self.fs.unstrip_protocol(self.path(*parts)))

    def arrow_filesystem(self) -> Any:
        """Return a pyarrow filesystem over this storage (Ray Data and pyarrow read through it)."""
        import pyarrow.fs as pafs

        if self.is_local:
            return pafs.LocalFileSystem()
        return pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))

    def put_dir(self, local: Path | str, *parts: str) -> str:
        """Copy the folder ``local`` to ``parts`` under the root; return its path there."""
        target = self.path(*parts)
        if self.is_local:
            if Path(target).resolve() != Path(local).resolve():
                shutil.copytree(local, target, dirs_exist_ok=True)
            return target
        for file in sorted(Path(local).rglob("*")):
            if file.is_file():  # file by file: fsspec's recursive put nests into a folder that exists
                self.put_file(file, *parts, file.relative_to(local).as_posix())
        return target

    def put_file(self, local: Path | str, *parts: str) -> str:
        """Copy the file ``local`` to ``parts`` under the root; return its path there."""
        target = self.path(*parts)
        self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        self.fs.put_file(str(local), target)
        return target

    def get_dir(self, path: str, local: Path | str) -> Path:
        """Copy the folder at ``path`` (under this storage) into the local folder ``local``; return it."""
        local = Path(local)
        if self.is_local:
            shutil.copytree(path, local, dirs_exist_ok=True)
            return local
        local.mkdir(parents=True, exist_ok=True)
        root = path.rstrip("/")
        for file in self.fs.find(root):  # file by file, for the same reason as put_dir
            target = local / posixpath.relpath(file, root)
            target.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(file, str(target))
        return local

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(path))

    def remove(self, path: str) -> None:
        """Remove ``path`` (a file or folder) if it is there."""
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)


def folder_exists(path: str) -> bool:
    """Return whether the folder ``path`` (a local path or a URL) is there."""
    if not is_url(path):
        return Path(path).is_dir()
    store = Storage(path, field="resume")
    return bool(store.fs.isdir(store.root))


def local_folder(path: str, scratch: Path) -> str:
    """Return a folder on this machine holding ``path``: itself, or a copy of the URL's folder in ``scratch``."""
    if not is_url(path):
        return path
    store = Storage(path, field="resume")
    if store.is_local:
        return str(store.root)
    return str(store.get_dir(store.root, scratch / posixpath.basename(store.root.rstrip("/"))))
