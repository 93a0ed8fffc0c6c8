"""Messages: the outbox and the SMS log."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from aidmatch.database import utcnow
from aidmatch.enums import MessageDirection, MessageStatus
from aidmatch.messages.models import Message
from aidmatch.query import PageParams, paginate


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
    flush: bool = True,
) -> Message:
    """Put an SMS in the outbox (sent later by the outbox job; at most once per key).

    ``flush=False`` leaves the row to the session's next flush (several messages then go in one
    statement); the message has no id until then.
    """
    now = utcnow()
    message = Message(
        direction=MessageDirection.outbound,
        status=MessageStatus.queued,
        channel="sms",
        phone=phone,
        body=body,
        language=language,
        idempotency_key=idempotency_key,
        need_id=need_id,
        match_id=match_id,
        helper_id=helper_id,
        attempts=0,
        created_at=now,
        updated_at=now,
    )
    session.add(message)
    if flush:
        session.flush()
    return message


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
