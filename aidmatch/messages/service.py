"""Messages: the outbox and the SMS log."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aidmatch.database import insert_rows, utcnow, write_lock
from aidmatch.enums import MessageDirection, MessageStatus
from aidmatch.messages.models import DeliveryReport, Message
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
