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

Conditions are parsed by a small grammar here, never ``eval``: ``or``/``and``/``not``,
parentheses, comparisons ``== != < <= > >=``, ``in (…)``, string/number/true/false literals;
a dotted name reads nested metadata; a missing attribute makes its comparison false; a string that
holds a number compares as that number (OpenAI's ``metadata`` values are strings).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from posttrain.errors import Conflict, InvalidInput, NotFound
from posttrain.names import Name
from posttrain.records import UtcTime

if TYPE_CHECKING:  # settings import this module; the project imports settings
    from posttrain.project import Project

# Bounds: the gateway tries every rule on every request, and one request must not store a novel.
MAX_RULES = 256
_TEXT = 512

# --- conditions ------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?)|(?P<str>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")"
    r"|(?P<op>==|!=|<=|>=|<|>|\(|\)|,)|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"
)
_MISSING = object()
Predicate = Callable[[Mapping[str, Any]], bool]


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            raise InvalidInput(f"condition {text!r}: cannot read {text[pos:].strip()[:20]!r}", field="condition")
        pos = m.end()
        if m.group("num") is not None:
            out.append(("value", float(m.group("num"))))
        elif m.group("str") is not None:
            out.append(("value", re.sub(r"\\(.)", r"\1", m.group("str")[1:-1])))
        elif m.group("op") is not None:
            out.append(("op", m.group("op")))
        else:
            word = m.group("word")
            lowered = word.lower()
            if lowered in ("and", "or", "not", "in"):
                out.append(("op", lowered))
            elif lowered in ("true", "false"):
                out.append(("value", lowered == "true"))
            elif lowered in ("null", "none"):
                out.append(("value", None))
            else:
                out.append(("name", word))
    return out


def _lookup(attributes: Mapping[str, Any], name: str) -> Any:
    value: Any = attributes
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _coerce(value: Any, literal: Any) -> Any:
    if isinstance(literal, float) and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(literal, float) and isinstance(value, bool):
        return value
    if isinstance(literal, float) and isinstance(value, int):
        return float(value)
    if isinstance(literal, bool) and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def _compare(op: str, value: Any, literal: Any) -> bool:
    value = _coerce(value, literal)
    if op == "==":
        return bool(value == literal)
    if op == "!=":
        return bool(value != literal)
    try:
        return bool({"<": value < literal, "<=": value <= literal, ">": value > literal, ">=": value >= literal}[op])
    except TypeError:  # e.g. a string against a number: no match
        return False


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.tokens, self.i = text, _tokens(text), 0

    def fail(self, what: str) -> InvalidInput:
        return InvalidInput(f"condition {self.text!r}: {what}", field="condition")

    def peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, kind: str, value: Any = None) -> Any:
        token = self.peek()
        if token is None or token[0] != kind or (value is not None and token[1] != value):
            found = "the end" if token is None else repr(token[1])
            raise self.fail(f"expected {value or kind}, found {found}")
        self.i += 1
        return token[1]

    def parse(self) -> Predicate:
        if not self.tokens:
            raise self.fail("it is empty")
        predicate = self.disjunction()
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return predicate

    def disjunction(self) -> Predicate:
        parts = [self.conjunction()]
        while self.peek() == ("op", "or"):
            self.i += 1
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else (lambda a: any(p(a) for p in parts))

    def conjunction(self) -> Predicate:
        parts = [self.negation()]
        while self.peek() == ("op", "and"):
            self.i += 1
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else (lambda a: all(p(a) for p in parts))

    def negation(self) -> Predicate:
        if self.peek() == ("op", "not"):
            self.i += 1
            inner = self.negation()
            return lambda a: not inner(a)
        if self.peek() == ("op", "("):
            self.i += 1
            inner = self.disjunction()
            self.take("op", ")")
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        name = self.take("name")
        token = self.peek()
        if token == ("op", "in"):
            self.i += 1
            self.take("op", "(")
            values = [self.take("value")]
            while self.peek() == ("op", ","):
                self.i += 1
                values.append(self.take("value"))
            self.take("op", ")")

            def member(a: Mapping[str, Any]) -> bool:
                value = _lookup(a, name)
                return value is not _MISSING and any(_compare("==", value, v) for v in values)

            return member
        if token is None or token[0] != "op" or token[1] not in ("==", "!=", "<", "<=", ">", ">="):
            raise self.fail(f"expected a comparison after {name!r} (==, !=, <, <=, >, >=, in)")
        self.i += 1
        op, literal = token[1], self.take("value")

        def compare(a: Mapping[str, Any]) -> bool:
            value = _lookup(a, name)
            return value is not _MISSING and _compare(op, value, literal)

        return compare


@functools.lru_cache(maxsize=1024)  # the gateway tries the rules on every request: compile each once
def parse_condition(text: str) -> Predicate:
    """Compile a condition on user attributes; raise InvalidInput naming what is wrong."""
    return _Parser(text).parse()


# --- records ----------------------------------------------------------------------------------


class CohortRule(BaseModel):
    """Requests whose attributes satisfy ``condition`` belong to ``cohort``."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    cohort: str = Field(min_length=1, max_length=_TEXT)
    condition: str = Field(min_length=1, max_length=2000)
    position: int = 0
    created_at: UtcTime | None = None

    @field_validator("condition")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_condition(value)
        return value


class RouteRule(BaseModel):
    """Requests from ``cohort`` asking for ``requested`` are served by ``model`` or ``experiment``."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    cohort: str | None = Field(None, max_length=_TEXT, description="The cohort it applies to; none means every cohort.")
    requested: str | None = Field(
        None, max_length=_TEXT, description="The model name requests ask for; none means any."
    )
    model: str | None = Field(None, max_length=_TEXT, description="The model that serves these requests.")
    experiment: str | None = Field(None, max_length=_TEXT, description="The experiment that serves these requests.")
    position: int = 0
    created_at: UtcTime | None = None

    @model_validator(mode="after")
    def _one_target(self) -> RouteRule:
        if (self.model is None) == (self.experiment is None):
            raise ValueError("a route needs exactly one of model and experiment")
        return self

    def matches(self, cohort: str | None, requested: str) -> bool:
        """Say whether a request from ``cohort`` for ``requested`` takes this route."""
        return (self.cohort is None or self.cohort == cohort) and (self.requested in (None, requested))

    def describe(self) -> str:
        who = f"cohort {self.cohort}" if self.cohort else "every cohort"
        asked = f"model {self.requested!r}" if self.requested else "any model"
        target = f"model {self.model}" if self.model else f"experiment {self.experiment}"
        return f"{who}, {asked} → {target}"


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


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _rows(project: Project, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    result = project.cursor().execute(sql, params or [])
    columns = [d[0] for d in result.description]
    return [dict(zip(columns, row, strict=True)) for row in result.fetchall()]


def _next_position(project: Project, table: str) -> int:
    row = project.cursor().execute(f"SELECT coalesce(max(position), -1) + 1 FROM {table}").fetchone()
    return int(row[0]) if row else 0


def list_cohort_rules(project: Project) -> list[CohortRule]:
    """Return the stored cohort rules in the order they are tried."""
    return [CohortRule(**r) for r in _rows(project, "SELECT * FROM cohort_rules ORDER BY position, name")]


def list_routes(project: Project) -> list[RouteRule]:
    """Return the stored routes in the order they are tried."""
    return [RouteRule(**r) for r in _rows(project, "SELECT * FROM routes ORDER BY position, name")]


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
    stored = record.model_copy(update={"position": position, "created_at": _now()})
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
