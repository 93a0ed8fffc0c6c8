"""Messages: the outbox and the SMS log."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from aidmatch.database import insert_rows, utcnow
from aidmatch.enums import MessageDirection, MessageStatus
from aidmatch.messages.models import Message
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
