"""The ``posttrain`` command: one Typer group per stage, each a thin skin over the library."""

from __future__ import annotations

import os
import sys
from typing import Annotated, NoReturn

import duckdb
import typer
from pydantic import ValidationError

from posttrain.cli import (
    annotate,
    capture,
    compute,
    curate,
    datasets,
    demo,
    evals,
    experiments,
    generate,
    jobs,
    keys,
    loop,
    models,
    project,
    routing,
    server,
    train,
    warehouse,
)
from posttrain.errors import PosttrainError
from posttrain.validation import invalid_input
from posttrain.version import __version__

app = typer.Typer(
    name="posttrain",
    help="posttrain: capture, warehouse and improve language models after pre-training.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
project.register(app)
server.register(app)
app.add_typer(keys.app, name="keys")
app.add_typer(capture.app, name="capture")
app.add_typer(datasets.app, name="datasets")
app.add_typer(curate.app, name="curate")
app.add_typer(models.app, name="models")
app.add_typer(train.app, name="train")
app.add_typer(experiments.app, name="experiments")
app.add_typer(annotate.app, name="annotate")
app.add_typer(routing.app, name="routes")
app.add_typer(evals.app, name="evals")
app.add_typer(loop.app, name="loop")
app.add_typer(jobs.app, name="jobs")
app.add_typer(compute.app, name="compute")
app.add_typer(warehouse.app, name="warehouse")
generate.register(app)
demo.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"posttrain {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


def _usage_errors() -> tuple[type[Exception], ...]:
    """Return Click's usage-error base classes: Typer's bundled copy and, where installed, click's own."""
    kinds: list[type[Exception]] = []
    if hasattr(typer, "TyperException"):  # typer >= 0.20 bundles click as typer._click
        kinds.append(typer.TyperException)
    try:
        from click import ClickException
    except ImportError:
        pass
    else:
        kinds.append(ClickException)
    return tuple(kinds)


def _usage_message(exc: Exception) -> str:
    """Return Click's error as one line that says where the help is."""
    message = exc.format_message()  # type: ignore[attr-defined]
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return message
    return f"{message.rstrip('.')}; see '{ctx.command_path} --help'"


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    sys.exit(code)


def main() -> None:
    """Run the CLI; every failure prints one line ``error: ...`` and exits 2 (usage) or 1, never a traceback."""
    # What the command creates (the warehouse's WAL, server.json, datasets, models, exports of
    # users' conversations) is for its owner only; DuckDB creates its files with the umask's mode.
    os.umask(0o077)
    try:
        code = app(standalone_mode=False)
    except PosttrainError as exc:
        _fail(exc.message, exc.exit_code)
    except ValidationError as exc:  # options that build a record the record rejects
        invalid = invalid_input(exc)
        _fail(invalid.message, invalid.exit_code)
    except typer.Abort:
        _fail("aborted", 1)
    except (typer.Exit, SystemExit) as exc:
        sys.exit(exc.exit_code if isinstance(exc, typer.Exit) else exc.code)
    except _usage_errors() as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a group without its command: the help
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        _fail(_usage_message(exc), getattr(exc, "exit_code", 2))
    except duckdb.Error as exc:  # the warehouse file itself: corrupt, unreadable, from a newer DuckDB
        _fail(f"the warehouse failed: {exc}", 1)
    except OSError as exc:  # the filesystem said no: a folder under a file, no permission, disk full
        _fail(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc), 1)
    if isinstance(code, int) and code:
        sys.exit(code)
