"""Requests still waiting for a helper's answer, and closing them (one place, one audit row each)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, select, update
from sqlalchemy.orm import Session

from aidmatch.audit import service as audit
from aidmatch.categories import label
from aidmatch.enums import MatchStatus, NeedStatus
from aidmatch.helpers.models import Helper
from aidmatch.matches.models import Match
from aidmatch.messages import service as messages_service
from aidmatch.needs.models import Need
from aidmatch.offers.models import Offer
from notifications.templates import task_called_off, task_done_reminder, task_still_waiting

PENDING_MATCH_STATUSES = (MatchStatus.proposed, MatchStatus.notified)


def close_pending(
    session: Session,
    where: ColumnElement[bool],
    *,
    now: datetime,
    status: MatchStatus = MatchStatus.cancelled,
    **detail: Any,
) -> list[int]:
    """Close the unanswered requests matching ``where`` (cancelled by default, or timed out),
    each with an audit row carrying ``detail``; returns the ids of the needs they were for."""
    pending = Match.status.in_(PENDING_MATCH_STATUSES)
    # One statement closes them and says which it closed: a request accepted between a read and the
    # update would otherwise get a "timed_out" audit row although it was accepted.
    rows = session.execute(
        update(Match).where(pending, where).values(status=status, updated_at=now).returning(Match.id, Match.need_id)
    ).all()
    if rows:
        audit.record_many(session, status.value, "match", sorted(int(r[0]) for r in rows), **detail)
    return sorted({int(r[1]) for r in rows})


# Why an accepted task was called off, as its helper reads it (by the need's new status).
_CALLED_OFF = {
    NeedStatus.cancelled: {"ru": "заявку отозвали", "en": "the request was withdrawn"},
    NeedStatus.expired: {"ru": "заявка истекла", "en": "the request expired"},
    NeedStatus.duplicate: {"ru": "заявка объединена с другой", "en": "the request was merged into another"},
}


def give_back_units(session: Session, units: dict[int, int], *, now: datetime) -> None:
    """Units of tasks that will not be done go back to their offers (offer id → units), in offer
    id order: two transactions giving back to the same offers lock them alike."""
    for offer_id, quantity in sorted(units.items()):
        session.execute(
            update(Offer)
            .where(Offer.id == offer_id)
            .values(
                capacity_used=case((Offer.capacity_used >= quantity, Offer.capacity_used - quantity), else_=0),
                updated_at=now,
            )
        )


def close_accepted(session: Session, need_ids: list[int], *, now: datetime, outcome: NeedStatus) -> list[int]:
    """Settle the accepted tasks of needs that closed (``outcome``: the needs' new status).

    A need its author calls fulfilled has its accepted tasks completed. A need withdrawn, expired
    or merged has them called off: cancelled, their units given back to the offers, and each
    helper told by SMS (with consent), so they neither go nor keep a task slot for it. Returns the
    ids of the matches settled, each with an audit row.
    """
    if not need_ids:
        return []
    accepted = (Match.need_id.in_(need_ids)) & (Match.status == MatchStatus.accepted)
    if outcome is NeedStatus.fulfilled:
        done = (
            session.execute(
                update(Match).where(accepted).values(status=MatchStatus.completed, updated_at=now).returning(Match.id)
            )
            .scalars()
            .all()
        )
        ids = sorted(int(m) for m in done)
        if ids:
            audit.record_many(session, "completed", "match", ids, after="need fulfilled by its author")
        return ids
    rows = session.execute(
        update(Match)
        .where(accepted)
        .values(status=MatchStatus.cancelled, updated_at=now)
        .returning(Match.id, Match.offer_id, Match.quantity)
    ).all()
    if not rows:
        return []
    ids = sorted(int(r[0]) for r in rows)
    audit.record_many(session, "cancelled", "match", ids, after=f"need {outcome.value}")
    units: dict[int, int] = {}
    for _, offer_id, quantity in rows:
        units[int(offer_id)] = units.get(int(offer_id), 0) + int(quantity)
    give_back_units(session, units, now=now)
    whom = session.execute(
        select(Match.id, Match.need_id, Need.category, Helper.id, Helper.phone, Helper.language, Helper.sms_consent)
        .join(Offer, Offer.id == Match.offer_id)
        .join(Helper, Helper.id == Offer.helper_id)
        .join(Need, Need.id == Match.need_id)
        .where(Match.id.in_(ids))
        .order_by(Match.id)
    ).all()
    why = _CALLED_OFF.get(outcome, _CALLED_OFF[NeedStatus.cancelled])
    messages = []
    for match_id, need_id, category, helper_id, phone, language, consent in whom:
        if not consent:
            continue
        lang = language.value
        messages.append(
            {
                "phone": phone,
                "body": task_called_off(
                    language=lang, match_id=match_id, what=label(category, lang), why=why.get(lang, why["en"])
                ),
                "language": lang,
                "idempotency_key": f"match:{match_id}:called-off",
                "need_id": need_id,
                "match_id": match_id,
                "helper_id": helper_id,
            }
        )
    messages_service.queue_many(session=session, messages=messages, now=now)
    return ids


def remind_helpers(session: Session, due: dict[int, datetime | None], *, now: datetime, still_waiting: bool) -> None:
    """An SMS to each helper (with consent) whose task for one of the needs ``due`` (id → its
    expiry, which keys the message: once per expiry) is still accepted: to say DONE when it is done
    (when the need would have expired), or that its author is still waiting (the author said so)."""
    if not due:
        return
    tasks = session.execute(
        select(Match.id, Match.need_id, Need.category, Helper.id, Helper.phone, Helper.language)
        .join(Offer, Offer.id == Match.offer_id)
        .join(Helper, Helper.id == Offer.helper_id)
        .join(Need, Need.id == Match.need_id)
        .where(Match.need_id.in_(sorted(due)), Match.status == MatchStatus.accepted, Helper.sms_consent.is_(True))
        .order_by(Match.id)
    ).all()
    text, kind = (task_still_waiting, "still-waiting") if still_waiting else (task_done_reminder, "done-reminder")
    messages = []
    for match_id, need_id, category, helper_id, phone, language in tasks:
        lang = language.value
        expires = due[need_id]
        messages.append(
            {
                "phone": phone,
                "body": text(language=lang, match_id=match_id, what=label(category, lang)),
                "language": lang,
                "idempotency_key": f"match:{match_id}:{kind}:{expires.isoformat() if expires else ''}",
                "need_id": need_id,
                "match_id": match_id,
                "helper_id": helper_id,
            }
        )
    messages_service.queue_many(session=session, messages=messages, now=now)
