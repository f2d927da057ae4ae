"""POST /api/sql: one read-only statement over the warehouse."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from posttrain.records import SqlResult
from posttrain.server.auth import require
from posttrain.server.schemas import ERRORS
from posttrain.warehouse import queries

router = APIRouter(prefix="/api", tags=["sql"], responses=ERRORS, dependencies=[Depends(require("sql"))])


class SqlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sql: str = Field(min_length=1, description="One SELECT or EXPLAIN statement.")


@router.post("/sql", response_model=SqlResult)
def run_sql(request: Request, body: SqlRequest) -> SqlResult:
    """Run read-only SQL; statements that write are refused with 400."""
    return queries.run_sql(request.app.state.project.cursor(), body.sql)
