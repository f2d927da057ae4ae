"""``posttrain evals run|compare|gate|list``: tables, JSON, and exit codes 0 (pass), 1 (gate failed), 2 (bad input)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from posttrain import keys
from posttrain.cli.evals import app
from posttrain.datasets import write_version
from posttrain.errors import InvalidInput, NotFound
from posttrain.models.registry import register_model
from posttrain.models.tiny import init_tiny
from posttrain.project import init_project, open_project

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")


def speaks(completion: str, answer: str | None, **row: object) -> float:
    """1 when the model says anything at all."""
    return float(bool(completion))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with a tiny model 'base', a mute copy 'silent', a twin 'twin', and an eval dataset 'ev'."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    proj = init_project(tmp_path_factory.mktemp("evals") / "p")
    base = init_tiny(proj, "base", hidden=32, layers=2, heads=2)
    register_model(proj, "twin", base.path)
    model = AutoModelForCausalLM.from_pretrained(base.path)
    model.model.norm.weight.data.zero_()
    model.save_pretrained(proj.artifacts / "models" / "silent")
    AutoTokenizer.from_pretrained(base.path).save_pretrained(proj.artifacts / "models" / "silent")
    register_model(proj, "silent", proj.artifacts / "models" / "silent")
    table = pa.table(
        {
            "prompt": [[{"role": "user", "content": f"say {i}"}] for i in range(6)],
            "answer": [str(i) for i in range(6)],
            "cohort": ["a", "b"] * 3,
        }
    )
    write_version(proj, "ev", "eval", table, recipe={}, sources={})
    proj.close()
    with (proj.root / "posttrain.toml").open("a") as f:
        f.write(f'\n[functions.verifiers]\nspeaks = "{__name__}:speaks"\n')
    return proj.root


def invoke(root: Path, *args: str) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(app, [*args, "--project", str(root), "--max-new-tokens", "4"])
    return result.exit_code, result.output, result.exception


def test_run_prints_a_table_and_json(root: Path) -> None:
    code, out, _ = invoke(root, "run", "base", "--dataset", "ev", "--verifier", "exact_match")
    assert code == 0 and "base on ev@1" in out and "cohort a" in out and "eval run" in out
    code, out, _ = invoke(root, "run", "base", "--dataset", "ev", "-v", "exact_match", "-v", "regex", "--json")
    data = json.loads(out)
    assert (
        code == 0 and set(data["scores"]) == {"exact_match", "regex"} and data["scores"]["regex"]["overall"]["n"] == 6
    )
    listed = CliRunner().invoke(app, ["list", "--model", "base", "--json", "--project", str(root)])
    assert listed.exit_code == 0 and len(json.loads(listed.output)) == 2


def test_compare_shows_differences_and_win_rate(root: Path) -> None:
    verifier = "speaks"
    code, out, _ = invoke(root, "compare", "silent", "--baseline", "base", "--dataset", "ev", "-v", verifier, "--json")
    data = json.loads(out)
    assert code == 0 and data["differences"][verifier]["overall"]["mean"] == -1.0
    assert data["win_rate"]["overall"]["mean"] == 0.0
    code, out, _ = invoke(root, "compare", "silent", "--baseline", "base", "--dataset", "ev", "-v", verifier)
    assert code == 0 and "silent vs base" in out and "win rate" in out


def test_gate_exit_codes(root: Path) -> None:
    code, out, _ = invoke(root, "gate", "twin", "--baseline", "base", "--dataset", "ev", "--margin", "0")
    assert code == 0 and "gate passed" in out
    verifier = "speaks"
    code, out, _ = invoke(root, "gate", "silent", "--baseline", "base", "--dataset", "ev", "-v", verifier)
    assert code == 1 and "gate FAILED" in out and "cohort 'a'" in out and "cohort 'b'" in out
    code, out, _ = invoke(root, "gate", "silent", "--baseline", "base", "--dataset", "ev", "-v", verifier, "--json")
    assert code == 1 and json.loads(out)["passed"] is False


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["gate", "ghost", "--baseline", "base", "--dataset", "ev"], NotFound),
        (["gate", "twin", "--dataset", "ev"], NotFound),  # nothing is serving
        (["run", "base", "--dataset", "ev", "--samples", "2"], InvalidInput),
        (["run", "base"], InvalidInput),  # no dataset
    ],
)
def test_bad_input_raises_a_posttrain_error_with_exit_code_2(
    root: Path, args: list[str], error: type[Exception]
) -> None:
    code, _, exc = invoke(root, *args)
    assert isinstance(exc, error) and exc.exit_code == 2  # type: ignore[attr-defined]


def test_bad_input_is_one_line_exit_2_through_main(root: Path) -> None:
    """Through ``posttrain``'s real entry point, with the group added as cli/__init__.py adds it."""
    code = "from posttrain.cli import app, evals, main; app.add_typer(evals.app, name='evals'); main()"
    args = ["evals", "run", "base", "--dataset", "nope", "--project", str(root)]
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip() == "error: no dataset 'nope'; run 'posttrain datasets list'"


@pytest.fixture(scope="module")
def served(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the project owned by a running ``posttrain serve`` that can import this module's verifier."""
    from conftest import LiveServer

    copy = Path(shutil.copytree(root, tmp_path_factory.mktemp("served") / "p"))
    with open_project(copy) as proj:
        admin = keys.create_key(proj, "admin").key
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    server = LiveServer(root=copy, admin_key=admin, env={"PYTHONPATH": path}).start()
    yield copy
    server.stop()


@pytest.mark.slow
def test_run_and_gate_go_through_a_running_server(root: Path, served: Path) -> None:
    code, out, exc = invoke(served, "run", "base", "--dataset", "ev", "--json")
    assert code == 0, exc
    assert json.loads(out)["dataset"] == "ev@1" and json.loads(out)["scores"]["exact_match"]["overall"]["n"] == 6
    listed = CliRunner().invoke(app, ["list", "--model", "base", "--json", "--project", str(served)])
    assert listed.exit_code == 0 and json.loads(listed.output)[0]["id"] == json.loads(out)["id"]
    verifier = "speaks"
    gate = ["gate", "silent", "--baseline", "base", "--dataset", "ev", "-v", verifier]
    remote, local = invoke(served, *gate), invoke(root, *gate)
    assert remote[0] == local[0] == 1 and "gate FAILED" in remote[1]
    assert remote[1] == local[1]  # the same table and reasons in both paths
    code, out, _ = invoke(served, *gate, "--json")
    assert code == 1 and json.loads(out)["passed"] is False
    code, out, _ = invoke(served, "gate", "twin", "--baseline", "base", "--dataset", "ev", "--margin", "0")
    assert code == 0 and "gate passed" in out


def test_bad_input_through_a_running_server_names_the_fix(served: Path) -> None:
    _, _, exc = invoke(served, "run", "ghost", "--dataset", "ev")
    assert isinstance(exc, NotFound) and exc.exit_code == 2 and "models list" in exc.message
