"""The SMS that close the loop: the need's code to its author, and who took it when a helper accepts.

Privacy: the author learns the helper's first name only; the requester's phone goes to the helper
whose match was accepted, and to nobody else.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from aidmatch.categories import label
from aidmatch.helpers.models import Helper
from aidmatch.matches.models import Match
from aidmatch.messages import service as messages_service
from aidmatch.needs.models import Need
from aidmatch.offers.models import Offer
from notifications.templates import helper_on_the_way, need_received, requester_contact


def need_received_sms(*, session: Session, need: Need) -> None:
    """Queue the need's code to its author (needs that did not come by SMS: SMS ones get it as the reply)."""
    message = need_received_message(need)
    if message is not None:
        # One row through the table (``queue_many``): an ORM object and a flush cost more Python per post.
        messages_service.queue_many(session=session, messages=[message])


def need_received_message(need: Need) -> dict[str, Any] | None:
    """The outbox row (``queue_many``'s keywords) of ``need_received_sms``; None without a phone."""
    if need.contact_phone is None:
        return None
    language = need.language.value
    return {
        "phone": need.contact_phone,
        "body": need_received(language=language, code=need.code, what=label(need.category, language)),
        "language": language,
        "idempotency_key": f"need:{need.id}:received",
        "need_id": need.id,
    }


def accepted(*, session: Session, match: Match, helper_by_sms: bool = False) -> str:
    """Queue "a helper is coming" to the author and the author's contact to the helper.

    Returns the text for the helper; when the helper accepted by SMS the caller sends it as the
    reply instead of a queued message.
    """
    need = session.get(Need, match.need_id)
    helper = session.scalar(select(Helper).join(Offer, Offer.helper_id == Helper.id).where(Offer.id == match.offer_id))
    assert need is not None  # foreign keys
    assert helper is not None
    if need.contact_phone is not None:
        language = need.language.value
        messages_service.queue(
            session=session,
            phone=need.contact_phone,
            body=helper_on_the_way(language=language, code=need.code, helper_name=helper.name.split()[0]),
            language=language,
            idempotency_key=f"match:{match.id}:accepted:requester",
            need_id=need.id,
            match_id=match.id,
        )
    language = helper.language.value
    contact = " ".join(p for p in (need.contact_name, need.contact_phone) if p) or "—"
    text = requester_contact(
        language=language,
        match_id=match.id,
        what=label(need.category, language),
        quantity=match.quantity,
        contact=contact,
        address=need.address or f"{need.lat:.5f}, {need.lon:.5f}",
    )
    if not helper_by_sms and helper.sms_consent:
        messages_service.queue(
            session=session,
            phone=helper.phone,
            body=text,
            language=language,
            idempotency_key=f"match:{match.id}:accepted:helper",
            need_id=need.id,
            match_id=match.id,
            helper_id=helper.id,
        )
    return text
