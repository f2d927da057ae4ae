"""Dataset builds and curation on Ray Data: the same rows, hashes and counts as the local backend.

Each build runs once with ``[compute] backend = "local"`` and once on a real loopback Ray cluster
(``ray start`` processes) in batches of 200 rows or fewer, so every per-row stage (the regex
scrub, the NER, MinHash, language identification, hashing embeddings) runs across several batches.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curation.helpers import build_sft, store_accepted
from posttrain import compute, datasets
from posttrain.cli import app
from posttrain.errors import PosttrainError
from posttrain.project import Project
from posttrain.settings import ComputeSettings

pytestmark = pytest.mark.slow

RECIPE: dict[str, Any] = {
    "pii": {"ner": True},
    "dedup": {"threshold": 0.7},
    "decontaminate": {},
    "quality": {"languages": ["en"]},
    "select": {"fraction": 0.8, "embedder": "hashing"},
}
RAYLET = "\x1b[33m(raylet)"  # how Ray prefixes a raylet message it prints on the driver
EVAL_PROMPTS = ["What is the capital of France?", "Sort the letters of 'dcba'."]
NAMES = ["John Smith", "Maria Garcia", "Wei Chen", "Priya Patel", "Olu Adeyemi"]
WORDS = [
    "billing", "invoice", "refund", "parcel", "courier", "warehouse", "ticket", "password", "account", "login",
    "browser", "laptop", "printer", "router", "battery", "charger", "garden", "kitchen", "recipe", "flour",
    "butter", "oven", "river", "mountain", "forest", "weather", "storm", "holiday", "flight", "hotel", "museum",
    "ticketing", "concert", "guitar", "violin", "painting", "novel", "poem", "chapter", "lesson", "algebra",
    "geometry", "physics", "chemistry", "biology", "planet", "comet", "galaxy", "telescope", "harbour", "bridge",
    "tunnel", "railway", "engine",
]  # fmt: skip
FOREIGN = [
    "Bonjour, je voudrais savoir comment réinitialiser mon mot de passe sur le portail de facturation.",
    "Guten Tag, ich möchte wissen, wie ich mein Passwort im Abrechnungsportal zurücksetzen kann.",
]


def rows(n: int) -> list[tuple[str, str]]:
    """Return ``n`` (prompt, answer) pairs: PII of every kind, near-duplicates, eval prompts, other languages."""
    out: list[tuple[str, str]] = []
    for k in range(n):
        name = NAMES[k % len(NAMES)]
        draw = random.Random(k)
        topic = " ".join(draw.choices(WORDS, k=8))  # a text of its own, so dedup keeps most rows
        prompt = [
            f"About {topic}: write to me at user{k}@example.com.",
            f"My name is {name} and I ask about {topic}; call 555-201-{k % 10000:04d}.",
            f"I live at {100 + k} Baker Street, Springfield. Tell me about {topic}.",
            f"Tell me about {topic}, item {k}.",
        ][k % 4]
        answer = f"Here is what I know about {topic}, {name.split()[0]}. " + " ".join(draw.choices(WORDS, k=6)) + "."
        if k % 10 == 3:  # a near copy of the row before
            prompt, answer = out[-1][0] + "!", out[-1][1]
        if k % 50 == 7:
            prompt, answer = EVAL_PROMPTS[k % 2], "Paris." if k % 2 == 0 else "abcd"
        if k % 40 == 11:
            prompt, answer = f"{FOREIGN[k % 2]} ({k})", FOREIGN[k % 2]
        out.append((prompt, answer))
    return out


def switch(project: Project, backend: str, address: str = "auto", rows_per_block: int = 200) -> None:
    """Set ``project``'s compute settings (local, or the Ray cluster at ``address``)."""
    compute = ComputeSettings(backend=backend, address=address, rows_per_block=rows_per_block)  # type: ignore[arg-type]
    project.settings = project.settings.model_copy(update={"compute": compute})


def write_eval(project: Project) -> None:
    """Write an eval version of EVAL_PROMPTS for decontamination to check against."""
    import pyarrow as pa

    n = len(EVAL_PROMPTS)
    table = pa.table({
        "prompt": [[{"role": "user", "content": p}] for p in EVAL_PROMPTS],
        "answer": [None] * n,
        "completion": ["reference"] * n,
        "cohort": ["adult"] * n,
        "user_id": [f"u{k}" for k in range(n)],
        "session_id": [None] * n,
    })  # fmt: skip
    datasets.write_version(project, "heldout", "eval", table, recipe={}, sources={})


def stages_of(version: datasets.DatasetVersion) -> list[dict[str, Any]]:
    """Return the curation report's stages without their timings."""
    return [{k: v for k, v in stage.items() if k != "seconds"} for stage in version.stats["curation"]["stages"]]


def same_rows(left: datasets.DatasetVersion, right: datasets.DatasetVersion) -> None:
    assert left.content_hash == right.content_hash
    assert pq.read_table(left.path).equals(pq.read_table(right.path))
    assert Path(left.path).read_bytes() == Path(right.path).read_bytes()


def test_build_curated_gives_the_same_rows_and_counts_on_ray(project: Project, ray_cluster: Any) -> None:
    store_accepted(project, rows(450))
    write_eval(project)
    switch(project, "local")
    here = build_sft(project, "local", curate=RECIPE)
    switch(project, "ray", ray_cluster.address)
    there = build_sft(project, "ray", curate=RECIPE)
    same_rows(here, there)
    assert stages_of(here) == stages_of(there)
    assert here.stats["pii_scrubbed"] == there.stats["pii_scrubbed"]
    removed = {s["stage"]: s["removed"] for s in stages_of(here)}
    assert all(removed[s] > 0 for s in ("dedup", "decontaminate", "quality", "select")), removed
    assert here.stats["pii_scrubbed"]["person"] > 0 and here.stats["pii_scrubbed"]["email"] > 0
    local_details = pq.read_table(Path(here.path).parent / "curation.parquet")
    assert local_details.equals(pq.read_table(Path(there.path).parent / "curation.parquet"))


def test_a_stage_runs_on_batches_of_rows_per_block_rows(ray_cluster: Any, tmp_path: Path) -> None:
    import pyarrow as pa

    from posttrain.compute import Storage, ray_data

    settings = ComputeSettings(backend="ray", address=ray_cluster.address, rows_per_block=200)
    table = pa.table({"x": list(range(589))})
    seen: list[int] = []

    def double(batch: pa.Table) -> tuple[pa.Table, dict[str, int]]:
        assert batch.num_rows <= 200
        return pa.table({"x": pa.compute.multiply(batch.column("x"), 2)}), {"calls": 1, "rows": batch.num_rows}

    out, counts = ray_data.map_batches(
        settings, Storage(str(tmp_path)), table, double, what="test", progress=lambda done, total: seen.append(done)
    )

    assert out.column("x").to_pylist() == [2 * x for x in range(589)]
    assert counts == {"calls": 3, "rows": 589}
    assert seen == [200, 400, 589]


def test_build_plain_scrubs_the_same_pii_on_ray(project: Project, ray_cluster: Any) -> None:
    store_accepted(project, rows(600))
    switch(project, "local")
    here = datasets.build(project, "sft", "plain")
    switch(project, "ray", ray_cluster.address)
    seen: list[tuple[str, int, int]] = []
    with compute.reporting(lambda what, done, total: seen.append((what, done, total))):
        there = datasets.build(project, "sft", "plain")
    same_rows(here, there)
    # blocks of 200 rows: the caller sees the scrub advance block by block as the cluster returns them
    done = [d for what, d, total in seen if what == "the PII scrub of the build" and total == here.row_count]
    assert len(done) >= 3 and done == sorted(done) and done[-1] == here.row_count, seen
    assert here.stats["pii_scrubbed"] == there.stats["pii_scrubbed"]
    scrubbed = here.stats["pii_scrubbed"]
    assert scrubbed["email"] > 100 and scrubbed["phone"] > 100 and here.row_count > 500


@pytest.mark.timeout(300)
def test_build_survives_or_fails_in_one_line_when_a_worker_dies(project: Project) -> None:
    from posttrain.compute import ray_runtime
    from posttrain.compute.cluster import LocalCluster

    store_accepted(project, rows(600))
    recipe = {"pii": {"ner": True}, "dedup": {}}
    switch(project, "local")
    expected = build_sft(project, "local", curate=recipe)
    ray_runtime.disconnect()
    cluster = LocalCluster(workers=1).start()
    try:
        switch(project, "ray", cluster.address, rows_per_block=100)

        def kill_when_running() -> None:
            deadline = time.monotonic() + 120
            while ray_runtime.connected_to() != cluster.address and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.5)  # into the build's stages: the scrub, then MinHash, then the NER
            cluster.kill_worker(0)

        killer = threading.Thread(target=kill_when_running, daemon=True)
        killer.start()
        started = time.monotonic()
        try:
            built = build_sft(project, "ray", curate=recipe)
        except PosttrainError as exc:
            assert "\n" not in exc.message and exc.message, exc.message
        else:
            same_rows(expected, built)
        killer.join(timeout=5)
        assert time.monotonic() - started < 240
    finally:
        ray_runtime.disconnect()
        cluster.stop()


def test_cli_build_on_ray_prints_what_a_user_sees(
    project: Project, ray_cluster: Any, cli: CliRunner, tmp_path: Path
) -> None:
    store_accepted(project, rows(300))
    project.close()
    recipe = tmp_path / "curate.yaml"
    recipe.write_text("pii: {ner: true}\ndedup: {threshold: 0.7}\nquality: {languages: [en]}\n")
    env = {"POSTTRAIN_COMPUTE_BACKEND": "ray", "POSTTRAIN_COMPUTE_ADDRESS": ray_cluster.address}
    args = ["datasets", "build", "sft", "chat", "--curate", str(recipe), "--project", str(project.root)]
    built = cli.invoke(app, args, env=env)
    assert built.exit_code == 0, built.output
    local = cli.invoke(app, args, env={"POSTTRAIN_COMPUTE_BACKEND": "local"})
    assert local.exit_code == 0, local.output
    ours = [line for line in built.output.splitlines() if not line.startswith(RAYLET)]
    assert [line.replace("chat@1", "chat@2") for line in ours] == local.output.splitlines()
    assert any(line.startswith("curation: ") and "pii" in line for line in ours), built.output
    # the raylet's own warnings ("N PYTHON worker processes have been started") reach the driver's
    # stdout through Ray's error channel whatever log_to_driver says; anything else would be noise
    noise = [line for line in built.output.splitlines() if line.startswith(RAYLET)]
    assert all("worker processes have been started" in line for line in noise), noise
