"""Python functions a project trusts, by name: the only way user code runs in posttrain.

Verifiers, GRPO/RLOO rewards and pairwise judges written in Python are registered in the
project's ``posttrain.toml``, and requests (HTTP, CLI, loop recipes, a dataset's ``verifier``
column) refer to them by name only::

    [functions.verifiers]
    arith = "mypkg.checks:arith"     # f(completion, answer, **row) -> float in [0, 1]
    [functions.rewards]
    brevity = "mypkg.rewards:brevity"   # TRL reward: f(prompts, completions, **columns) -> list[float | None]
    [functions.judges]
    style = "mypkg.judges:style"     # f(first, second, **row) -> float in [0, 1]

A module path in a request (``python:os:system``, ``os:system``) is refused before anything is
imported: whoever can edit ``posttrain.toml`` owns the machine already; whoever holds a key does not.
"""

from __future__ import annotations

import importlib
import numbers
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

from posttrain.errors import InvalidInput

Kind = Literal["verifiers", "rewards", "judges"]
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


def check_name(name: str, *, what: str, field: str) -> None:
    """Refuse a function reference that is not a plain name (a module path above all)."""
    if NAME.match(name):
        return
    if ":" in name or "." in name:
        raise InvalidInput(
            f"{what} {name!r}: module paths are not accepted; register the function in posttrain.toml "
            f"under [functions] and refer to it by its name",
            field=field,
        )
    raise InvalidInput(f"{what} {name!r}: a name is letters, digits, _ and -", field=field)


def load(registry: Mapping[str, str], kind: Kind, name: str, *, field: str) -> Callable[..., Any]:
    """Import the function ``[functions.<kind>]`` registers as ``name``."""
    target = registry.get(name)
    if target is None:
        known = ", ".join(sorted(registry)) or "none registered"
        raise InvalidInput(
            f"no {kind[:-1]} {name!r} in posttrain.toml [functions.{kind}] ({known})",
            field=field,
        )
    module_name, _, function_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module's own failure on import: say whose
        raise InvalidInput(
            f"[functions.{kind}] {name} = {target!r}: cannot import {module_name!r} ({exc}); "
            "install it or add its folder to PYTHONPATH",
            field=field,
        ) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise InvalidInput(f"[functions.{kind}] {name} = {target!r}: no function {function_name!r}", field=field)
    return function  # type: ignore[no-any-return]


def call_score(function: Callable[..., Any], what: str, *args: Any, **kwargs: Any) -> float:
    """Call a registered scoring function and return its score in [0, 1]; a wrong one is a 400, not a 500."""
    try:
        value = function(*args, **kwargs)
    except TypeError as exc:
        raise InvalidInput(f"{what} could not be called with these arguments: {exc}") from None
    except Exception as exc:  # the registered function's own failure: say whose, not a 500
        raise InvalidInput(f"{what} failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(value, numbers.Real):
        raise InvalidInput(f"{what} returned {type(value).__name__}, not a number; make it return a score in [0, 1]")
    score = float(value)
    if not 0.0 <= score <= 1.0:
        raise InvalidInput(f"{what} returned {score}, outside [0, 1]; make it return a score in [0, 1]")
    return score
