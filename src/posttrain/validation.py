"""Pydantic's validation errors as posttrain's: one field, one line, without pydantic's wording.

Pydantic prefixes what a validator raises with ``Value error, ``; a user reads
``suite.scorers: verifier 'x': …``, never ``suite.scorers: Value error, verifier 'x': …``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from posttrain.errors import InvalidInput
from posttrain.records import field_path


def error_field(error: Mapping[str, Any]) -> str:
    """Return where one of pydantic's errors is, as a dotted path ('' for the whole object)."""
    return field_path(tuple(error["loc"]))


def error_message(error: Mapping[str, Any]) -> str:
    """Return what one of pydantic's errors says, without its ``Value error, `` prefix."""
    return str(error["msg"]).removeprefix("Value error, ")


def invalid_input(exc: ValidationError, *, prefix: str = "", field: str | None = None) -> InvalidInput:
    """Return the first error of ``exc`` as InvalidInput ``{prefix}{field}: {message}``.

    ``field`` names the error when pydantic's does not locate it (a check across fields).
    """
    error = exc.errors(include_url=False)[0]
    where = error_field(error) or field
    message = error_message(error)
    return InvalidInput(f"{prefix}{where}: {message}" if where else f"{prefix}{message}", field=where)
