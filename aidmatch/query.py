"""Listing helpers shared by the slices: pagination and bounding-box filters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query
from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from aidmatch.errors import InvalidInputError

T = TypeVar("T")

MAX_PAGE = 500


@dataclass(frozen=True, slots=True)
class PageParams:
    limit: int
    offset: int


def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="items per page")] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


PageDep = Annotated[PageParams, Depends(page_params)]


@dataclass(frozen=True, slots=True)
class BBox:
    """min_lon, min_lat, max_lon, max_lat (GeoJSON order); min_lon > max_lon crosses ±180°."""

    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float

    def where(self, lat: Any, lon: Any) -> ColumnElement[bool]:
        lat_ok = and_(lat >= self.min_lat, lat <= self.max_lat)
        if self.min_lon <= self.max_lon:
            return and_(lat_ok, lon >= self.min_lon, lon <= self.max_lon)
        return and_(lat_ok, or_(lon >= self.min_lon, lon <= self.max_lon))


def parse_bbox(raw: str | None) -> BBox | None:
    if raw is None or raw == "":
        return None
    parts = raw.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InvalidInputError(
            f"bbox must be four numbers min_lon,min_lat,max_lon,max_lat; got {raw!r}", field="bbox"
        ) from None
    if len(values) != 4:
        raise InvalidInputError(f"bbox must have 4 numbers, got {len(values)}", field="bbox")
    min_lon, min_lat, max_lon, max_lat = values
    for name, v, bound in (
        ("min_lon", min_lon, 180),
        ("max_lon", max_lon, 180),
        ("min_lat", min_lat, 90),
        ("max_lat", max_lat, 90),
    ):
        if not (-bound <= v <= bound):
            raise InvalidInputError(f"bbox {name} = {v} is outside [-{bound}, {bound}]", field="bbox")
    if min_lat > max_lat:
        raise InvalidInputError(f"bbox min_lat {min_lat} is above max_lat {max_lat}", field="bbox")
    return BBox(min_lon, min_lat, max_lon, max_lat)


def bbox_param(
    bbox: Annotated[
        str | None,
        Query(max_length=200, description="min_lon,min_lat,max_lon,max_lat (min_lon > max_lon crosses ±180°)"),
    ] = None,
) -> BBox | None:
    return parse_bbox(bbox)


BBoxDep = Annotated[BBox | None, Depends(bbox_param)]


def paginate(session: Session, stmt: Select[tuple[T]], page: PageParams) -> tuple[list[T], int]:
    """One page of ``stmt``'s rows and the total count over all pages."""
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    rows = list(session.scalars(stmt.limit(page.limit).offset(page.offset)))
    return rows, total
