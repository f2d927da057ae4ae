"""A train killed with SIGKILL: its job is failed on the next open and --resume continues it; a moved project."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from conftest import LiveServer
from posttrain import keys
from posttrain.datasets import write_version
from posttrain.jobs import get_job, list_jobs
from posttrain.models.generation import generate
from posttrain.models.registry import get_model, register_model
from posttrain.project import Project, init_project, open_project
from posttrain.train.sft import SFTConfig, train_sft

pytest.importorskip("trl")
pytestmark = pytest.mark.slow


def _spell(project: Project, tiny_model: Path) -> None:
    register_model(project, "base", tiny_model)
    rng = random.Random(0)
    digits = [rng.randrange(10) for _ in range(64)]
    rows = [
        {
            "prompt": [{"role": "user", "content": f"spell {d}"}],
            "completion": [{"role": "assistant", "content": str(d)}],
        }
        for d in digits
    ]
    write_version(project, "spell", "sft", pa.Table.from_pylist(rows), recipe={}, sources={})


def _checkpoint_at_least(root: Path, step: int) -> bool:
    steps = [int(p.name.rsplit("-", 1)[1]) for p in root.glob("artifacts/runs/*/checkpoint-*")]
    return any(s >= step for s in steps)


def test_a_killed_train_is_failed_on_open_and_resumes(project: Project, tiny_model: Path) -> None:
    _spell(project, tiny_model)
    root = project.root
    project.close()
    flags = "--model base --dataset spell --output killed --max-steps 400 --batch-size 2 --save-steps 2 --device cpu"
    cmd = [sys.executable, "-m", "posttrain", "train", "sft", "-p", str(root), *flags.split()]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    deadline = time.monotonic() + 180
    # a checkpoint of step 4 or later means step 2's was saved and recorded; checkpoints rotate
    # (save_total_limit 2), so look for any, not one by name
    while not _checkpoint_at_least(root, 4) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    with open_project(root) as reopened:
        [job] = list_jobs(reopened, kind="train.sft")
        assert job.state == "failed" and "ended without finishing" in (job.error or "")
        assert job.checkpoint and Path(job.checkpoint).is_dir()
        config = SFTConfig(model="base", dataset="spell", output="killed", max_steps=6, batch_size=2, resume=True)
        record = train_sft(reopened, config)
        assert get_job(reopened, record.run_id or "").config["resolved"]["resume_from"] == job.checkpoint


def test_a_copied_project_generates_with_its_trained_model(project: Project, tiny_model: Path, tmp_path: Path) -> None:
    _spell(project, tiny_model)
    train_sft(project, SFTConfig(model="base", dataset="spell", output="speller", max_steps=2, batch_size=4))
    rows = {"prompt": [[{"role": "user", "content": "spell 3"}]]}
    write_version(project, "p", "prompts", pa.table(rows), recipe={}, sources={})
    project.close()
    copy = tmp_path / "copied"
    shutil.copytree(project.root, copy)
    shutil.rmtree(project.root)
    with open_project(copy) as moved:
        assert get_model(moved, "speller").path == str(copy / "artifacts" / "models" / "speller")
        report = generate(moved, model="speller", prompts="p", samples=1, output="o", max_new_tokens=4)
        assert report.interactions == 1


def test_train_wait_queues_behind_the_run_in_progress(tmp_path: Path, tiny_model: Path) -> None:
    proj = init_project(tmp_path / "queued")
    admin = keys.create_key(proj, "admin").key
    _spell(proj, tiny_model)
    proj.close()
    server = LiveServer(root=proj.root, admin_key=admin).start()
    try:

        def train(output: str, steps: int, *extra: str) -> subprocess.Popen[str]:
            flags = f"--model base --dataset spell --output {output} --max-steps {steps} --batch-size 2 --json"
            cmd = [sys.executable, "-m", "posttrain", "train", "sft", "-p", str(proj.root), *flags.split(), *extra]
            return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        first = train("first", 40)
        with server.http() as http:
            deadline = time.monotonic() + 60
            while not http.get("/api/jobs").json() and time.monotonic() < deadline:
                time.sleep(0.2)
            refused = train("refused", 2)
            assert refused.wait(120) != 0 and "in progress" in (refused.stderr.read() if refused.stderr else "")
            second = train("second", 2, "--wait")
            assert first.wait(300) == 0 and second.wait(300) == 0
            jobs = {j["config"]["output"]: j for j in http.get("/api/jobs").json()}
        assert jobs["second"]["started_at"] >= jobs["first"]["finished_at"]
    finally:
        server.stop()
