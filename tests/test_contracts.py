"""Contracts that hold the package's shape in place."""

from __future__ import annotations

import subprocess
import sys

import posttrain
from posttrain import errors

HEAVY = ["torch", "transformers", "trl", "peft", "accelerate", "datasets", "ray"]


def test_import_posttrain_stays_light() -> None:
    code = f"import sys, posttrain; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_all_is_exactly_the_public_api() -> None:
    public = {name for name in vars(posttrain) if not name.startswith("_")} - {"annotations", "TYPE_CHECKING", "Any"}
    modules = {name for name in public if type(getattr(posttrain, name)).__name__ == "module"}
    assert set(posttrain.__all__) - {"__version__"} >= public - modules - {
        "errors",
        "project",
        "records",
        "ids",
        "settings",
        "warehouse",
    }
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
