"""``posttrain keys create|list|revoke``."""

from __future__ import annotations

from typing import Annotated

import typer

from posttrain import keys as library
from posttrain.cli import render
from posttrain.cli.options import JsonOption, ProjectOption, load, remote_for
from posttrain.records import ApiKey, NewApiKey

app = typer.Typer(
    help="API keys: create, list and revoke (roles: admin, ingest, annotator, viewer).", no_args_is_help=True
)
_COLUMNS = ["id", "prefix", "role", "name", "created_at", "revoked_at"]


@app.command()
def create(
    role: Annotated[str, typer.Option("--role", "-r", help="admin, ingest, annotator or viewer.")],
    name: Annotated[str | None, typer.Option(help="A label to recognise the key by.")] = None,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Create an API key; its secret is printed once."""
    proj = load(project)
    remote = remote_for(proj)
    if remote is not None:
        key = NewApiKey(**remote.call("POST", "/api/keys", json={"role": role, "name": name}))
    else:
        with proj:
            key = library.create_key(proj, role, name=name)
    if json:
        render.as_json(key)
    else:
        typer.echo(f"created {key.role} key {key.id} (shown once): {key.key}")


@app.command("list")
def list_(project: ProjectOption = None, json: JsonOption = False) -> None:
    """List API keys (never their secrets)."""
    proj = load(project)
    remote = remote_for(proj)
    if remote is not None:
        found = [ApiKey(**k) for k in remote.call("GET", "/api/keys")]
    else:
        with proj:
            found = library.list_keys(proj)
    if json:
        render.as_json(found)
    else:
        render.records(found, _COLUMNS, title="API keys")


@app.command()
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id or prefix (see 'posttrain keys list').")],
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Revoke an API key; it stops working at once."""
    proj = load(project)
    remote = remote_for(proj)
    if remote is not None:
        key = ApiKey(**remote.call("DELETE", f"/api/keys/{key_id}"))
    else:
        with proj:
            key = library.revoke_key(proj, key_id)
    if json:
        render.as_json(key)
    else:
        typer.echo(f"revoked {key.role} key {key.id} ({key.prefix}…)")
