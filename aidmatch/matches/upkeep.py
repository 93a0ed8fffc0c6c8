"""The periodic upkeep of the match lifecycle, run by the escalation job (or directly in tests).

``now`` decides what is due (tests inject it); ``updated_at`` always records the real time of a
change, which the live offer index polls.

One pass, at ``now``:

1. needs close to expiry get a "still needed?" SMS (once per expiry date); needs past it expire,
   their unanswered requests are cancelled and their accepted tasks called off (helpers told);
   needs whose every unit a helper took do not expire: at that time their author is asked whether
   help has arrived and their helpers are reminded to say DONE (``ask_if_done``);
2. offers past their ``available_until`` expire; their unanswered requests are cancelled;
3. requests outside an escalation that got no answer within ``match_response_timeout_s`` time
   out;
4. critical needs whose escalation step is due get their next wave (or leave escalation);
5. needs that lost a request in 1 or 3 go to their next nearest helpers.

Every need the pass writes is locked first, in id order (``lock_due_needs``), then matches and
offers: the order accept and give-back take them in. Flushes only; the caller commits once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, exists, func, or_, select, update
from sqlalchemy.orm import Session

from aidmatch.audit import service as audit
from aidmatch.categories import label
from aidmatch.config import Settings
from aidmatch.database import utcnow, write_lock
from aidmatch.enums import OPEN_NEED_STATUSES, MatchStatus, NeedStatus, OfferStatus
from aidmatch.matches.live import LiveOfferIndex
from aidmatch.matches.models import Match
from aidmatch.matches.pending import PENDING_MATCH_STATUSES, close_accepted, close_pending, remind_helpers
from aidmatch.matches.proposals import escalate, offer_to_next_helpers
from aidmatch.messages import service as messages_service
from aidmatch.needs.models import Need
from aidmatch.offers.models import Offer
from notifications.templates import help_arrived, still_needed

_CHUNK = 500


@dataclass(slots=True)
class UpkeepReport:
    """What one pass did, in counts."""

    offers_expired: int = 0
    reconfirm_requested: int = 0
    needs_expired: int = 0
    matches_timed_out: int = 0
    escalation_steps: int = 0
    helpers_asked: int = 0
    needs_reoffered: int = 0
    reoffer: set[int] = field(default_factory=set, repr=False)

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "reoffer"}


def _offers_expiring(now: datetime) -> ColumnElement[bool]:
    return (Offer.status == OfferStatus.active) & Offer.available_until.is_not(None) & (Offer.available_until <= now)


def _late(settings: Settings, now: datetime) -> ColumnElement[bool]:
    """Requests the pass times out: no answer within ``match_response_timeout_s`` (outside a wave)."""
    cutoff = now - timedelta(seconds=settings.match_response_timeout_s)
    return (
        Match.status.in_(PENDING_MATCH_STATUSES)
        & Match.wave.is_(None)
        & (func.coalesce(Match.notified_at, Match.created_at) <= cutoff)
    )


def expire_offers(session: Session, now: datetime, report: UpkeepReport) -> None:
    due = _offers_expiring(now)
    count = session.scalar(select(func.count(Offer.id)).where(due)) or 0
    if not count:
        return
    audit.record_many(session, "expired", "offer", session.scalars(select(Offer.id).where(due)))
    closed = close_pending(session, Match.offer_id.in_(select(Offer.id).where(due)), now=utcnow())
    session.execute(update(Offer).where(due).values(status=OfferStatus.expired, updated_at=utcnow()))
    report.offers_expired += count
    report.reoffer.update(closed)


def _asking(now: datetime, before: timedelta) -> ColumnElement[bool]:
    """Needs due a question at ``now``: «still needed?» ahead of their expiry, or «has help
    arrived?» (``ask_if_done``) when a need helpers took all of would have expired."""
    return Need.expires_at.is_not(None) & or_(
        Need.status.in_(OPEN_NEED_STATUSES)
        & (Need.expires_at > now)
        & (Need.expires_at <= now + before)
        & Need.reconfirm_requested_at.is_(None),
        # Taken by helpers: it does not close, so it is asked «has help arrived?» when it would
        # have (the most time for the helpers), unless asked that already (a «still needed?»
        # asked before it was taken does not count), and not within ``before`` of a helper
        # taking it.
        (Need.status == NeedStatus.assigned)
        & (Need.expires_at <= now)
        & or_(Need.reconfirm_requested_at.is_(None), Need.reconfirm_requested_at < Need.expires_at)
        & ~exists().where(
            Match.need_id == Need.id,
            Match.status == MatchStatus.accepted,
            Match.responded_at > now - before,
        ),
    )


def _expiring(now: datetime) -> ColumnElement[bool]:
    return Need.status.in_(OPEN_NEED_STATUSES) & Need.expires_at.is_not(None) & (Need.expires_at <= now)


def _escalating(now: datetime) -> ColumnElement[bool]:
    return (
        Need.escalation_next_at.is_not(None)
        & (Need.escalation_next_at <= now)
        & or_(Need.status.in_(OPEN_NEED_STATUSES), Need.status == NeedStatus.assigned)
    )


def lock_due_needs(session: Session, settings: Settings, now: datetime) -> set[int]:
    """Lock every need this pass will write (asked, expired, escalated) or whose requests it will
    close (timed out, or to an expiring offer), in id order, before any match or offer (SQLite:
    the write lock, taken only when some are due).

    Accept, give-back and close take a need first, then its matches, then an offer; a pass that
    took matches first (an expiring offer's requests, requests timing out) and a need after them
    could meet an accept of one of those requests coming the other way, and the two would
    deadlock; so could an accept of a request the pass times out after it gave an expired need's
    units back to that request's offer. The needs are locked from the read to the commit: a need a helper gives back or its
    author answers meanwhile is not marked asked, nor sent a question that no longer fits.
    Returns their ids (a need due after the lock waits for the next pass).
    """
    before = timedelta(hours=settings.need_reconfirm_before_hours)
    closing = select(Match.need_id).where(
        or_(
            _late(settings, now),
            Match.status.in_(PENDING_MATCH_STATUSES)
            & Match.offer_id.in_(select(Offer.id).where(_offers_expiring(now))),
        )
    )
    due = or_(_asking(now, before), _expiring(now), _escalating(now), Need.id.in_(closing))
    if session.scalar(select(Need.id).where(due).limit(1)) is None:
        return set()
    write_lock(session)
    return set(session.scalars(select(Need.id).where(due).order_by(Need.id).with_for_update(key_share=True)))


def expire_needs(session: Session, settings: Settings, now: datetime, report: UpkeepReport) -> None:
    """Questions ahead of an expiry, and expiries (the needs locked by ``lock_due_needs``)."""
    before = timedelta(hours=settings.need_reconfirm_before_hours)
    asking_query = select(Need).where(_asking(now, before)).order_by(Need.id)
    # Locked already (a need due since ``lock_due_needs`` is locked here, out of id order, but
    # not left to change between this read and the write).
    asking = session.scalars(asking_query.with_for_update(key_share=True)).all()
    taken: list[Need] = []
    for need in asking:
        need.reconfirm_requested_at = now
        report.reconfirm_requested += 1
        if need.status is NeedStatus.assigned:
            taken.append(need)
            continue
        if need.contact_phone is None or need.expires_at is None:
            continue  # no one to ask: coordinators see it on the dashboard
        language = need.language.value
        messages_service.queue(
            session=session,
            phone=need.contact_phone,
            body=still_needed(
                language=language,
                code=need.code,
                what=label(need.category, language),
                hours_left=(need.expires_at - now).total_seconds() / 3600,
            ),
            language=language,
            idempotency_key=f"need:{need.id}:still-needed:{need.expires_at.isoformat()}",
            need_id=need.id,
        )
    ask_if_done(session, taken, now)
    session.flush()
    # The needs first, then their matches: the order an accept takes them in (two orders deadlock).
    expired = session.execute(
        update(Need)
        .where(_expiring(now))
        .values(status=NeedStatus.expired, escalation_next_at=None, updated_at=utcnow())
        .returning(Need.id)
    ).scalars()
    ids = sorted(int(i) for i in expired)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        audit.record_many(session, "expired", "need", chunk)
        close_pending(session, Match.need_id.in_(chunk), now=utcnow())
        close_accepted(session, chunk, now=utcnow(), outcome=NeedStatus.expired)
    report.needs_expired += len(ids)
    session.flush()


def ask_if_done(session: Session, needs: list[Need], now: datetime) -> None:
    """Needs whose every unit a helper took, at the time they would have expired: they do not
    expire (helpers are on their way), but the author is asked whether help has arrived (DONE
    <code> closes the need and completes its tasks, which frees the helpers' task slots) and each
    helper with the task still open is reminded to say DONE when it is done. Once per expiry date
    (YES renews it, and the question comes again at the new one; NO means "not yet" and does too)."""
    if not needs:
        return
    messages = []
    for need in needs:
        if need.contact_phone is None or need.expires_at is None:
            continue  # no one to ask: coordinators see it on the dashboard
        language = need.language.value
        messages.append(
            {
                "phone": need.contact_phone,
                "body": help_arrived(language=language, code=need.code, what=label(need.category, language)),
                "language": language,
                "idempotency_key": f"need:{need.id}:help-arrived:{need.expires_at.isoformat()}",
                "need_id": need.id,
            }
        )
    messages_service.queue_many(session=session, messages=messages, now=now)
    remind_helpers(session, {need.id: need.expires_at for need in needs}, now=now, still_waiting=False)


def time_out_matches(session: Session, settings: Settings, now: datetime, report: UpkeepReport) -> None:
    late = _late(settings, now)
    report.matches_timed_out += session.scalar(select(func.count(Match.id)).where(late)) or 0
    report.reoffer.update(close_pending(session, late, now=utcnow(), status=MatchStatus.timed_out))


def run_upkeep(*, session: Session, settings: Settings, live: LiveOfferIndex, now: datetime) -> UpkeepReport:
    """One pass of expiry, timeouts, escalation and re-offering (see the module docstring)."""
    report = UpkeepReport()
    locked = lock_due_needs(session, settings, now)
    expire_needs(session, settings, now, report)
    expire_offers(session, now, report)
    time_out_matches(session, settings, now, report)
    session.flush()
    live.refresh(session=session, now=now)
    due = [
        need
        for need in session.scalars(select(Need).where(_escalating(now)).order_by(Need.escalation_next_at, Need.id))
        if need.id in locked
    ]
    for need in due:
        report.escalation_steps += 1
        report.helpers_asked += escalate(session=session, need=need, live=live, settings=settings, now=now)
        report.reoffer.discard(need.id)
    waiting = sorted(report.reoffer)
    for start in range(0, len(waiting), _CHUNK):
        for need in session.scalars(
            select(Need)
            .where(
                Need.id.in_(waiting[start : start + _CHUNK]),
                Need.status.in_(OPEN_NEED_STATUSES),
                Need.escalation_next_at.is_(None),
            )
            .order_by(Need.id)
        ):
            report.needs_reoffered += 1
            offer_to_next_helpers(session=session, need=need, live=live, now=now, reason="after no answer")
    session.flush()
    return report
