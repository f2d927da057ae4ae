"""The web pages (``/ui``): server-rendered, signed in with an API key, never in the OpenAPI document.

``signin`` holds the sign-in form and the static files, ``annotate`` the annotator's workspace, and
one module per console page (``overview``, ``interactions``, ``datasets``, ``models``, ``jobs``,
``experiments``, ``evals``, ``playground``) over the shared ``console``, ``nav`` and ``formats``;
``session`` the sessions and CSRF tokens, ``render`` the templates. Pages call the same library
functions as the API and check roles with the same ``keys.authorize``.
"""

from __future__ import annotations

from fastapi import APIRouter

from posttrain.server.ui import (
    annotate,
    datasets,
    evals,
    experiments,
    interactions,
    jobs,
    models,
    overview,
    playground,
    signin,
)

router = APIRouter(include_in_schema=False)
for module in (signin, overview, interactions, datasets, models, jobs, experiments, evals, playground, annotate):
    router.include_router(module.router, prefix="/ui")

__all__ = ["router"]
