"""GET /api/datasets, GET /api/datasets/{ref}, GET /api/datasets/{ref}/report, POST /api/datasets/build."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from posttrain import datasets
from posttrain.names import Name
from posttrain.records import DatasetKind, DatasetVersion
from posttrain.server.auth import require
from posttrain.server.schemas import ERRORS, json_errors

router = APIRouter(prefix="/api/datasets", tags=["datasets"], responses=ERRORS)


class BuildRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: DatasetKind
    name: Name
    config: dict[str, Any] = Field(default_factory=dict, description="BuildConfig fields (filters, kind settings).")


@router.get("", response_model=list[DatasetVersion], dependencies=[Depends(require("datasets.read"))])
def list_datasets(request: Request, name: str | None = None) -> list[DatasetVersion]:
    """List dataset versions (of one name if given), newest first."""
    return datasets.list_versions(request.app.state.project, name=name)


@router.get("/{ref}", response_model=datasets.DatasetPreview, dependencies=[Depends(require("datasets.read"))])
def show_dataset(
    request: Request,
    ref: str = Path(pattern=r"^[^@/]+(@[0-9]+)?$", description="NAME (the latest version) or NAME@VERSION"),
    rows: int = Query(5, ge=0, le=100),
) -> datasets.DatasetPreview:
    """Return a version (``NAME`` for the latest, or ``NAME@V``) with its first rows."""
    return datasets.preview(request.app.state.project, ref, rows=rows)


@router.get(
    "/{ref}/report",
    response_class=HTMLResponse,
    dependencies=[Depends(require("datasets.read"))],
    responses={**json_errors(), 200: {"content": {"text/html": {}}, "description": "The curation report page."}},
)
def dataset_report(
    request: Request,
    ref: str = Path(pattern=r"^[^@/]+(@[0-9]+)?$", description="NAME (the latest version) or NAME@VERSION"),
) -> HTMLResponse:
    """Return the curation report of a version: what each stage removed, the embedding map, what was selected."""
    from posttrain.curation import report

    page = report.render(request.app.state.project, ref)
    return HTMLResponse(
        page, headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:"}
    )


@router.post(
    "/build", response_model=DatasetVersion, status_code=201, dependencies=[Depends(require("datasets.build"))]
)
def build_dataset(request: Request, body: BuildRequest) -> DatasetVersion:
    """Build the next version of a dataset from the warehouse (seconds even for a million rows)."""
    config = datasets.BuildConfig.parse(**body.config)
    return datasets.build(request.app.state.project, body.kind, body.name, config)
