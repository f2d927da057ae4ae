"""``posttrain serve``: the HTTP API (capture, warehouse) on loopback by default."""

from __future__ import annotations

import gc
import json
import os
import secrets
import signal
import socket
from collections.abc import Callable
from types import FrameType
from typing import Annotated

import typer

from posttrain.cli.options import ProjectOption, load
from posttrain.project import Project


def serve(
    project: ProjectOption = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (setting server.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port; 0 picks a free one (setting server.port).")] = None,
    get: Annotated[
        str | None, typer.Option("--get", help="Send one GET PATH through the app without a socket, print it, exit.")
    ] = None,
) -> None:
    """Serve the project's HTTP API until interrupted; other commands then work through it."""
    import uvicorn

    from posttrain.server import create_app

    proj = load(project, **{"server.host": host, "server.port": port})
    token = secrets.token_urlsafe(24)
    app = create_app(proj, control_token=token)
    if get is not None:
        _get_once(app, get, token)
        proj.close()
        return
    sock = _bind(proj.settings.server.host, proj.settings.server.port)
    bound_host, bound_port = sock.getsockname()[:2]
    url = f"http://{bound_host}:{bound_port}"
    _write_server_file(proj, url, token)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=10)
    typer.echo(f"posttrain serving {proj.root} at {url} (docs: {url}/docs)", err=True)
    typer.echo(f"console: {url}/ui (sign in with an API key: posttrain keys create --role viewer)", err=True)
    _tune_gc()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it: exit through our clean-up instead
    signal.signal(signal.SIGTERM, _exit)
    try:
        _server_class()(config, on_exit=app.state.sql.close).run(sockets=[sock])
    finally:
        proj.server_file.unlink(missing_ok=True)
        proj.close()


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, which also stops running SQL the moment a shutdown signal arrives."""

        def __init__(self, config: uvicorn.Config, *, on_exit: Callable[[], None]) -> None:
            super().__init__(config)
            self._on_exit = on_exit

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            self._on_exit()  # else graceful shutdown waits for every slow query to time out
            super().handle_exit(sig, frame)

    return Server


def _exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _tune_gc() -> None:
    # A capture batch keeps ~30 containers per event alive until its group commits; with the
    # default thresholds a full collection runs every few requests (~20% of a loaded server's time).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _get_once(app: object, path: str, token: str) -> None:
    from fastapi.testclient import TestClient

    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:  # type: ignore[arg-type]
        response = client.get(path)
    typer.echo(response.text)
    if response.status_code >= 400:
        raise typer.Exit(1)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        from posttrain.errors import Conflict

        raise Conflict(f"cannot listen on {host}:{port}: {exc.strerror}; pick another with --port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _write_server_file(project: Project, url: str, token: str) -> None:
    path = project.server_file
    path.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file left by a crash keeps its old mode through O_CREAT; it holds a token
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "pid": os.getpid(), "token": token}, f)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the root app."""
    app.command()(serve)
