"""HTTP routes for the exports (coordinators; a bearer token or the dashboard's session)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from aidmatch.exports import service
from aidmatch.web.auth import WebCoordinator

router = APIRouter(prefix="/api/exports", tags=["exports"])

MEDIA = {
    "csv": "text/csv; charset=utf-8",
    "hxl.csv": "text/csv; charset=utf-8",
    "geojson": "application/geo+json",
}


def _export(request: Request, kind: str, fmt: str) -> StreamingResponse:
    return StreamingResponse(
        service.stream(kind, fmt, request.app.state.sessionmaker),
        media_type=MEDIA[fmt],
        headers={"Content-Disposition": f'attachment; filename="{kind}.{fmt}"', "Cache-Control": "no-store"},
    )


@router.get("/needs.{fmt}", response_class=StreamingResponse)
def export_needs(fmt: Literal["csv", "geojson", "hxl.csv"], request: Request, _: WebCoordinator) -> StreamingResponse:
    """All needs without contact data: ``csv``, ``geojson`` or ``hxl.csv`` (HXL hashtags in row 2)."""
    return _export(request, "needs", fmt)


@router.get("/offers.{fmt}", response_class=StreamingResponse)
def export_offers(fmt: Literal["csv", "geojson", "hxl.csv"], request: Request, _: WebCoordinator) -> StreamingResponse:
    """All offers without the helpers' names or phones: ``csv``, ``geojson`` or ``hxl.csv``."""
    return _export(request, "offers", fmt)
