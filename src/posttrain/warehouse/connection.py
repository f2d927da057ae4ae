"""Open the DuckDB warehouse, turning DuckDB's lock error into a message that says what to do."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from posttrain.errors import WarehouseBusy

_LOCK_PID = re.compile(r"PID (\d+)")


def connect(path: Path, *, read_only: bool = False, busy_hint: str = "") -> duckdb.DuckDBPyConnection:
    """Open the warehouse file; raise WarehouseBusy when another process holds it."""
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise
        match = _LOCK_PID.search(str(exc))
        holder = f"process {match.group(1)}" if match else "another process"
        hint = busy_hint or "wait for it to finish, or stop it"
        raise WarehouseBusy(f"the warehouse {path} is open in {holder}; {hint}") from None
    con.execute("SET GLOBAL TimeZone = 'UTC'")  # timestamps are stored as naive UTC
    if not read_only:  # the default (16 MB) checkpoints mid-ingest, stalling the writer 0.1-0.4 s
        con.execute("SET GLOBAL checkpoint_threshold = '256MB'")
    return con
