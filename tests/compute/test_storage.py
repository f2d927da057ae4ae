"""compute.storage: a folder put under a storage URL and fetched back is the same folder, local or not."""

from __future__ import annotations

from pathlib import Path

import pytest

from posttrain.compute import Storage
from posttrain.errors import InvalidInput


def _folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"a": 1}')
    (root / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 10)
    return root


@pytest.mark.parametrize("url", ["memory://pt-storage-test", "LOCAL"])
def test_a_folder_round_trips(tmp_path: Path, url: str) -> None:
    storage = Storage(str(tmp_path / "store") if url == "LOCAL" else url)
    source = _folder(tmp_path / "model")
    where = storage.put_dir(source, "models", "m1")
    storage.put_dir(source, "models", "m1")  # again: into the folder that exists, not a nested copy
    back = storage.get_dir(where, tmp_path / "back")
    assert sorted(p.relative_to(back).as_posix() for p in back.rglob("*")) == ["config.json", "sub", "sub/weights.bin"]
    assert (back / "sub" / "weights.bin").read_bytes() == (source / "sub" / "weights.bin").read_bytes()
    assert storage.is_local == (url == "LOCAL")
    storage.remove(where)
    assert not storage.exists(where)


def test_an_unknown_protocol_names_the_setting() -> None:
    with pytest.raises(InvalidInput) as caught:
        Storage("nosuchprotocol://bucket/x")
    assert caught.value.field == "compute.storage"
