"""The outbox drain: queued SMS go out through the configured sender, at most once per key.

Each pass:

1. reconciles messages left ``sending`` by a crashed drain: if the provider has a message to that
   phone with that text since the claim, it is marked sent; otherwise it goes back to the queue;
2. claims due messages (as many as the rate limit allows): ``SELECT … FOR UPDATE SKIP LOCKED`` on
   PostgreSQL, so any number of drains can run side by side, and on every backend a conditional
   update ``queued → sending`` that only one drain can win; messages to phones that sent STOP are
   suppressed instead;
3. sends each claimed message and records the outcome in its own transaction: ``sent``; back to
   ``queued`` with exponential backoff on a transient error; ``failed`` on a permanent one (or
   after ``sms_max_attempts``). An unsubscribed recipient (Twilio 21610) becomes an opt-out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

import aidmatch.models  # noqa: F401  every table known, so foreign keys resolve in a drain-only process
from aidmatch.audit.service import act_as
from aidmatch.config import Settings, SmsSenderKind
from aidmatch.database import utcnow
from aidmatch.enums import MessageDirection, MessageStatus
from aidmatch.messages.models import Message, SmsOptOut
from notifications.ratelimit import TokenBucket
from notifications.segments import fit
from notifications.senders import ConsoleSender, PermanentSendError, Sender, TransientSendError, TwilioSender

log = logging.getLogger("aidmatch.sms")

_MAX_BACKOFF_S = 3600.0
_UNSUBSCRIBED = 21610


def make_sender(settings: Settings) -> Sender:
    """The sender the settings ask for (console unless configured otherwise)."""
    if settings.sms_sender is SmsSenderKind.twilio:
        return TwilioSender(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token.get_secret_value(),
            from_=settings.twilio_from,
            messaging_service_sid=settings.twilio_messaging_service_sid,
            base_url=settings.twilio_base_url,
        )
    return ConsoleSender()


@dataclass(slots=True)
class DrainReport:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    suppressed: int = 0
    reconciled: int = 0
    requeued: int = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def backoff_s(settings: Settings, attempts: int) -> float:
    """Wait before the next try after ``attempts`` tries: base, 2×base, 4×base… up to an hour."""
    return float(min(_MAX_BACKOFF_S, settings.sms_retry_base_s * 2 ** max(0, attempts - 1)))


def _opted_out(session: Session, phones: set[str]) -> set[str]:
    if not phones:
        return set()
    return set(session.scalars(select(SmsOptOut.phone).where(SmsOptOut.phone.in_(sorted(phones)))))


def _reconcile(session: Session, sender: Sender, settings: Settings, now: datetime, report: DrainReport) -> None:
    stale = session.scalars(
        select(Message)
        .where(
            Message.direction == MessageDirection.outbound,
            Message.status == MessageStatus.sending,
            Message.updated_at <= now - timedelta(seconds=settings.sms_stale_sending_s),
        )
        .order_by(Message.id)
        .limit(100)
    ).all()
    for message in stale:
        try:
            sid = sender.lookup(to=message.phone, body=message.body, since=message.updated_at - timedelta(minutes=1))
        except TransientSendError as exc:
            log.warning("cannot reconcile message %s yet: %s", message.id, exc)
            continue
        if sid is not None:
            message.status = MessageStatus.sent
            message.provider_sid = sid
            message.sent_at = message.sent_at or now
            report.reconciled += 1
        else:
            message.status = MessageStatus.queued
            report.requeued += 1
        message.updated_at = utcnow()
    session.commit()


def _claim(session: Session, limit: int, now: datetime, report: DrainReport) -> list[Message]:
    stmt = (
        select(Message)
        .where(
            Message.direction == MessageDirection.outbound,
            Message.status == MessageStatus.queued,
            or_(Message.send_after.is_(None), Message.send_after <= now),
        )
        .order_by(Message.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    candidates = session.scalars(stmt).all()
    blocked = _opted_out(session, {m.phone for m in candidates})
    claimed: list[Message] = []
    for message in candidates:
        target = MessageStatus.suppressed if message.phone in blocked else MessageStatus.sending
        won = session.execute(
            update(Message)
            .where(Message.id == message.id, Message.status == MessageStatus.queued)
            .values(
                status=target, attempts=Message.attempts + int(target is MessageStatus.sending), updated_at=utcnow()
            )
        )
        if won.rowcount != 1:  # type: ignore[attr-defined]
            continue  # another drain took it
        if target is MessageStatus.suppressed:
            report.suppressed += 1
        else:
            claimed.append(message)
    session.commit()
    for message in claimed:
        session.refresh(message)
    report.claimed += len(claimed)
    return claimed


def _record(session: Session, message: Message, report: DrainReport) -> None:
    session.commit()
    report.sent += message.status is MessageStatus.sent
    report.failed += message.status is MessageStatus.failed
    report.retried += message.status is MessageStatus.queued


def drain(
    *,
    sessions: sessionmaker[Session],
    sender: Sender,
    settings: Settings,
    bucket: TokenBucket,
    now: datetime | None = None,
) -> DrainReport:
    """One pass of the outbox (see the module docstring)."""
    now = now or utcnow()
    report = DrainReport()
    callback = settings.public_url.rstrip("/") + "/sms/status" if sender.name == "twilio" else None
    with sessions() as session:
        act_as(session, "system:outbox")
        _reconcile(session, sender, settings, now, report)
        allowed = bucket.take(100)
        if allowed == 0:
            return report
        claimed = _claim(session, allowed, now, report)
        unused = allowed - len(claimed)
        if unused:
            bucket.give_back(unused)
        for message in claimed:
            body = fit(message.body, settings.sms_max_segments)
            try:
                sent = sender.send(
                    to=message.phone,
                    body=body,
                    key=message.idempotency_key or f"message:{message.id}",
                    status_callback=callback,
                )
            except PermanentSendError as exc:
                message.status = MessageStatus.failed
                message.error = str(exc)[:2000]
                if exc.code == _UNSUBSCRIBED and session.get(SmsOptOut, message.phone) is None:
                    session.add(SmsOptOut(phone=message.phone, created_at=utcnow()))
            except TransientSendError as exc:
                message.error = str(exc)[:2000]
                if message.attempts >= settings.sms_max_attempts:
                    message.status = MessageStatus.failed
                else:
                    message.status = MessageStatus.queued
                    message.send_after = now + timedelta(seconds=backoff_s(settings, message.attempts))
            else:
                message.status = MessageStatus.sent
                message.provider_sid = sent.provider_sid
                message.sent_at = utcnow()
                message.error = None
            message.body = body
            message.updated_at = utcnow()
            _record(session, message, report)
    if report.claimed or report.suppressed or report.reconciled or report.requeued:
        log.info("outbox: %s", report.as_dict())
    return report
