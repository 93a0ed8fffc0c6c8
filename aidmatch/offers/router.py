"""HTTP routes for offers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from aidmatch.categories import Category
from aidmatch.database import SessionDep
from aidmatch.deps import OPTIONAL_BEARER, GeocoderDep, OptionalPrincipal, SettingsDep, TokenHolder
from aidmatch.enums import OfferStatus
from aidmatch.helpers.router import task_link
from aidmatch.limits import limit_public_posts
from aidmatch.offers import service
from aidmatch.offers.schemas import OfferCreated, OfferIn, OfferOut
from aidmatch.query import BBoxDep, PageDep
from aidmatch.schemas import MAX_ROW_ID, Page, RowId

router = APIRouter(prefix="/api/offers", tags=["offers"])


@router.post(
    "",
    status_code=201,
    response_model=OfferCreated,
    dependencies=[Depends(limit_public_posts)],
    openapi_extra=OPTIONAL_BEARER,
)
def create_offer(
    offer_in: OfferIn, session: SessionDep, settings: SettingsDep, geocoder: GeocoderDep, principal: OptionalPrincipal
) -> OfferCreated:
    """Offer help. Anyone may; a new phone number registers a new helper. A phone registered
    already takes a new offer with its helper's private ``link`` or from a token holder (else 409)."""
    offer, secret = service.create(session=session, offer_in=offer_in, geocoder=geocoder, vouched=principal is not None)
    session.commit()
    out = OfferCreated.model_validate(offer)
    out.task_link = task_link(settings.public_url, secret)
    return out


@router.get("", response_model=Page[OfferOut])
def list_offers(
    session: SessionDep,
    _: TokenHolder,
    page: PageDep,
    bbox: BBoxDep,
    status: Annotated[list[OfferStatus] | None, Query()] = None,
    category: Annotated[list[Category] | None, Query()] = None,
    helper_id: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
) -> Page[OfferOut]:
    """List offers, newest first (volunteers and coordinators)."""
    filters = service.OfferFilters(status=status or (), category=category or (), bbox=bbox, helper_id=helper_id)
    offers, total = service.list_offers(session=session, filters=filters, page=page)
    return Page[OfferOut](
        items=[OfferOut.model_validate(o) for o in offers], total=total, limit=page.limit, offset=page.offset
    )


@router.get("/{offer_id}", response_model=OfferOut)
def get_offer(offer_id: RowId, session: SessionDep, _: TokenHolder) -> OfferOut:
    """One offer (volunteers and coordinators, as the list: its place, address and description are
    its helper's; no contact data in it)."""
    return OfferOut.model_validate(service.get(session=session, offer_id=offer_id))
