"""Contracts that hold the package's shape in place."""

from __future__ import annotations

import ast
import subprocess
import sys
import types
from pathlib import Path

import pytest

import posttrain
from posttrain import errors

HEAVY = ["torch", "transformers", "trl", "peft", "accelerate", "datasets", "ray"]


def test_import_posttrain_stays_light() -> None:
    code = f"import sys, posttrain; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_all_is_exactly_the_public_api() -> None:
    typing_names = {"annotations", "TYPE_CHECKING", "Any"}
    defined = {
        name
        for name, value in vars(posttrain).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name not in typing_names
    }
    lazy = {"AsyncClient", "Client"}  # imported on first use, so `import posttrain` stays light
    assert posttrain.__all__ == sorted(posttrain.__all__)
    assert set(posttrain.__all__) == defined | lazy | {"__version__"}
    for name in posttrain.__all__:
        assert getattr(posttrain, name) is not None


def test_error_tree_has_statuses_and_exit_codes() -> None:
    for cls in [
        errors.InvalidInput,
        errors.PayloadTooLarge,
        errors.Unauthorized,
        errors.Forbidden,
        errors.NotFound,
        errors.Conflict,
        errors.Overloaded,
        errors.WarehouseBusy,
        errors.Unavailable,
        errors.DependencyMissing,
        errors.JobFailed,
    ]:
        assert issubclass(cls, errors.PosttrainError)
        assert 400 <= cls.status < 600 and cls.exit_code in (1, 2)
    assert errors.InvalidInput("x", field="f").to_dict() == {"type": "InvalidInput", "message": "x", "field": "f"}


def test_every_stage_has_its_cli_group_and_router() -> None:
    import typer

    from posttrain.cli import app
    from posttrain.server.app import route_table

    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    prefixes = {path.split("/")[2] for _, path, _ in route_table() if path.startswith("/api/")}
    for stage in ("capture", "keys", "datasets", "models", "train", "evals", "experiments", "routes", "loop"):
        assert stage in commands and stage in prefixes
    assert "sql" in commands and "sql" in prefixes


def test_every_cli_command_has_help() -> None:
    from posttrain.reference import cli_reference

    for line in cli_reference().splitlines():
        if line.startswith("- **"):
            assert line.split("—", 1)[1].strip(), line


# --- import circles ---------------------------------------------------------------------------
#
# How an import counts, so that the graph is the one a reader sees:
# - every import statement counts, wherever it stands: at module level, inside a function (a lazy
#   import runs too, only later) and under ``if TYPE_CHECKING:`` (a layer is a layer for types too);
# - ``import a.b`` and ``from a.b import x`` are an edge to ``a.b``; ``from a import b`` is an edge to
#   the submodule ``a.b`` when there is one, else to ``a`` (its ``__init__``); relative imports are
#   resolved first;
# - a package's ``__init__`` is a module like any other: what it imports, re-exports included, are its
#   edges. The ancestor packages Python runs on the way to ``a.b.c`` are not edges of the importer:
#   they run whoever imports, and counting them would make every package that re-exports from its own
#   submodules a circle with them. A module that imports a name from a package whose ``__init__``
#   imports that module (even lazily, even only to re-export it) is a circle, and is reported.

SOURCE = Path(posttrain.__file__).parent


def _module_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in SOURCE.rglob("*.py"):
        parts = ["posttrain", *path.relative_to(SOURCE).with_suffix("").parts]
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def _imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Return the posttrain modules that ``module`` imports, by the rules above."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names += [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    found: set[str] = set()
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        found.add(name)
    return found - {"", module}


def _circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Return the strongly connected components of more than one module."""
    reach = {start: _reachable(graph, start) for start in graph}
    components = {frozenset({m} | {o for o in reach[m] if m in reach[o]}) for m in graph}
    return sorted((set(c) for c in components if len(c) > 1), key=sorted)


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_no_import_circles() -> None:
    modules = _module_files()
    graph = {name: _imported(name, path, modules) for name, path in modules.items()}
    assert _circles(graph) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [{"a", "b", "c"}]),
        ({"a": {"b"}, "b": set(), "c": {"a"}}, []),
    ],
)
def test_circles_finds_strongly_connected_components(graph: dict[str, set[str]], expected: list[set[str]]) -> None:
    assert _circles(graph) == expected
