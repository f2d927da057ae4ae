"""The one rule for names that become file or folder names (datasets, models, experiments, routes).

A name is 1–128 characters of letters, digits, ``.``, ``_`` and ``-``, starting with a letter or a
digit, with no ``..`` and no trailing ``.``, and not a device name Windows reserves (``con``,
``nul``, ``com1``…). So it is one path component on every OS: no separators (``/``, ``\\``), no
drive letters or colons, no control characters, never ``.`` or ``..``.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema

from posttrain.errors import InvalidInput

MAX_LENGTH = 128
PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
)
RULE = f"use 1-{MAX_LENGTH} letters, digits, '.', '_' or '-', starting with a letter or digit, without '..'"


def name_problem(value: str) -> str | None:
    """Return why ``value`` cannot be a name, or None when it can."""
    if not _PATTERN.fullmatch(value):
        return RULE
    if ".." in value or value.endswith("."):
        return "'..' and a trailing '.' are not allowed in a name"
    if value.split(".", 1)[0].lower() in _WINDOWS_DEVICES:
        return f"{value.split('.', 1)[0]!r} is a device name on Windows; choose another"
    return None


def check_name(value: str, *, field: str = "name", what: str = "name") -> str:
    """Return ``value`` if it is a valid name; raise InvalidInput naming ``field`` and the fix otherwise."""
    if (problem := name_problem(value)) is not None:
        raise InvalidInput(f"{what} {value[:40]!r} is not allowed: {problem}", field=field)
    return value


def _validate(value: str) -> str:
    if (problem := name_problem(value)) is not None:
        raise ValueError(f"{value[:40]!r} is not allowed: {problem}")
    return value


Name = Annotated[
    str,
    AfterValidator(_validate),
    WithJsonSchema({"type": "string", "pattern": PATTERN, "minLength": 1, "maxLength": MAX_LENGTH}),
]
"""A Pydantic field type holding a name (the rule above); its error says how to fix it."""
