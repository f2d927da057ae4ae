"""Render library results for a terminal: a rich table, or JSON with ``--json``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()


def as_json(value: Any) -> None:
    """Print ``value`` (a record, a list of records, or plain data) as JSON."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    typer.echo(orjson.dumps(value, default=str, option=orjson.OPT_INDENT_2).decode())


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None) -> None:
    """Print rows as a table."""
    out = Table(title=title, show_lines=False)
    for name in columns:
        out.add_column(str(name), overflow="fold")
    for row in rows:
        out.add_row(*("" if v is None else str(v) for v in row))
    console.print(out)


def records(items: Sequence[BaseModel], columns: Sequence[str], *, title: str | None = None) -> None:
    """Print records as a table of the given fields."""
    table(columns, [[getattr(item, c) for c in columns] for item in items], title=title)


@contextlib.contextmanager
def stage_bars(quiet: bool) -> Iterator[Callable[[str, int, int], None]]:
    """Yield a callback ``(stage, done, total)`` that draws one transient progress bar per stage (none when quiet)."""
    if quiet:
        yield lambda what, done, total: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True, console=console, disable=not console.is_terminal) as bars:
        tasks: dict[str, TaskID] = {}

        def on_stage(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bars.add_task(what.removeprefix("the "), total=total)
            bars.update(tasks[what], completed=done, total=total)

        yield on_stage
