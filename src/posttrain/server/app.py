"""Build the FastAPI app over one project: auth, the JSON error shape, the routers."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from posttrain import __version__, gateway
from posttrain.capture import Ingestor
from posttrain.errors import PosttrainError
from posttrain.project import Project
from posttrain.server.auth import KeyCache, check_access
from posttrain.server.job_runner import JobRunner
from posttrain.server.limits import BodyLimit, ConcurrencyLimit
from posttrain.server.responses import JSONResponse
from posttrain.server.routes import (
    annotate,
    capture,
    curate,
    datasets,
    evals,
    experiments,
    interactions,
    jobs,
    keys,
    loop,
    models,
    routing,
    sql,
    train,
)
from posttrain.server.routes import gateway as gateway_routes
from posttrain.server.schemas import extra_schemas
from posttrain.server.sql_runner import SqlRunner
from posttrain.server.ui import router as ui_router
from posttrain.validation import error_message

log = logging.getLogger("posttrain.server")

_ROUTERS = (
    capture.router,
    interactions.router,
    datasets.router,
    curate.router,
    models.router,
    jobs.router,
    train.router,
    evals.router,
    experiments.router,
    annotate.router,
    routing.router,
    loop.router,
    keys.router,
    sql.router,
)


def error_response(status: int, kind: str, message: str, field: str | None = None, **headers: str) -> JSONResponse:
    """Return the one error shape every 4xx/5xx uses."""
    body = {"error": {"type": kind, "message": message, "field": field}}
    return JSONResponse(body, status_code=status, headers=headers or None)


def _error(
    request: Request, status: int, kind: str, message: str, field: str | None = None, **headers: str
) -> JSONResponse:
    """Return posttrain's error shape, or OpenAI's under /v1 so OpenAI's SDKs read it."""
    if request.url.path.startswith("/v1/"):
        body = gateway.openai_error(status, message, field)
        return JSONResponse(body, status_code=status, headers=headers or None)
    return error_response(status, kind, message, field, **headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PosttrainError)
    async def _posttrain(request: Request, exc: PosttrainError) -> JSONResponse:
        headers = {}
        if (retry := getattr(exc, "retry_after", None)) is not None:
            headers["Retry-After"] = str(max(1, round(retry)))
        return _error(request, exc.status, type(exc).__name__, exc.message, exc.field, **headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        try:
            await check_access(request)  # FastAPI parses a body before it checks the key: refuse strangers first
        except PosttrainError as refused:
            return await _posttrain(request, refused)
        err = exc.errors()[0]
        if err["type"] == "json_invalid":  # its loc is a character offset, not a field
            reason = err.get("ctx", {}).get("error", err["msg"])
            return _error(request, 400, "InvalidInput", f"body is not valid JSON: {reason}", "body")
        loc = [str(p) for p in err["loc"] if p not in ("body", "query", "path", "header")]
        field = ".".join(loc) or "body"
        return _error(request, 400, "InvalidInput", f"{field}: {error_message(err)}", field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(request, exc.status_code, "HTTPError", str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _error(request, 500, "InternalError", f"unexpected error: {type(exc).__name__}: {exc}")


async def _watch_experiments(app: FastAPI, seconds: float) -> None:
    """Every ``seconds``, roll back running experiments whose guardrail is breached (always-valid test)."""
    from posttrain.experiments import check_running

    while True:
        await asyncio.sleep(seconds)
        try:
            made = await asyncio.to_thread(check_running, app.state.project)
        except Exception:  # a failed check must not stop the next one
            log.exception("checking running experiments failed")
            continue
        for decision in made:
            log.warning("experiment %s rolled back: %s", decision.analysis.experiment, "; ".join(decision.reasons))
        if made:
            app.state.gateway.refresh()


def create_app(project: Project, *, control_token: str | None = None, sandbox_sql: bool = True) -> FastAPI:
    """Build the app. ``control_token`` is an extra admin key for local CLI calls to this server.

    With ``sandbox_sql`` the warehouse refuses file access (no COPY, ATTACH or file reads), one of
    the walls around users' SQL (see ``posttrain.warehouse.sandbox``).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ingestor = Ingestor(project, project.settings.capture)
        key_env = project.settings.gateway.upstream_api_key_env
        upstream_key = os.environ.get(key_env) if key_env else None
        app.state.gateway = gateway.Gateway(project, app.state.ingestor, upstream_api_key=upstream_key)
        interval = project.settings.gateway.experiment_check_seconds
        watcher = asyncio.create_task(_watch_experiments(app, interval)) if interval > 0 else None
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
            app.state.sql.close()
            await app.state.gateway.close()  # before the ingestor, so the last interactions are drained
            app.state.ingestor.close()

    app = FastAPI(
        title="posttrain",
        version=__version__,
        description="Capture, warehouse and flywheel API of a posttrain project.",
        lifespan=lifespan,
        default_response_class=JSONResponse,
        docs_url=None,  # FastAPI's Swagger UI and ReDoc load their scripts from a CDN: blank offline
        redoc_url=None,
    )
    app.add_route("/docs", _docs_page, methods=["GET"], include_in_schema=False)
    project.open()  # open and migrate before the first request
    if sandbox_sql and not project.is_postgres:
        project.con.execute("SET enable_external_access = false")
    app.state.project = project
    app.state.keys = KeyCache(project, control_token=control_token)
    app.state.sql = SqlRunner(project, project.settings.sql)
    app.state.runner = JobRunner()
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=project.settings.server.max_body_bytes)
    app.add_middleware(
        ConcurrencyLimit,
        limit=project.settings.server.max_requests_in_flight,
        retry_after=project.settings.capture.retry_after_seconds,
    )

    @app.get("/health", tags=["server"], openapi_extra={"security": []})  # needs no key
    async def health() -> dict[str, Any]:
        """Say the server is up; needs no key."""
        return {"status": "ok", "version": __version__}

    for router in _ROUTERS:
        app.include_router(router)
    app.include_router(gateway_routes.router)  # OpenAI's wire format: not in posttrain's OpenAPI document
    app.include_router(ui_router, include_in_schema=False)  # the web pages (/ui): signed in by a session cookie
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


_DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>posttrain API</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 2em auto">
<h1>posttrain API</h1>
<p>The API is described by its OpenAPI document: <a href="/openapi.json">/openapi.json</a>.
Every route, its roles and its parameters are also in the project's <code>docs/reference/http.md</code>.</p>
<p>Send the key of a role as <code>Authorization: Bearer &lt;key&gt;</code>; load the document into any
OpenAPI viewer you have installed to try the routes.</p>
</body></html>
"""


async def _docs_page(request: Request) -> HTMLResponse:
    """Serve a page that links the OpenAPI document; it loads nothing from the network (works offline)."""
    return HTMLResponse(_DOCS_PAGE)


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {}).setdefault("schemas", {}).update(extra_schemas())
        schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        schema["security"] = [{"bearer": []}]
        app.openapi_schema = schema
    return app.openapi_schema


def route_table() -> list[tuple[str, str, str]]:
    """Return (method, path, summary) for every route, /health first."""

    rows = [("GET", "/health", "Say the server is up; needs no key.")]
    for router in _ROUTERS:
        for route in router.routes:
            if isinstance(route, APIRoute):
                summary = (route.endpoint.__doc__ or "").strip().splitlines()[0]
                rows += [(method, route.path, summary) for method in sorted(route.methods or ())]
    return rows
