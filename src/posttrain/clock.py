"""The time posttrain stamps records with: now, in UTC, naive, as the warehouse stores it."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Return the current time in UTC without tzinfo (DuckDB's TIMESTAMP holds no zone)."""
    return datetime.now(UTC).replace(tzinfo=None)
