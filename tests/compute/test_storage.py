"""compute.storage: a folder put under a storage URL and fetched back is the same folder, local or not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from posttrain.compute import Storage
from posttrain.errors import InvalidInput
from posttrain.project import Project
from test_jobs import cancelled_run


def _folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"a": 1}')
    (root / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 10)
    return root


@pytest.mark.parametrize("url", ["memory://pt-storage-test", "LOCAL", "S3"])
def test_a_folder_round_trips(tmp_path: Path, url: str, request: pytest.FixtureRequest) -> None:
    if url == "S3":  # a real S3-compatible server on loopback
        url = request.getfixturevalue("s3")
    storage = Storage(str(tmp_path / "store") if url == "LOCAL" else url)
    source = _folder(tmp_path / "model")
    where = storage.put_dir(source, "models", "m1")
    storage.put_dir(source, "models", "m1")  # again: into the folder that exists, not a nested copy
    back = storage.get_dir(where, tmp_path / "back")
    assert sorted(p.relative_to(back).as_posix() for p in back.rglob("*")) == ["config.json", "sub", "sub/weights.bin"]
    assert (back / "sub" / "weights.bin").read_bytes() == (source / "sub" / "weights.bin").read_bytes()
    assert storage.is_local == (url == "LOCAL")
    if url.startswith("s3://"):  # the URL a job records for a checkpoint there
        assert storage.url("models", "m1") == f"{url}/models/m1"
    storage.remove(where)
    assert not storage.exists(where)


def test_an_unknown_protocol_names_the_setting() -> None:
    with pytest.raises(InvalidInput) as caught:
        Storage("nosuchprotocol://bucket/x")
    assert caught.value.field == "compute.storage"


def test_a_local_run_resumes_from_a_checkpoint_in_object_storage(project: Project, tiny_model: Path, s3: str) -> None:
    """A job that recorded its checkpoint by URL (as a Ray run on object storage does): ``--resume``
    finds it there and a local run copies it down to start from it."""
    pytest.importorskip("trl")
    from posttrain.jobs import get_job
    from posttrain.train.sft import train_sft

    config, job = cancelled_run(project, tiny_model)
    assert job.checkpoint
    Storage(s3).put_dir(job.checkpoint, "ray-train", job.id, "checkpoint-2")
    url = Storage(s3).url("ray-train", job.id, "checkpoint-2")
    shutil.rmtree(job.checkpoint)  # only the copy in object storage is left
    project.cursor().execute("UPDATE jobs SET checkpoint = ? WHERE id = ?", [url, job.id])
    assert get_job(project, job.id).checkpoint == url  # a URL is stored and read back as it is

    resumed = train_sft(project, config.model_copy(update={"resume": True}))

    run = get_job(project, resumed.run_id or "")
    assert run.config["resolved"]["resume_from"] == url
    assert min(m["step"] for m in run.metrics) > 2 and resumed.metrics["step"] == 6


def test_resume_names_a_checkpoint_gone_from_object_storage(project: Project, tiny_model: Path, s3: str) -> None:
    pytest.importorskip("trl")
    from posttrain.errors import NotFound
    from posttrain.jobs import start_job
    from posttrain.train.sft import SFTConfig, train_sft

    _base_and_rows(project, tiny_model)
    handle = start_job(project, "train.sft", {"output": "o"})
    handle.checkpoint(f"{s3}/ray-train/{handle.id}/checkpoint-4")  # never written
    handle.fail("lost")

    with pytest.raises(NotFound, match="drop --resume"):
        train_sft(project, SFTConfig(model="base", dataset="d", output="o", resume=True))


def _base_and_rows(project: Project, tiny_model: Path) -> None:
    import pyarrow as pa

    from posttrain.datasets import write_version
    from posttrain.models.registry import register_model

    register_model(project, "base", tiny_model)
    rows = [{"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "yo"}]}] * 8
    write_version(project, "d", "sft", pa.Table.from_pylist(rows), recipe={}, sources={})
