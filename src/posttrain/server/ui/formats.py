"""Filters of the console's templates: timestamps, shares, numbers, and charts as images."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape

from posttrain.plots import data_uri


def chart(svg: str, alt: str) -> Markup:
    """Return an ``<img>`` of the SVG chart ``svg`` (a data: URI), with ``alt`` text."""
    return Markup('<img class="chart" alt="{}" src="{}">').format(alt, data_uri(svg))


def when(value: Any) -> str:
    """Format a timestamp as ``YYYY-MM-DD HH:MM:SS`` UTC (empty for None)."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def pct(value: Any, digits: int = 1) -> str:
    """Format a share (0..1) as a percentage; '–' for None."""
    if value is None:
        return "–"
    return f"{float(value) * 100:.{digits}f}%"


def num(value: Any, digits: int = 3) -> str:
    """Format a number compactly (ints with thousands separators); '–' for None."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    try:
        return f"{float(value):.{digits}g}"
    except (TypeError, ValueError):
        return str(escape(value))
