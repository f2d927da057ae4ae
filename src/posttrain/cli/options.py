"""Options every command shares, and how a command reaches its project."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from posttrain.cli.remote import Remote
from posttrain.project import Project, open_project, resolve_root

T = TypeVar("T")

ProjectOption = Annotated[
    Path | None,
    typer.Option(
        "--project",
        "-p",
        help="Project folder (default: $POSTTRAIN_PROJECT, else the current folder).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def load(project: Path | None, **overrides: Any) -> Project:
    """Open the project named by ``--project`` / ``$POSTTRAIN_PROJECT`` / the cwd."""
    return open_project(resolve_root(project), env=dict(os.environ), **overrides)


KEY_ENV = "POSTTRAIN_API_KEY"


def remote_for(project: Project) -> Remote | None:
    """Return a client for the ``posttrain serve`` that owns this project, if one runs.

    It calls as ``$POSTTRAIN_API_KEY`` when set (an annotator labelling as their own key, a viewer
    whose SQL the viewer's bounds limit), else with the server's control token. A PostgreSQL
    warehouse has no single writer, so commands there never go through a server.
    """
    if project.is_postgres:  # no single writer: the command works on the shared database itself
        return None
    server = project.running_server()
    return Remote(server["url"], os.environ.get(KEY_ENV) or server["token"]) if server else None


def through_server(
    project: Path | None,
    local: Callable[[Project], T],
    remote: Callable[[Remote], T],
) -> T:
    """Run ``local`` on the warehouse, or ``remote`` on the API when ``posttrain serve`` owns it."""
    proj = load(project)
    client = remote_for(proj)
    if client is not None:
        return remote(client)
    with proj:
        return local(proj)
