"""Render the pages: the Jinja2 templates (autoescaped), safe markdown, the static files they load."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from posttrain import __version__
from posttrain.server.ui import formats, nav

STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
SECURITY_HEADERS = {
    # every script and style is ours, served from /ui/static: nothing inline, nothing from the network
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@cache
def environment() -> Environment:
    """Return the template environment (autoescape on for every template)."""
    env = Environment(
        loader=PackageLoader("posttrain.server", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["markdown"] = markdown
    env.globals.update(version=__version__, nav_for=nav.nav_for, allowed=nav.allowed, chart=formats.chart)
    env.filters.update(when=formats.when, pct=formats.pct, num=formats.num)
    return env


@cache
def _markdown_parser() -> Any:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")


def markdown(text: str) -> Markup:
    """Render markdown with raw HTML disabled (it shows as text), so guidelines cannot inject script."""
    return Markup(_markdown_parser().render(text or ""))  # noqa: S704 - html is off: the parser escapes


def render(name: str, status: int = 200, /, **context: Any) -> HTMLResponse:
    """Render the template ``name`` into an HTML response with the pages' security headers."""
    html = environment().get_template(name).render(**context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def static_file(name: str) -> Response | None:
    """Return the packaged static file ``name`` (a plain file name), or None if there is none."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    if suffix not in STATIC_TYPES or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = resources.files("posttrain.server").joinpath("static", name)
    if not path.is_file():
        return None
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
    return Response(path.read_bytes(), media_type=STATIC_TYPES[suffix], headers=headers)


def wants_fragment(request: Request) -> bool:
    """Say whether the page's script asked for an HTML fragment rather than a whole page."""
    return request.headers.get("x-fragment") == "1"
