"""One SQL condition over the interactions (alias ``i``), as dataset builds and safety training take it."""

from __future__ import annotations

import duckdb

from posttrain.errors import InvalidInput


def _operators(sql: str) -> list[str]:
    """Return the operator tokens of ``sql`` (outside strings); refuse comments."""
    tokens = duckdb.tokenize(sql)
    found = []
    for n, (start, kind) in enumerate(tokens):
        if kind == duckdb.token_type.comment:
            raise ValueError("where must not hold SQL comments ('--', '/* */')")
        if kind == duckdb.token_type.operator:
            found.append(sql[start : tokens[n + 1][0] if n + 1 < len(tokens) else len(sql)])
    return found


def check_where(where: str | None) -> str | None:
    """Accept one boolean expression: no ';', comments or parameters; parentheses balanced outside strings."""
    if where is None or not where.strip():
        return None
    if ";" in where:
        raise ValueError("where must be one SQL condition over 'i' (the interactions), without ';'")
    depth = 0
    for text in _operators(where):
        if "$" in text or "?" in text:
            raise ValueError("where must not hold parameters ($name, ?); write the values in the condition")
        depth += text.count("(") - text.count(")")
        if depth < 0:
            raise ValueError("where has a ')' without its '('; give one condition, e.g. \"i.cohort = 'pro'\"")
    if depth:
        raise ValueError("where has unbalanced parentheses; give one condition, e.g. \"i.cohort = 'pro'\"")
    return where.strip()


def check_where_binds(cur: duckdb.DuckDBPyConnection, where: str | None) -> None:
    if where is None:
        return
    try:
        cur.execute(f"SELECT 1 FROM interactions i WHERE ({where}) LIMIT 0")
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        raise InvalidInput(
            f"where {where!r} is not a condition over interactions 'i': {first}", field="where"
        ) from None
