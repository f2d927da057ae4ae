"""The web pages (``/ui``): server-rendered, signed in with an API key, never in the OpenAPI document.

``signin`` holds the sign-in form and the static files, ``annotate`` the annotator's workspace;
``session`` the sessions and CSRF tokens, ``render`` the templates. Pages call the same library
functions as the API and check roles with the same ``keys.authorize``.
"""

from __future__ import annotations

from fastapi import APIRouter

from posttrain.server.ui import annotate, signin

router = APIRouter(include_in_schema=False)
router.include_router(signin.router, prefix="/ui")
router.include_router(annotate.router, prefix="/ui")

__all__ = ["router"]
