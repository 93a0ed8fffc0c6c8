"""Offers: create, look up, list."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from aidmatch.categories import Category
from aidmatch.database import utcnow
from aidmatch.enums import OfferStatus
from aidmatch.errors import InvalidInputError, NotFoundError
from aidmatch.helpers import service as helpers_service
from aidmatch.offers.models import Offer, OfferCategory
from aidmatch.offers.schemas import OfferIn
from aidmatch.query import BBox, PageParams, paginate
from geo.errors import GeocodingError
from geo.geocoding import Geocoder


@dataclass(frozen=True, slots=True)
class OfferFilters:
    status: Sequence[OfferStatus] = ()
    category: Sequence[Category] = ()
    bbox: BBox | None = None
    helper_id: int | None = None


def create(*, session: Session, offer_in: OfferIn, geocoder: Geocoder) -> tuple[Offer, str | None]:
    """Store an active offer, registering its helper by phone if new.

    Returns the offer and, for a newly registered helper, the private task-link secret.
    """
    now = utcnow()
    if offer_in.available_until is not None and offer_in.available_until <= now:
        raise InvalidInputError("available_until is in the past", field="available_until")
    lat, lon = offer_in.lat, offer_in.lon
    if lat is None or lon is None:
        assert offer_in.address is not None  # the schema guarantees one or the other
        try:
            place = geocoder.geocode(offer_in.address)
        except GeocodingError as exc:
            raise InvalidInputError(f"{exc}; give lat and lon instead", field="address") from exc
        lat, lon = place.lat_deg, place.lon_deg
    helper, secret = helpers_service.get_or_create(
        session=session,
        name=offer_in.name or ("Volunteer" if offer_in.language == "en" else "Волонтёр"),
        phone=offer_in.phone,
        language=offer_in.language,
    )
    offer = Offer(
        helper_id=helper.id,
        capacity=offer_in.capacity,
        capacity_used=0,
        lat=lat,
        lon=lon,
        address=offer_in.address,
        radius_km=offer_in.radius_km,
        description=offer_in.description,
        available_from=offer_in.available_from,
        available_until=offer_in.available_until,
        status=OfferStatus.active,
        created_at=now,
        updated_at=now,
        category_rows=[OfferCategory(category=c) for c in offer_in.categories],
    )
    session.add(offer)
    session.flush()
    return offer, secret


def get(*, session: Session, offer_id: int) -> Offer:
    offer = session.get(Offer, offer_id)
    if offer is None:
        raise NotFoundError(f"no offer with id {offer_id}")
    return offer


def list_offers(*, session: Session, filters: OfferFilters, page: PageParams) -> tuple[list[Offer], int]:
    stmt = select(Offer)
    if filters.status:
        stmt = stmt.where(Offer.status.in_(filters.status))
    if filters.category:
        stmt = stmt.where(
            Offer.id.in_(select(OfferCategory.offer_id).where(OfferCategory.category.in_(filters.category)))
        )
    if filters.bbox is not None:
        stmt = stmt.where(filters.bbox.where(Offer.lat, Offer.lon))
    if filters.helper_id is not None:
        stmt = stmt.where(Offer.helper_id == filters.helper_id)
    return paginate(session, stmt.order_by(Offer.id.desc()), page)
