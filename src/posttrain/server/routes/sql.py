"""POST /api/sql: one read-only statement over the warehouse, time-limited, cancelled on hang-up."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from posttrain.records import Role, SqlResult
from posttrain.server.auth import require
from posttrain.server.schemas import ERRORS
from posttrain.warehouse import sandbox
from posttrain.warehouse.sandbox import MAX_SQL_CHARS

router = APIRouter(prefix="/api", tags=["sql"], responses=ERRORS)


class SqlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sql: str = Field(
        min_length=1,
        max_length=MAX_SQL_CHARS,
        description="One SELECT (SHOW, DESCRIBE, SUMMARIZE) or EXPLAIN [ANALYZE] of one; nothing that writes.",
    )
    limit: int | None = Field(
        None, ge=1, description="Most rows to return; at most the setting sql.max_rows (its default)."
    )


@router.post("/sql", response_model=SqlResult)
async def run_sql(request: Request, body: SqlRequest, role: Annotated[Role, Depends(require("sql"))]) -> SqlResult:
    """Run read-only SQL in a read-only transaction; writes, files and (below admin) secret tables are refused."""
    result = await request.app.state.sql.run(body.sql, role=role, disconnected=request.is_disconnected)
    return sandbox.first_rows(result, body.limit)
