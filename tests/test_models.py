"""models: the tiny-model factory, the registry through the CLI, generation into the warehouse, lineage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from posttrain import datasets, jobs
from posttrain.cli import app
from posttrain.errors import Conflict, InvalidInput, NotFound
from posttrain.models.generation import generate
from posttrain.models.lineage import lineage
from posttrain.models.registry import folder_hash, get_model, list_models, register_model
from posttrain.models.tiny import build_tiny_model, init_tiny
from posttrain.project import Project
from posttrain.records import DatasetVersion
from posttrain.warehouse import queries

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "add 12 34?\n\tHi, World! é"}]


def _prompts(project: Project, n: int = 3, name: str = "p") -> DatasetVersion:
    rows = {
        "prompt": [[{"role": "user", "content": f"add {i} {i + 1}"}] for i in range(n)],
        "answer": [str(2 * i + 1) for i in range(n)],
    }
    return datasets.write_version(project, name, "prompts", pa.table(rows), recipe={}, sources={})


def _posttrain(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "posttrain", *args], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )


def test_build_tiny_model_round_trips_through_from_pretrained(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    text = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nadd 12 34?\n\tHi, World! é<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text and tok.unk_token_id not in ids
    assert (tok.eos_token, tok.pad_token, tok.padding_side) == ("<|im_end|>", "<pad>", "left")
    assert model.config.pad_token_id == tok.pad_token_id and model.config.eos_token_id == tok.eos_token_id
    assert model.config.model_type == "qwen2" and model.config.hidden_size == 64


def test_build_tiny_model_tokenizer_matches_the_one_it_saved(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    from posttrain.models.tiny import build_tokenizer

    text = "<|im_start|>user\nsort hgfe  x<|im_end|>\n"
    assert AutoTokenizer.from_pretrained(tiny_model)(text)["input_ids"] == build_tokenizer()(text)["input_ids"]


def test_build_tiny_model_llama_loads(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_model(tmp_path / "llama", arch="llama", hidden=32, layers=2)
    assert type(AutoModelForCausalLM.from_pretrained(path)).__name__ == "LlamaForCausalLM"
    assert AutoTokenizer.from_pretrained(path).decode(AutoTokenizer.from_pretrained(path)("a b")["input_ids"]) == "a b"


def test_build_tiny_model_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    hashes = [folder_hash(build_tiny_model(tmp_path / str(i), hidden=32, layers=2, seed=i // 2)) for i in range(3)]
    assert hashes[0] == hashes[1] != hashes[2]


def test_build_tiny_model_refuses_a_folder_holding_a_model(tiny_model: Path) -> None:
    with pytest.raises(Conflict, match="already holds a model"):
        build_tiny_model(tiny_model)


def test_init_tiny_registers_with_a_content_hash(project: Project) -> None:
    record = init_tiny(project, "base", hidden=32, layers=2, seed=3)
    assert Path(record.path) == project.artifacts / "models" / "base"
    assert record.content_hash == folder_hash(Path(record.path))
    assert record.recipe == {"factory": "tiny", "arch": "qwen2", "hidden": 32, "layers": 2, "heads": 4, "seed": 3}
    assert get_model(project, "base") == record
    with pytest.raises(Conflict, match="models show base"):
        init_tiny(project, "base", hidden=32, layers=2)


@pytest.mark.parametrize("name", ["", "a/b", "../x", "x@1"])
def test_init_tiny_refuses_a_bad_name(project: Project, name: str) -> None:
    with pytest.raises(InvalidInput, match="not allowed"):
        init_tiny(project, name, hidden=32, layers=2)


def test_models_register_list_show_through_the_cli(project: Project, cli: CliRunner, tiny_model: Path) -> None:
    project.close()  # the CLI opens the warehouse itself
    where = ["--project", str(project.root)]
    out = cli.invoke(app, ["models", "register", "m1", str(tiny_model), "--base", "hub/x", "--json", *where])
    assert out.exit_code == 0, out.output
    registered = json.loads(out.output)
    assert registered["name"] == "m1" and registered["content_hash"] == folder_hash(tiny_model)
    out = cli.invoke(app, ["models", "register", "m2", str(tiny_model), "--parent", "m1", *where])
    assert out.exit_code == 0 and "registered model m2" in out.output
    listed = json.loads(cli.invoke(app, ["models", "list", "--json", *where]).output)
    assert [m["name"] for m in listed] == ["m2", "m1"]
    assert "m1" in cli.invoke(app, ["models", "list", *where]).output
    shown = json.loads(cli.invoke(app, ["models", "show", "m2", "--json", *where]).output)
    assert shown["parent_id"] == registered["id"]
    assert "hub/x" in cli.invoke(app, ["models", "show", "m1", *where]).output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["models", "show", "nope"], "no model 'nope'; run 'posttrain models list'"),
        (["models", "register", "m", "."], "not a Hugging Face model folder"),
        (["generate", "--model", "nope", "--prompts", "p", "--samples", "1", "--output", "o"], "no model 'nope'"),
    ],
)
def test_models_cli_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    root = tmp_path / "p"
    assert _posttrain("init", str(root)).returncode == 0
    out = _posttrain(*args, "--project", str(root))
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().count("\n") == 0 and message in out.stderr and "Traceback" not in out.stderr


def test_generate_stores_k_samples_per_prompt_as_interactions(project: Project, tiny_model: Path) -> None:
    register_model(project, "m", tiny_model)
    version = _prompts(project, n=3)
    seen: list[tuple[int, int]] = []
    report = generate(
        project, model="m", prompts="p", samples=2, output="o1", max_new_tokens=6, batch_size=4,
        on_progress=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    assert (report.interactions, report.prompts, report.samples, report.tag) == (6, 3, 2, "output:o1")
    assert seen == [(4, 6), (6, 6)]  # 4 sequences per call = 2 prompts × 2 samples
    stored = queries.list_interactions(project.cursor(), tag="output:o1").interactions
    assert len(stored) == 6
    keys = sorted((i.metadata["prompt_index"], i.metadata["sample"]) for i in stored)
    assert keys == [(p, s) for p in range(3) for s in range(2)]
    first = next(i for i in stored if i.metadata["prompt_index"] == 1 and i.metadata["sample"] == 0)
    assert first.messages == [{"role": "user", "content": "add 1 2"}] and first.metadata["answer"] == "3"
    assert first.metadata["dataset"] == version.ref and first.model == "m" and first.source == "generate"
    assert first.tags == ["generated", "output:o1"] and first.session_id == "gen-o1"
    assert isinstance(first.response, str) and 1 <= (first.completion_tokens or 0) <= 6
    assert jobs.get_job(project, report.job_id).state == "succeeded"


def test_generate_is_reproducible_for_a_seed(project: Project, tiny_model: Path) -> None:
    register_model(project, "m", tiny_model)
    _prompts(project, n=2)
    for output in ("a", "b"):
        generate(project, model="m", prompts="p@1", samples=2, output=output, max_new_tokens=5, seed=7)
    responses = {
        out: sorted(
            i.response or "" for i in queries.list_interactions(project.cursor(), tag=f"output:{out}").interactions
        )
        for out in ("a", "b")
    }
    assert responses["a"] == responses["b"]


def test_generate_through_the_cli(project: Project, cli: CliRunner, tiny_model: Path) -> None:
    register_model(project, "m", tiny_model)
    _prompts(project, n=2)
    project.close()
    args = ["generate", "-m", "m", "--prompts", "p", "-k", "3", "--output", "cli", "--max-new-tokens", "4"]
    out = cli.invoke(app, [*args, "--json", "--project", str(project.root)])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["interactions"] == 6
    assert len(queries.list_interactions(project.cursor(), tag="output:cli").interactions) == 6


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"model": "nope"}, NotFound, "posttrain models list"),
        ({"prompts": "nope"}, NotFound, "posttrain datasets list"),
        ({"prompts": "p@9"}, NotFound, "has no version 9"),
        ({"samples": 0}, InvalidInput, "samples must be at least 1"),
        ({"temperature": -1.0}, InvalidInput, "temperature"),
        ({"model": "rm"}, InvalidInput, "needs a causal-lm"),
        ({"prompts": "sft"}, InvalidInput, "needs a prompts or eval dataset"),
        ({"prompts": "empty"}, InvalidInput, "has no rows"),
        ({"prompts": "flat"}, InvalidInput, "row 0 of flat@1 has no 'prompt' list"),
        ({"output": "taken"}, Conflict, "choose another --output"),
        ({"output": "a b"}, InvalidInput, "output name 'a b'"),
        ({"max_new_tokens": 600}, InvalidInput, "positions"),
    ],
)
def test_generate_bad_input_names_the_fix(
    project: Project, tiny_model: Path, options: dict[str, object], error: type[Exception], message: str
) -> None:
    register_model(project, "m", tiny_model)
    register_model(project, "rm", tiny_model, kind="reward-model")
    _prompts(project, n=1)
    datasets.write_version(project, "sft", "sft", pa.table({"prompt": [[]]}), recipe={}, sources={})
    empty = pa.table({"prompt": pa.array([], pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])))})
    datasets.write_version(project, "empty", "prompts", empty, recipe={}, sources={})
    datasets.write_version(project, "flat", "prompts", pa.table({"prompt": ["add 1 2"]}), recipe={}, sources={})
    generate(project, model="m", prompts="p", samples=1, output="taken", max_new_tokens=2)
    args: dict[str, object] = {"model": "m", "prompts": "p", "samples": 1, "output": "new", "max_new_tokens": 2}
    with pytest.raises(error, match=message):
        generate(project, **{**args, **options})  # type: ignore[arg-type]


@pytest.mark.warehouses("duckdb")  # the one-writer lock is DuckDB's
def test_generate_while_the_warehouse_is_held_is_one_line_busy(project: Project, tmp_path: Path) -> None:
    project.close()
    hold = (
        f"import duckdb,time; c=duckdb.connect({str(project.warehouse_path)!r}); print('ok',flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"ok"
        args = ["--model", "m", "--prompts", "p", "--samples", "1", "--output", "o", "--project", str(project.root)]
        out = _posttrain("generate", *args)
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert f"process {holder.pid}" in out.stderr and "Traceback" not in out.stderr


def _trained_chain(project: Project, tiny_model: Path) -> None:
    """base (hub id) → m0 → m1 (trained by a job on a dataset built from 3 interactions and 2 feedback)."""
    register_model(project, "m0", tiny_model, base="org/tiny-base")
    sources = {"interactions": ["i1", "i2", "i3"], "feedback": ["f1", "f2"]}
    version = datasets.write_version(
        project, "sft-data", "sft", pa.table({"x": [1, 2]}), recipe={"q": 1}, sources=sources
    )
    job = jobs.start_job(project, "train.sft", {"lr": 1e-4})
    job.metric(1, loss=2.0)
    job.metric(2, loss=1.5)
    job.succeed()
    register_model(project, "m1", tiny_model, parent="m0", run_id=job.id, dataset_versions=[version.ref, "gone@1"])


def test_lineage_walks_parents_runs_and_sources(project: Project, tiny_model: Path) -> None:
    _trained_chain(project, tiny_model)
    found = lineage(project, "m1", sample=2)
    assert [s.model.name for s in found.chain] == ["m1", "m0"] and found.base == "org/tiny-base"
    assert [s.via for s in found.chain] == [None, "parent"]
    top = found.chain[0]
    assert top.run is not None and top.run.kind == "train.sft" and top.run.state == "succeeded"
    assert top.run.metrics == {"loss": 1.5} and top.run.steps == 2 and top.run.config == {"lr": 1e-4}
    data, gone = top.datasets
    assert data.ref == "sft-data@1" and data.counts == {"feedback": 2, "interactions": 3}
    assert data.sample_ids == {"feedback": ["f1", "f2"], "interactions": ["i1", "i2"]}
    assert gone.missing is not None and "'gone' has no version 1" in gone.missing
    assert found.chain[1].run is None and found.chain[1].datasets == []


def test_lineage_follows_a_registered_base(project: Project, tiny_model: Path) -> None:
    register_model(project, "root", tiny_model)
    register_model(project, "child", tiny_model, base="root")
    assert [(s.model.name, s.via) for s in lineage(project, "child").chain] == [("child", None), ("root", "base")]


def test_lineage_through_the_cli(project: Project, cli: CliRunner, tiny_model: Path) -> None:
    _trained_chain(project, tiny_model)
    project.close()
    where = ["--project", str(project.root)]
    tree = cli.invoke(app, ["models", "lineage", "m1", *where])
    assert tree.exit_code == 0, tree.output
    for text in (
        "m1",
        "m0 (parent)",
        "train.sft succeeded",
        "loss=1.5",
        "sft-data@1",
        "3 interactions",
        "org/tiny-base",
    ):
        assert text in tree.output
    data = json.loads(cli.invoke(app, ["models", "lineage", "m1", "--json", *where]).output)
    assert data["chain"][0]["datasets"][0]["counts"] == {"feedback": 2, "interactions": 3}


def test_list_models_is_empty_in_a_new_project(project: Project) -> None:
    assert list_models(project) == []
    with pytest.raises(NotFound):
        lineage(project, "nope")
