"""Offers: create, look up, list."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from aidmatch.auth.service import hash_secret
from aidmatch.categories import Category
from aidmatch.database import utcnow
from aidmatch.enums import OfferStatus
from aidmatch.errors import ConflictError, InvalidInputError, NotFoundError
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


class PhoneTakenError(ConflictError):
    """An offer for a phone registered already, without proof that it comes from its helper."""


def create(
    *, session: Session, offer_in: OfferIn, geocoder: Geocoder, vouched: bool = False, by_sms: bool = False
) -> tuple[Offer, str | None]:
    """Store an active offer, registering its helper by phone if new.

    Returns the offer and, for a newly registered helper, the private task-link secret. An offer
    for a phone registered already is added to its helper only with proof that it comes from them:
    ``vouched`` (an SMS from that phone, a token holder acting for them) or the helper's private
    link in ``offer_in.link``; else ``PhoneTakenError`` (anyone could otherwise give a stranger's
    number, send them requests for help they never offered and learn their helper id). A new
    helper not registered ``by_sms`` (an SMS from the phone) gets an SMS saying so, with STOP.
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
        by_sms=by_sms,
    )
    if secret is None and not vouched and not _their_link(offer_in.link, helper.link_hash):
        raise PhoneTakenError(
            "this phone is registered to a helper already: add offers from their task page "
            "(the private link), by SMS from that phone, or through a coordinator"
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


def _their_link(link: str | None, link_hash: str | None) -> bool:
    """Whether ``link`` (a whole task link or its last part) is the one whose hash is ``link_hash``."""
    if not link or not link_hash:
        return False
    return hmac.compare_digest(hash_secret(link.rstrip("/").rsplit("/", 1)[-1]), link_hash)


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
