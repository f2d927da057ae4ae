"""/api/routes: the gateway's routes and cohort rules."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from posttrain import routing
from posttrain.server.auth import require
from posttrain.server.schemas import ERRORS

router = APIRouter(prefix="/api/routes", tags=["routes"], responses=ERRORS)


class Removed(BaseModel):
    """What was removed."""

    name: str
    kind: str


@router.get("", response_model=routing.RoutingTable, dependencies=[Depends(require("routes.read"))])
def list_routes(request: Request) -> routing.RoutingTable:
    """The routing table in the order it is tried: cohort rules, then routes (warehouse, then posttrain.toml)."""
    return routing.table(request.app.state.project)


@router.post("", status_code=201, response_model=routing.RouteRule, dependencies=[Depends(require("routes.write"))])
def add_route(request: Request, route: routing.RouteRule, replace: bool = False) -> routing.RouteRule:
    """Add a route: requests from a cohort for a model name go to a model or an experiment."""
    stored = routing.add_route(request.app.state.project, route, replace=replace)
    request.app.state.gateway.refresh()
    return stored


@router.post(
    "/cohorts", status_code=201, response_model=routing.CohortRule, dependencies=[Depends(require("routes.write"))]
)
def add_cohort_rule(request: Request, rule: routing.CohortRule, replace: bool = False) -> routing.CohortRule:
    """Add a cohort rule: requests whose metadata satisfy the condition belong to the cohort."""
    stored = routing.add_cohort_rule(request.app.state.project, rule, replace=replace)
    request.app.state.gateway.refresh()
    return stored


@router.delete("/{name}", response_model=Removed, dependencies=[Depends(require("routes.write"))])
def remove(request: Request, name: str) -> Removed:
    """Remove a route or cohort rule by name."""
    kind = routing.remove(request.app.state.project, name)
    request.app.state.gateway.refresh()
    return Removed(name=name, kind=kind)
