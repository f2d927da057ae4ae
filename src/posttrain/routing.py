"""The gateway's routing: who a request is for, which cohort that is, and what serves it.

Two ordered lists, first match wins, kept in the warehouse (``posttrain routes …``, the API) and
optionally in ``posttrain.toml`` (``[[gateway.routes]]``, ``[[gateway.cohort_rules]]``; these
come after the warehouse's):

- **cohort rules** give a request without an explicit cohort (``X-Posttrain-Cohort`` header or
  ``metadata.cohort``) one from its user attributes, the request's ``metadata``: a condition such
  as ``age < 18`` or ``plan in ('free', 'trial') and country == 'DE'``;
- **routes** send a request from a cohort (any, when unset) asking for a model name (any, when
  unset; the name need not be a registered model, so ``assistant`` can be an alias) to a model
  or to an experiment.

Conditions are parsed by ``posttrain.conditions``, never ``eval``; the rules themselves
(``CohortRule``, ``RouteRule``) are records, declared in ``posttrain.records``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, Field

from posttrain.clock import utc_now
from posttrain.conditions import parse_condition as parse_condition  # routing.parse_condition, as before
from posttrain.errors import Conflict, InvalidInput, NotFound
from posttrain.records import CohortRule as CohortRule  # routing.CohortRule, as before
from posttrain.records import RouteRule as RouteRule
from posttrain.warehouse.rows import fetch_all

if TYPE_CHECKING:
    from posttrain.project import Project

# Bounds: the gateway tries every rule on every request, and one request must not store a novel.
MAX_RULES = 256

# --- the table ----------------------------------------------------------------------------------


Rule = TypeVar("Rule", CohortRule, RouteRule)


class RoutingTable(BaseModel):
    """Cohort rules and routes, in the order they are tried."""

    cohort_rules: list[CohortRule] = Field(default_factory=list)
    routes: list[RouteRule] = Field(default_factory=list)

    def cohort_for(self, attributes: Mapping[str, Any]) -> str | None:
        """Return the cohort of the first rule the attributes satisfy, if any."""
        for rule in self.cohort_rules:
            if parse_condition(rule.condition)(attributes):
                return rule.cohort
        return None

    def route_for(self, cohort: str | None, requested: str) -> RouteRule | None:
        """Return the first route a request from ``cohort`` for ``requested`` takes, if any."""
        return next((r for r in self.routes if r.matches(cohort, requested)), None)


# --- storage ----------------------------------------------------------------------------------


def _next_position(project: Project, table: str) -> int:
    row = project.cursor().execute(f"SELECT coalesce(max(position), -1) + 1 FROM {table}").fetchone()
    return int(row[0]) if row else 0


def list_cohort_rules(project: Project) -> list[CohortRule]:
    """Return the stored cohort rules in the order they are tried."""
    return [CohortRule(**r) for r in fetch_all(project.cursor(), "SELECT * FROM cohort_rules ORDER BY position, name")]


def list_routes(project: Project) -> list[RouteRule]:
    """Return the stored routes in the order they are tried."""
    return [RouteRule(**r) for r in fetch_all(project.cursor(), "SELECT * FROM routes ORDER BY position, name")]


def _store(project: Project, table: str, record: Rule, existing: list[Rule], values: list[Any], *,
           replace: bool, what: str) -> Rule:  # fmt: skip
    """Insert ``record`` last in order, or in place of the one of the same name when ``replace``."""
    by_name = {r.name: r for r in existing}
    if record.name in by_name and not replace:
        raise Conflict(f"a {what} named {record.name!r} exists; pass --replace or choose another name")
    if record.name not in by_name and len(existing) >= MAX_RULES:
        raise InvalidInput(f"the routing table holds at most {MAX_RULES} of each kind of rule; remove a {what} first",
                           field="name")  # fmt: skip
    position = by_name[record.name].position if record.name in by_name else _next_position(project, table)
    stored = record.model_copy(update={"position": position, "created_at": utc_now()})
    cur = project.cursor()
    cur.execute(f"DELETE FROM {table} WHERE name = ?", [record.name])
    marks = ", ".join("?" * (len(values) + 3))
    cur.execute(f"INSERT INTO {table} VALUES ({marks})", [record.name, *values, position, stored.created_at])
    return stored


def add_cohort_rule(project: Project, rule: CohortRule, *, replace: bool = False) -> CohortRule:
    """Store a cohort rule (last in order unless it replaces one of the same name)."""
    return _store(project, "cohort_rules", rule, list_cohort_rules(project), [rule.cohort, rule.condition],
                  replace=replace, what="cohort rule")  # fmt: skip


def add_route(project: Project, route: RouteRule, *, replace: bool = False) -> RouteRule:
    """Store a route after checking its model or experiment exists (last in order unless it replaces one)."""
    from posttrain.experiments import get_experiment
    from posttrain.models.registry import find_model

    if route.model is not None and find_model(project, route.model) is None:
        upstream = project.settings.gateway.upstream_models
        if route.model not in upstream:
            raise NotFound(
                f"no model {route.model!r}; register it ('posttrain models register') or list it in "
                "gateway.upstream_models",
                field="model",
            )
    if route.experiment is not None:
        get_experiment(project, route.experiment)
    values = [route.cohort, route.requested, route.model, route.experiment]
    return _store(project, "routes", route, list_routes(project), values, replace=replace, what="route")


def remove(project: Project, name: str) -> str:
    """Delete a route or cohort rule by name; return which it was."""
    cur = project.cursor()
    for table, kind in (("routes", "route"), ("cohort_rules", "cohort rule")):
        if cur.execute(f"SELECT 1 FROM {table} WHERE name = ?", [name]).fetchone():
            cur.execute(f"DELETE FROM {table} WHERE name = ?", [name])
            return kind
    raise NotFound(f"no route or cohort rule {name!r}; see 'posttrain routes list'", field="name")


def table(project: Project) -> RoutingTable:
    """Return the routing table: the warehouse's rules, then ``posttrain.toml``'s."""
    settings = project.settings.gateway
    return RoutingTable(
        cohort_rules=[*list_cohort_rules(project), *settings.cohort_rules],
        routes=[*list_routes(project), *settings.routes],
    )
