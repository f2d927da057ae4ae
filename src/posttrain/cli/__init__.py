"""The ``posttrain`` command: one Typer group per stage, each a thin skin over the library."""

from __future__ import annotations

import os
import sys

import typer
from pydantic import ValidationError

from posttrain.cli import (
    capture,
    datasets,
    demo,
    evals,
    experiments,
    generate,
    keys,
    loop,
    models,
    project,
    routing,
    server,
    train,
)
from posttrain.errors import PosttrainError
from posttrain.validation import invalid_input

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
app.add_typer(models.app, name="models")
app.add_typer(train.app, name="train")
app.add_typer(experiments.app, name="experiments")
app.add_typer(routing.app, name="routes")
app.add_typer(evals.app, name="evals")
app.add_typer(loop.app, name="loop")
generate.register(app)
demo.register(app)


def main() -> None:
    """Run the CLI; a posttrain error prints one line and exits non-zero, never a traceback."""
    # What the command creates (the warehouse's WAL, server.json, datasets, models, exports of
    # users' conversations) is for its owner only; DuckDB creates its files with the umask's mode.
    os.umask(0o077)
    try:
        code = app(standalone_mode=False)
    except PosttrainError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except ValidationError as exc:  # options that build a record the record rejects
        invalid = invalid_input(exc)
        typer.echo(f"error: {invalid.message}", err=True)
        sys.exit(invalid.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except (typer.Exit, SystemExit) as exc:
        code = exc.exit_code if isinstance(exc, typer.Exit) else exc.code
        sys.exit(code)
    except Exception as exc:  # click's usage errors arrive here in non-standalone mode
        from click import ClickException

        if isinstance(exc, ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    if isinstance(code, int) and code:
        sys.exit(code)
