"""Rows out of the warehouse: one dict per row, by column name, its JSON columns decoded."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import duckdb
import orjson


def fetch_all(
    cur: duckdb.DuckDBPyConnection, sql: str, params: Any = None, *, json: Collection[str] = ()
) -> list[dict[str, Any]]:
    """Run ``sql``; return every row as a dict, the ``json`` columns (stored as text) decoded."""
    result = cur.execute(sql, params if params is not None else [])
    columns = [d[0] for d in result.description]
    return [_decode(columns, row, json) for row in result.fetchall()]


def fetch_one(
    cur: duckdb.DuckDBPyConnection, sql: str, params: Any = None, *, json: Collection[str] = ()
) -> dict[str, Any] | None:
    """Run ``sql``; return its first row as :func:`fetch_all` does, or None when there is none."""
    result = cur.execute(sql, params if params is not None else [])
    row = result.fetchone()
    return None if row is None else _decode([d[0] for d in result.description], row, json)


def _decode(columns: list[str], row: tuple[Any, ...], json: Collection[str]) -> dict[str, Any]:
    data = dict(zip(columns, row, strict=True))
    for name in json:
        if isinstance(data.get(name), str):
            data[name] = orjson.loads(data[name])
    return data
