"""Read models for the pages: a need's public progress, a helper's tasks, the coordinator's picture."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, Select, case, func, or_, select, update
from sqlalchemy.orm import Session

from aidmatch.audit import service as audit
from aidmatch.audit.service import act_as
from aidmatch.auth.service import hash_secret
from aidmatch.categories import Category
from aidmatch.config import Settings
from aidmatch.database import utcnow
from aidmatch.enums import (
    OPEN_NEED_STATUSES,
    MatchStatus,
    MessageDirection,
    MessageStatus,
    OfferStatus,
    Source,
    Urgency,
)
from aidmatch.errors import ConflictError, NotFoundError
from aidmatch.helpers.models import Helper
from aidmatch.matches import proposals
from aidmatch.matches.live import LiveOfferIndex
from aidmatch.matches.models import Match
from aidmatch.messages import notices
from aidmatch.messages import service as messages_service
from aidmatch.messages.models import Message
from aidmatch.needs import service as needs_service
from aidmatch.needs.models import Need
from aidmatch.needs.schemas import NeedIn
from aidmatch.offers.models import Offer
from aidmatch.sms import service as sms_service
from geo.geocoding import Geocoder, load_places
from notifications.phones import redact_phones

PENDING = (MatchStatus.proposed, MatchStatus.notified)


@dataclass(frozen=True, slots=True)
class NeedProgress:
    """A need's public progress: counts only, nobody's contact."""

    need: Need
    asked: int  # helpers asked and not answered yet
    accepted_units: int
    delivered_units: int


def need_progress(*, session: Session, code: str) -> NeedProgress:
    need = needs_service.get_by_code(session=session, code=code)
    counts = dict(
        session.execute(
            select(Match.status, func.coalesce(func.sum(Match.quantity), 0))
            .where(Match.need_id == need.id)
            .group_by(Match.status)
        )
        .tuples()
        .all()
    )
    asked = session.scalar(
        select(func.count()).select_from(Match).where(Match.need_id == need.id, Match.status.in_(PENDING))
    )
    return NeedProgress(
        need=need,
        asked=int(asked or 0),
        accepted_units=int(counts.get(MatchStatus.accepted, 0)) + int(counts.get(MatchStatus.completed, 0)),
        delivered_units=int(counts.get(MatchStatus.completed, 0)),
    )


def helper_by_link(*, session: Session, secret: str) -> Helper:
    helper = session.scalar(select(Helper).where(Helper.link_hash == hash_secret(secret)))
    if helper is None:
        raise NotFoundError("no helper has this task link")
    act_as(session, f"helper:{helper.id}")
    return helper


@dataclass(frozen=True, slots=True)
class Task:
    match: Match
    need: Need
    description: str | None  # phones hidden until accepted
    address: str | None
    contact: str | None  # only while accepted


def tasks_for(*, session: Session, helper: Helper, limit: int = 50) -> list[Task]:
    """The helper's open and recent tasks, newest first; the requester's contact (and the need's
    text unredacted) only while the task is accepted: not before, nor once it is done."""
    rows = session.execute(
        select(Match, Need)
        .join(Offer, Offer.id == Match.offer_id)
        .join(Need, Need.id == Match.need_id)
        .where(
            Offer.helper_id == helper.id,
            Match.status.in_((*PENDING, MatchStatus.accepted, MatchStatus.completed)),
        )
        .order_by(Match.id.desc())
        .limit(limit)
    ).tuples()
    tasks = []
    for match, need in rows:
        accepted = match.status is MatchStatus.accepted
        contact = " ".join(p for p in (need.contact_name, need.contact_phone) if p) if accepted else None
        tasks.append(
            Task(
                match=match,
                need=need,
                description=need.description if accepted else (need.description and redact_phones(need.description)),
                address=need.address if accepted else (need.address and redact_phones(need.address)),
                contact=contact or None,
            )
        )
    return tasks


def task_match_of(*, session: Session, helper: Helper, match_id: int) -> Match:
    """The match, only if it is one of this helper's (a task link acts on its own tasks only)."""
    match = session.scalar(
        select(Match).join(Offer, Offer.id == Match.offer_id).where(Match.id == match_id, Offer.helper_id == helper.id)
    )
    if match is None:
        raise NotFoundError(f"no task {match_id} on this link")
    return match


@dataclass(frozen=True, slots=True)
class DashboardFilters:
    category: Category | None = None
    urgency: Urgency | None = None
    max_age_h: float | None = None


def _open_needs_where(filters: DashboardFilters, now: datetime) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [Need.status.in_(OPEN_NEED_STATUSES)]
    if filters.category is not None:
        where.append(Need.category == filters.category)
    if filters.urgency is not None:
        where.append(Need.urgency == filters.urgency)
    if filters.max_age_h is not None:
        where.append(Need.created_at >= now - timedelta(hours=filters.max_age_h))
    return where


# Needs and offers the map draws at most (the newest); the JSON says how many there are in all.
MAP_MAX_SHOWN = 2000


def open_needs(*, session: Session, filters: DashboardFilters, now: datetime, limit: int = MAP_MAX_SHOWN) -> list[Need]:
    """Open needs (nothing or part taken), newest first, for the map and the table."""
    stmt = select(Need).where(*_open_needs_where(filters, now))
    return list(session.scalars(stmt.order_by(Need.id.desc()).limit(limit)))


def count_open_needs(*, session: Session, filters: DashboardFilters, now: datetime) -> int:
    """How many open needs the filters choose (however many are listed)."""
    return session.scalar(select(func.count(Need.id)).where(*_open_needs_where(filters, now))) or 0


def need_points(needs: Sequence[Need], now: datetime) -> list[dict[str, Any]]:
    """Map points without contact data."""
    return [
        {
            "id": n.id,
            "code": n.code,
            "category": n.category.value,
            "urgency": n.urgency.value,
            "quantity": n.quantity,
            "left": n.quantity - n.quantity_assigned,
            "lat": n.lat,
            "lon": n.lon,
            "age_s": (now - n.created_at).total_seconds(),
        }
        for n in needs
    ]


def _active_offers_where(now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (
        Offer.status == OfferStatus.active,
        (Offer.available_until.is_(None)) | (Offer.available_until > now),
    )


def count_coverage(*, session: Session, now: datetime) -> int:
    """How many active offers ``coverage`` chooses from (however many it lists)."""
    return session.scalar(select(func.count(Offer.id)).where(*_active_offers_where(now))) or 0


def coverage(*, session: Session, now: datetime, limit: int = MAP_MAX_SHOWN) -> list[dict[str, Any]]:
    """Active offers as circles, newest first: where helpers are and how far they travel (no names)."""
    offers = session.scalars(select(Offer).where(*_active_offers_where(now)).order_by(Offer.id.desc()).limit(limit))
    return [
        {
            "lat": o.lat,
            "lon": o.lon,
            "radius_km": o.radius_km,
            "categories": [c.value for c in o.categories],
            "left": o.capacity - o.capacity_used,
        }
        for o in offers
    ]


def messages(*, session: Session, limit: int = 30) -> list[Message]:
    return list(session.scalars(select(Message).order_by(Message.id.desc()).limit(limit)))


# Triage entries shown at first; ``?triage=`` on the dashboard shows more, up to the most.
TRIAGE_SHOWN = 50
TRIAGE_MAX_SHOWN = 2000


def _waiting_unparsed() -> Select[tuple[Message]]:
    return select(Message).where(
        Message.direction == MessageDirection.inbound,
        Message.status == MessageStatus.unparsed,
        Message.need_id.is_(None),
    )


def _triage_rank() -> ColumnElement[int]:
    """Where an entry goes in the queue: critical, then urgent, then the other requests (an
    unfinished conversation, a need from a number we cannot store), then what nobody understood."""
    parsed = Message.parsed
    urgency, intent = parsed["urgency"].as_string(), parsed["intent"].as_string()
    return case(
        (urgency == Urgency.critical.value, 0),
        (urgency == Urgency.urgent.value, 1),
        (or_(Message.status == MessageStatus.parsed, intent.in_(("need", "offer"))), 2),
        else_=3,
    )


def triage_queue(*, session: Session, limit: int = TRIAGE_SHOWN, now: datetime | None = None) -> list[Message]:
    """Inbound SMS nobody could parse, and the last SMS of each conversation left unanswered
    (``sms_service.abandoned_query``): each waits for a coordinator. Critical and urgent
    requests first, then the other requests, then the rest; oldest first within each, so a flood
    of «спасибо» never hides a request behind it."""
    now = now or utcnow()
    rank = _triage_rank()
    rows = [
        *session.execute(_waiting_unparsed().add_columns(rank).order_by(rank, Message.id).limit(limit)).tuples(),
        *session.execute(
            sms_service.abandoned_query(now).add_columns(rank).order_by(rank, Message.id).limit(limit)
        ).tuples(),
    ]
    rows.sort(key=lambda row: (row[1], row[0].id))
    return [message for message, _ in rows[:limit]]


def triage_count(*, session: Session, now: datetime | None = None) -> int:
    """How many entries wait in the triage queue (however many are shown)."""
    now = now or utcnow()
    return sum(
        session.scalar(select(func.count()).select_from(query.subquery())) or 0
        for query in (_waiting_unparsed(), sms_service.abandoned_query(now))
    )


# Held-back SMS listed beside a phone's triage entry (and dismissed with it).
MAX_HELD_BACK_SHOWN = 10


def next_held_back(session: Session, phone: str) -> None:
    """When the phone's entry leaves the triage queue, its oldest SMS held back takes its place
    (unless another of the phone's messages waits there already: the held-back ones show beside it)."""
    session.flush()
    if messages_service.waiting_in_triage(session, phone):
        return
    waiting = messages_service.held_back(session, [phone]).get(phone)
    if waiting:
        waiting[0].status = MessageStatus.unparsed
        waiting[0].updated_at = utcnow()


def dismiss(*, session: Session, message_id: int, shown_upto: int | None = None) -> None:
    """A coordinator takes an SMS out of the triage queue without making a need of it, with the
    phone's messages held back beside it (their texts are shown with it); each keeps its text in
    the SMS log and gets an audit row. ``shown_upto``: the id of the last held-back SMS the
    coordinator was shown (those that came after the page was loaded stay)."""
    message = session.get(Message, message_id)
    if message is None or message.direction is not MessageDirection.inbound:
        raise NotFoundError(f"no inbound SMS with id {message_id}")
    # The phone's lock before the message's row, in the order an inbound SMS takes them (it ends an
    # abandoned conversation by updating this message): the other order deadlocks with it.
    needs_service.lock_phones(session, [message.phone])
    message = session.get(Message, message_id, with_for_update=True, populate_existing=True)
    assert message is not None
    sms_service.release_to_triage(session, message, utcnow())  # an abandoned conversation's: ends it
    if message.status is not MessageStatus.unparsed or message.need_id is not None:
        return  # handled already (a double click, another coordinator)
    shown = messages_service.held_back(session, [message.phone]).get(message.phone, [])[:MAX_HELD_BACK_SHOWN]
    # Only what the coordinator saw beside it: up to the last one shown (none when none were).
    beside = [m for m in shown if m.id <= (shown_upto or 0)]
    now = utcnow()
    for m in (message, *beside):
        m.status = MessageStatus.parsed
        m.parsed = {**(m.parsed or {}), "dismissed": True}
        m.updated_at = now
    session.flush()
    next_held_back(session, message.phone)  # any beyond what was shown
    audit.record_many(session, "dismissed", "message", sorted(m.id for m in (message, *beside)))


def need_from_message(
    *,
    session: Session,
    message_id: int,
    need_in: NeedIn,
    settings: Settings,
    geocoder: Geocoder,
    live: LiveOfferIndex,
    now: datetime,
) -> tuple[Need, bool]:
    """A coordinator turns an unparsed SMS into a need; the SMS is linked to it and leaves the queue.
    A repeat of the phone's open need (same category, within 500 m and 24 h, as ``create_or_merge``
    finds it) is merged into that need instead of making a second one. Returns the need and whether
    it was merged.

    The message is claimed first (a conditional update): the form posted twice, or by two
    coordinators at once, makes one need; the later post gets ``AlreadyTriagedError`` with that need.
    """
    message = session.get(Message, message_id)
    if message is None or message.direction is not MessageDirection.inbound:
        raise NotFoundError(f"no inbound message {message_id}")
    # The phones' intake before the message's row, in the order an inbound SMS takes them; held,
    # no SMS from the phone makes its need meanwhile, unseen by the repeat check below.
    needs_service.lock_phones(session, [p for p in (message.phone, need_in.contact_phone) if p is not None])
    sms_service.release_to_triage(session, message, now)  # an abandoned conversation's: ends it
    claimed = session.execute(
        update(Message)
        .where(
            Message.id == message_id,
            Message.status == MessageStatus.unparsed,
            Message.need_id.is_(None),
        )
        .values(status=MessageStatus.parsed, updated_at=now)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(message)
        earlier = session.get(Need, message.need_id) if message.need_id is not None else None
        raise AlreadyTriagedError(message_id, earlier.code if earlier is not None else None)
    located = needs_service.locate(need_in, geocoder)
    assert located.lat is not None
    assert located.lon is not None
    existing = needs_service.find_repeated(
        session,
        open_needs=needs_service.open_needs_of(session, located.contact_phone),
        category=located.category,
        lat=located.lat,
        lon=located.lon,
        now=now,
    )
    if existing is not None:
        # The person's first text, triaged after they wrote again clearly: the need they have.
        needs_service.merge_repeat(existing, located, settings=settings, source=Source.sms, now=now)
        session.flush()
        audit.record(session, "repeat_merged", "need", existing.id, source=Source.sms.value)
        proposals.propose_still_needed(session=session, need=existing, live=live, now=now)
        need = existing
    else:
        # A coordinator decides: the limit on a phone's open needs is for what the public posts.
        need = needs_service.create(
            session=session, need_in=located, settings=settings, geocoder=geocoder, source=Source.sms, open_needs=()
        )
        proposals.propose_for_need(session=session, need=need, live=live, settings=settings, now=now)
        notices.need_received_sms(session=session, need=need)
    message.need_id = need.id
    message.status = MessageStatus.parsed
    session.flush()
    next_held_back(session, message.phone)
    return need, existing is not None


class AlreadyTriagedError(ConflictError):
    """The message was turned into a need (``code``, if it still exists) or handled already."""

    def __init__(self, message_id: int, code: str | None) -> None:
        super().__init__(f"message {message_id} was handled already" + (f": need {code}" if code else ""))
        self.code = code


@lru_cache(maxsize=8)
def _largest_places(country: str, count: int) -> tuple[tuple[str, str, float, float], ...]:
    places = load_places(country)
    order = np.argsort(-places.population, kind="stable")[:count]
    return tuple(
        (places.name_ru[i], places.name[i], float(places.lat_deg[i]), float(places.lon_deg[i])) for i in order.tolist()
    )


def largest_places(country: str, *, lang: str, count: int = 300) -> list[dict[str, Any]]:
    """The biggest settlements as map labels, so an offline map without tiles still reads."""
    return [
        {"name": en if lang == "en" else ru, "lat": lat, "lon": lon}
        for ru, en, lat, lon in _largest_places(country, count)
    ]
