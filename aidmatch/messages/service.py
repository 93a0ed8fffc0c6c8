"""Messages: the outbox and the SMS log."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aidmatch.database import dialect_insert, insert_rows, utcnow, write_lock
from aidmatch.enums import MessageDirection, MessageStatus
from aidmatch.helpers.models import Helper
from aidmatch.messages.models import DeliveryReport, Message, SmsOptOut
from aidmatch.query import PageParams, paginate

_TABLE = typing.cast(Table, Message.__table__)


def _outbound(now: datetime, **fields: Any) -> dict[str, Any]:
    """The columns of a queued SMS: ``queue``'s keyword arguments plus the outbox's own."""
    return {
        "direction": MessageDirection.outbound,
        "status": MessageStatus.queued,
        "channel": "sms",
        "need_id": None,
        "match_id": None,
        "helper_id": None,
        **fields,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


def queue(
    *,
    session: Session,
    phone: str,
    body: str,
    language: str,
    idempotency_key: str,
    need_id: int | None = None,
    match_id: int | None = None,
    helper_id: int | None = None,
) -> Message:
    """Put an SMS in the outbox (sent later by the outbox job; at most once per key)."""
    message = Message(
        **_outbound(
            utcnow(),
            phone=phone,
            body=body,
            language=language,
            idempotency_key=idempotency_key,
            need_id=need_id,
            match_id=match_id,
            helper_id=helper_id,
        )
    )
    session.add(message)
    session.flush()
    return message


def store_inbound(*, session: Session, phone: str, body: str, sid: str | None, now: datetime) -> Message:
    """Keep a received SMS as it came (before anything tries to understand it)."""
    message = Message(
        direction=MessageDirection.inbound,
        status=MessageStatus.received,
        channel="sms",
        phone=phone,
        body=body,
        provider_sid=sid,
        attempts=0,
        created_at=now,
        updated_at=now,
    )
    session.add(message)
    session.flush()
    return message


def queue_many(*, session: Session, messages: Sequence[dict[str, Any]], now: datetime | None = None) -> None:
    """Put many SMS in the outbox in one statement; each dict has ``queue``'s keyword arguments
    (phone, body, language, idempotency_key and optionally need_id, match_id, helper_id)."""
    if not messages:
        return
    now = now or utcnow()
    rows = [_outbound(now, **m) for m in messages]
    insert_rows(session, _TABLE, rows)  # through the table: the ORM's bulk insert costs more Python


def list_messages(
    *,
    session: Session,
    page: PageParams,
    direction: Sequence[MessageDirection] = (),
    status: Sequence[MessageStatus] = (),
) -> tuple[list[Message], int]:
    stmt = select(Message)
    if direction:
        stmt = stmt.where(Message.direction.in_(direction))
    if status:
        stmt = stmt.where(Message.status.in_(status))
    return paginate(session, stmt.order_by(Message.id.desc()), page)


# A provider's delivery word → our status ("queued", "sending"… are all still "sent" to us).
DELIVERY_STATES = {
    "queued": MessageStatus.sent,
    "accepted": MessageStatus.sent,
    "sending": MessageStatus.sent,
    "sent": MessageStatus.sent,
    "delivered": MessageStatus.delivered,
    "undelivered": MessageStatus.failed,
    "failed": MessageStatus.failed,
}
# Kept this long for a message whose provider id is not stored yet; older ones are for no message of ours.
EARLY_REPORT_TTL = timedelta(days=2)


def apply_delivery(message: Message, status: str, error_code: str | None) -> bool:
    """A delivery callback's news on ``message``; whether it changed anything. Callbacks come out
    of order: a final state (delivered, failed) is not undone by a late "sent", but a failure
    after "delivered" is recorded."""
    state = DELIVERY_STATES.get(status.lower())
    if state is None:
        return False
    final = message.status in (MessageStatus.delivered, MessageStatus.failed)
    if final and state is not MessageStatus.failed:
        return False
    message.status = state
    if state is MessageStatus.failed:
        message.error = f"Twilio delivery: {status}" + (f" (error {error_code})" if error_code else "")
    message.updated_at = utcnow()
    return True


def keep_early_report(session: Session, sid: str, status: str, error_code: str | None) -> None:
    """A callback for a provider id no message has yet: kept for when the outbox stores it (the
    most telling of several: a final state over "sent", a failure over all). Two callbacks for one
    id at once: the second's insert meets the first's row, and then updates it."""
    if DELIVERY_STATES.get(status.lower()) is None:
        return
    write_lock(session)  # SQLite: as a row lock would
    for _ in range(2):
        report = session.get(DeliveryReport, sid, with_for_update=True, populate_existing=True)
        if report is not None:
            rank = {MessageStatus.sent: 0, MessageStatus.delivered: 1, MessageStatus.failed: 2}
            if rank[DELIVERY_STATES[status.lower()]] >= rank[DELIVERY_STATES[report.status]]:
                report.status, report.error_code = status.lower(), error_code
            return
        try:
            with session.begin_nested():  # a savepoint: a lost race leaves the transaction usable
                session.add(
                    DeliveryReport(provider_sid=sid, status=status.lower(), error_code=error_code, created_at=utcnow())
                )
            return
        except IntegrityError:
            continue  # another callback for this id inserted it a moment ago: update it instead


def apply_early_report(session: Session, message: Message) -> None:
    """Once ``message`` has its provider id: a callback that came before it, applied and dropped.

    The message is read afresh and locked first, then the report (the order a callback takes
    them in, so the two never deadlock), and the report is judged against the message as it is
    now, not as this session last wrote it (a callback may have changed it since).
    """
    if message.provider_sid is None:
        return
    if (
        session.scalar(select(DeliveryReport.provider_sid).where(DeliveryReport.provider_sid == message.provider_sid))
        is None
    ):
        # Nearly always: nothing came early. Read after the id's commit, so a callback committing
        # its report later finds the id itself (and applies it) on its second look.
        return
    session.flush()
    write_lock(session)  # SQLite: as the row locks below would
    session.refresh(message, with_for_update=True)
    if message.provider_sid is None:
        return
    report = session.get(DeliveryReport, message.provider_sid, with_for_update=True, populate_existing=True)
    if report is not None:
        apply_delivery(message, report.status, report.error_code)
        session.delete(report)


def forget_stale_reports(session: Session, now: datetime) -> None:
    session.execute(delete(DeliveryReport).where(DeliveryReport.created_at < now - EARLY_REPORT_TTL))


def set_consent(session: Session, phone: str, *, consent: bool) -> None:
    """STOP (``consent`` False) or START for a phone, said to us or to the provider: its opt-out
    row, and its helper's consent (requests then wait on the task page instead of going by SMS)."""
    if consent:
        session.execute(delete(SmsOptOut).where(SmsOptOut.phone == phone))
    else:
        # Two STOPs at once (ours and the provider's OptOutType, or two deliveries): the later one
        # finds the row inserted and does nothing, instead of failing on the unique phone.
        insert = dialect_insert(session)
        session.execute(
            insert(SmsOptOut)
            .values(phone=phone, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=[SmsOptOut.phone])
        )
    session.execute(update(Helper).where(Helper.phone == phone).values(sms_consent=consent, updated_at=utcnow()))
    session.flush()


def request_key(match_id: int, *, wave: int | None = None, again: int | None = None) -> str:
    """The idempotency key of a task request: ``match:<id>:ask``, ``match:<id>:wave:<n>`` or, made
    again after the task ``again`` was given back, ``match:<id>:ask-again:<task>``."""
    if again:
        return f"match:{match_id}:ask-again:{again}"
    return f"match:{match_id}:wave:{wave}" if wave else f"match:{match_id}:ask"


def is_request_key(key: str | None) -> bool:
    """Whether an idempotency key is a task request's (``request_key``)."""
    return (
        key is not None
        and key.startswith("match:")
        and (key.endswith(":ask") or ":wave:" in key or ":ask-again:" in key)
    )


def request_key_clause() -> ColumnElement[bool]:
    """``is_request_key`` in SQL."""
    key = Message.idempotency_key
    return or_(key.like("match:%:ask"), key.like("match:%:wave:%"), key.like("match:%:ask-again:%"))


def waiting_in_triage(session: Session, phone: str, *, other_than: int | None = None) -> bool:
    """Whether one of the phone's SMS (other than ``other_than``) waits in the triage queue."""
    stmt = select(Message.id).where(
        Message.phone == phone,
        Message.direction == MessageDirection.inbound,
        Message.status == MessageStatus.unparsed,
        Message.need_id.is_(None),
    )
    if other_than is not None:
        stmt = stmt.where(Message.id != other_than)
    return session.scalar(stmt.limit(1)) is not None


def held_back(session: Session, phones: Sequence[str]) -> dict[str, list[Message]]:
    """Per phone: its SMS held back by the per-phone limit and not in the triage queue (one of the
    phone's messages waits there for all of them), oldest first."""
    if not phones:
        return {}
    rows = session.scalars(
        select(Message)
        .where(
            Message.phone.in_(sorted(set(phones))),
            Message.direction == MessageDirection.inbound,
            Message.status == MessageStatus.received,
        )
        .order_by(Message.id)
    )
    out: dict[str, list[Message]] = {}
    for m in rows:  # JSON: read here, alike on both databases
        if isinstance(m.parsed, dict) and m.parsed.get("rate_limited"):
            out.setdefault(m.phone, []).append(m)
    return out
