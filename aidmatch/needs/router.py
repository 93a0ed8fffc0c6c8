"""HTTP routes for needs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from aidmatch.categories import Category
from aidmatch.database import SessionDep, utcnow
from aidmatch.deps import (
    OPTIONAL_BEARER,
    Coordinator,
    GeocoderDep,
    LiveIndexDep,
    OptionalPrincipal,
    SettingsDep,
    TokenHolder,
)
from aidmatch.enums import NeedStatus, Source, Urgency
from aidmatch.limits import limit_public_posts
from aidmatch.matches import proposals
from aidmatch.messages import notices
from aidmatch.needs import service
from aidmatch.needs.schemas import MergeIn, NeedCreated, NeedFull, NeedIn, NeedPublic
from aidmatch.query import BBoxDep, PageDep
from aidmatch.schemas import Page, RowId

router = APIRouter(prefix="/api/needs", tags=["needs"])


@router.post("", status_code=201, response_model=NeedCreated, dependencies=[Depends(limit_public_posts)])
def create_need(
    need_in: NeedIn,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    geocoder: GeocoderDep,
    live: LiveIndexDep,
) -> NeedCreated:
    """Post a need. Anyone may; the answer carries the short public code and the helpers found.

    The same phone posting the same category within 500 m and 24 h bumps its open need instead
    (200, ``merged``: true, the text appended) rather than making a second one.
    """
    need, merged = service.create_or_merge(
        session=session, need_in=need_in, settings=settings, geocoder=geocoder, source=Source.api
    )
    if merged:
        found = 0
        response.status_code = 200
    else:
        found = proposals.propose_for_need(session=session, need=need, live=live, settings=settings, now=utcnow())
        notices.need_received_sms(session=session, need=need)
    session.commit()
    out = NeedCreated.model_validate(need)
    out.helpers_in_range = found
    out.merged = merged
    return out


@router.post("/{need_id}/merge", response_model=NeedFull)
def merge_need(need_id: RowId, body: MergeIn, session: SessionDep, _: Coordinator) -> NeedFull:
    """Mark a need as a duplicate of another (coordinators): it closes; its text joins the other."""
    need = service.get(session=session, need_id=need_id)
    into = service.get(session=session, need_id=body.into)
    service.mark_duplicate(session=session, need=need, of=into)
    session.commit()
    return NeedFull.model_validate(need)


@router.get("", response_model=Page[NeedFull] | Page[NeedPublic])
def list_needs(
    session: SessionDep,
    principal: TokenHolder,
    page: PageDep,
    bbox: BBoxDep,
    status: Annotated[list[NeedStatus] | None, Query()] = None,
    category: Annotated[list[Category] | None, Query()] = None,
    urgency: Annotated[list[Urgency] | None, Query()] = None,
) -> Page[NeedFull] | Page[NeedPublic]:
    """List needs, newest first. Coordinators see contact data; volunteers do not."""
    filters = service.NeedFilters(status=status or (), category=category or (), urgency=urgency or (), bbox=bbox)
    needs, total = service.list_needs(session=session, filters=filters, page=page)
    if principal.is_coordinator:
        return Page[NeedFull](
            items=[NeedFull.model_validate(n) for n in needs], total=total, limit=page.limit, offset=page.offset
        )
    return Page[NeedPublic](
        items=[NeedPublic.model_validate(n) for n in needs], total=total, limit=page.limit, offset=page.offset
    )


@router.get("/code/{code}", response_model=NeedPublic)
def get_need_by_code(code: Annotated[str, Path(max_length=32)], session: SessionDep) -> NeedPublic:
    """A need by its short public code, as its author checks it (no account needed)."""
    return NeedPublic.model_validate(service.get_by_code(session=session, code=code))


@router.post("/code/{code}/confirm", response_model=NeedPublic, dependencies=[Depends(limit_public_posts)])
def confirm_need_by_code(
    code: Annotated[str, Path(max_length=32)], session: SessionDep, settings: SettingsDep
) -> NeedPublic:
    """ "Still needed": the author keeps an open need alive for another ``need_expiry_hours``."""
    need = service.reconfirm(session=session, need=service.get_by_code(session=session, code=code), settings=settings)
    session.commit()
    return NeedPublic.model_validate(need)


@router.post("/{need_id}/confirm", response_model=NeedFull)
def confirm_need(need_id: RowId, session: SessionDep, settings: SettingsDep, _: Coordinator) -> NeedFull:
    """ "Still needed", recorded by a coordinator (e.g. after a phone call)."""
    need = service.reconfirm(session=session, need=service.get(session=session, need_id=need_id), settings=settings)
    session.commit()
    return NeedFull.model_validate(need)


@router.get("/{need_id}", response_model=NeedFull | NeedPublic, openapi_extra=OPTIONAL_BEARER)
def get_need(need_id: RowId, session: SessionDep, principal: OptionalPrincipal) -> NeedFull | NeedPublic:
    """One need; contact data only for coordinators."""
    need = service.get(session=session, need_id=need_id)
    if principal is not None and principal.is_coordinator:
        return NeedFull.model_validate(need)
    return NeedPublic.model_validate(need)
