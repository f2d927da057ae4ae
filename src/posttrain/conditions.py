"""Conditions on user attributes, such as ``age < 18`` or ``plan in ('free', 'trial') and country == 'DE'``.

Cohort rules use them to give a request a cohort from its ``metadata``. They are parsed by a small
grammar here, never ``eval``: ``or``/``and``/``not``, parentheses, comparisons ``== != < <= > >=``,
``in (…)``, string/number/true/false literals; a dotted name reads nested metadata; a missing
attribute makes its comparison false; a string that holds a number compares as that number
(OpenAI's ``metadata`` values are strings).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

from posttrain.errors import InvalidInput

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
