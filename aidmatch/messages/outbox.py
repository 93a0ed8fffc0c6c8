"""The outbox drain: queued SMS go out through the configured sender, at most once per key.

Each pass:

1. reconciles messages left ``sending`` by a crashed drain (or a send whose outcome is unknown):
   if the provider has a message to that phone with that text since the claim, it is marked sent;
   otherwise it goes back to the queue, or fails after ``sms_max_attempts``. Each
   change is conditional on the row as read: a drain that stamped it meanwhile is sending it;
2. claims due messages (as many as the rate limit allows): ``SELECT … FOR UPDATE SKIP LOCKED`` on
   PostgreSQL, so any number of drains can run side by side, and on every backend a conditional
   update ``queued → sending`` that only one drain can win, storing the text as it will be sent
   (cut to ``sms_max_segments``, so a reconciliation looks for what the provider really got);
   messages to phones that sent STOP are suppressed instead, and so are requests to a helper whose
   match is no longer waiting for an answer (withdrawn, timed out) or whose need closed, reminders
   to say DONE (or that the author still waits) for a task settled since, "a helper is coming" and
   the author's contact for a task given back, and «still needed?» / «has help arrived?» for a need
   answered or closed since;
3. sends each claimed message, stamping it just before (a message another drain's reconciliation
   finds ``sending`` is one whose send started ``sms_stale_sending_s`` ago, not one still waiting
   its turn), and records the outcome in its own transaction: ``sent``; back to ``queued`` with
   exponential backoff on a transient error; ``failed`` on a permanent one (or after
   ``sms_max_attempts``); when the provider refuses our own set-up (credentials, sender number),
   the message and the rest of the batch go back to the queue uncounted and the pass stops. An
   unsubscribed recipient (Twilio 21610) becomes an opt-out, as if they had said STOP to us.

With ``pace_s`` a pass keeps claiming and sending while the token bucket refills, for up to that
long: the scheduler's passes then send at the configured rate, not just one burst per pass.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

import aidmatch.models  # noqa: F401  every table known, so foreign keys resolve in a drain-only process
from aidmatch.audit.service import act_as
from aidmatch.config import Settings, SmsSenderKind
from aidmatch.database import utcnow
from aidmatch.enums import OPEN_NEED_STATUSES, MatchStatus, MessageDirection, MessageStatus, NeedStatus
from aidmatch.matches.models import Match
from aidmatch.matches.pending import PENDING_MATCH_STATUSES
from aidmatch.messages import service as messages_service
from aidmatch.messages.models import Message, SmsOptOut
from aidmatch.needs.models import Need
from notifications.ratelimit import Bucket
from notifications.segments import fit
from notifications.senders import (
    ConfigurationSendError,
    ConsoleSender,
    PermanentSendError,
    Sender,
    TransientSendError,
    TwilioSender,
    UnknownOutcomeError,
)

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
    taken: dict[str, set[str]] = {}  # per phone: the provider's ids already stored (or given out in this pass)
    found: list[int] = []  # messages found at the provider, their ids stored now
    for message in stale:
        known = taken.get(message.phone)
        if known is None:
            known = taken[message.phone] = set(
                session.scalars(
                    select(Message.provider_sid).where(
                        Message.phone == message.phone, Message.provider_sid.is_not(None)
                    )
                )
            )
        try:
            # One text can go to one phone twice (two helpers accepting parts of one need): a message
            # already matched to another of ours is not this one's.
            sid = sender.lookup(
                to=message.phone, body=message.body, since=message.updated_at - timedelta(minutes=1), known=known
            )
        except TransientSendError as exc:
            log.warning("cannot reconcile message %s yet: %s", message.id, exc)
            continue
        values: dict[str, object] = {"updated_at": utcnow()}
        if sid is not None:
            values.update(status=MessageStatus.sent, provider_sid=sid, sent_at=message.sent_at or now)
        elif message.attempts >= settings.sms_max_attempts:
            # Every try ended without an answer (or in an error of ours) and none reached the
            # provider: given up, not tried for ever.
            values.update(
                status=MessageStatus.failed,
                error=f"gave up after {message.attempts} attempts, none known to the provider: {message.error or ''}"[
                    :2000
                ],
            )
        else:
            # At once: a crashed drain's message is late already (and a send that keeps timing
            # out comes back only every ``sms_stale_sending_s``).
            values["status"] = MessageStatus.queued
        # Only as it was read: a drain that claimed it and was slow to reach it stamps it as its
        # send starts (``_send``), and then it is that drain's, not to be queued (and sent) again.
        done = session.execute(
            update(Message)
            .where(
                Message.id == message.id,
                Message.status == MessageStatus.sending,
                Message.attempts == message.attempts,
                Message.updated_at == message.updated_at,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            continue
        if sid is not None:
            known.add(sid)
            found.append(message.id)
            report.reconciled += 1
        elif values["status"] is MessageStatus.failed:
            report.failed += 1
        else:
            report.requeued += 1
    session.commit()
    # Callbacks that came for them before their ids were stored, and those kept for no message.
    for message_id in found:
        stored = session.get(Message, message_id, populate_existing=True)
        if stored is not None:
            messages_service.apply_early_report(session, stored)
    messages_service.forget_stale_reports(session, now)
    session.commit()


def _withdrawn(session: Session, messages: list[Message]) -> dict[int, str]:
    """Messages among ``messages`` that no longer stand, with why: requests to helpers whose match
    is not waiting for an answer any more or whose need closed; reminders to say DONE (or that the
    author still waits) for a task no longer accepted; "a helper is coming" and the author's contact
    for a task given back since; «still needed?» / «has help arrived?» for a need answered (or
    closed) since, or asked about an earlier expiry, or no longer fitting its need's state."""
    out: dict[int, str] = {}
    asks = {
        m.id: m.match_id
        for m in messages
        if m.match_id is not None and messages_service.is_request_key(m.idempotency_key)
    }
    if asks:
        standing = set(
            session.scalars(
                select(Match.id)
                .join(Need, Need.id == Match.need_id)
                .where(
                    Match.id.in_(sorted(set(asks.values()))),
                    Match.status.in_(PENDING_MATCH_STATUSES),
                    Need.status.in_((*OPEN_NEED_STATUSES, NeedStatus.assigned)),
                )
            )
        )
        out.update((i, "request withdrawn") for i, match_id in asks.items() if match_id not in standing)
    for parts, standing_statuses, why in _TASK_MESSAGES:
        about = {
            m.id: m.match_id for m in messages if m.match_id is not None and any(_is_key(m, part) for part in parts)
        }
        if about:
            standing = set(
                session.scalars(
                    select(Match.id).where(
                        Match.id.in_(sorted(set(about.values()))), Match.status.in_(standing_statuses)
                    )
                )
            )
            out.update((i, why) for i, match_id in about.items() if match_id not in standing)
    questions = {
        m.id: (m.need_id, m.idempotency_key or "")
        for m in messages
        if m.need_id is not None and (_is_key(m, ":still-needed:") or _is_key(m, ":help-arrived:"))
    }
    if questions:
        # A question stands while its need waits for the answer to it: the one asked about the
        # need's present expiry (its key ends with it), not one asked before a renewal.
        # «Still needed?» fits an open need, «has help arrived?» one helpers took all of.
        stmt = select(Need.id, Need.expires_at, Need.status).where(
            Need.id.in_(sorted({need_id for need_id, _ in questions.values()})),
            Need.status.in_((*OPEN_NEED_STATUSES, NeedStatus.assigned)),
            Need.reconfirm_requested_at.is_not(None),
        )
        now_as = {need_id: (expires, status) for need_id, expires, status in session.execute(stmt).tuples()}
        for i, (need_id, key) in questions.items():
            expires, status = now_as.get(need_id, (None, None))
            fits = status is NeedStatus.assigned if ":help-arrived:" in key else status in OPEN_NEED_STATUSES
            if expires is None or not fits or not key.endswith(f":{expires.isoformat()}"):
                out[i] = "question answered"
    return out


# Messages about a task that stand while its match is in one of these states: (key parts, states, why not).
_TASK_MESSAGES = (
    ((":accepted:",), (MatchStatus.accepted, MatchStatus.completed), "task given back"),
    ((":done-reminder:", ":still-waiting:"), (MatchStatus.accepted,), "task settled"),
)


def _is_key(message: Message, part: str) -> bool:
    return message.idempotency_key is not None and part in message.idempotency_key


def _claim(session: Session, limit: int, now: datetime, settings: Settings, report: DrainReport) -> list[Message]:
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
    withdrawn = _withdrawn(session, list(candidates))
    claimed: list[Message] = []
    for message in candidates:
        suppress = message.phone in blocked or message.id in withdrawn
        target = MessageStatus.suppressed if suppress else MessageStatus.sending
        values: dict[str, object] = {"status": target, "updated_at": utcnow()}
        if suppress:
            values["error"] = "recipient opted out" if message.phone in blocked else withdrawn[message.id]
        else:
            values["attempts"] = Message.attempts + 1
            values["body"] = fit(message.body, settings.sms_max_segments)
        won = session.execute(
            update(Message).where(Message.id == message.id, Message.status == MessageStatus.queued).values(**values)
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
    bucket: Bucket,
    now: datetime | None = None,
    pace_s: float = 0.0,
) -> DrainReport:
    """One pass of the outbox (see the module docstring)."""
    fixed_now = now
    now = now or utcnow()
    deadline = time.monotonic() + pace_s
    report = DrainReport()
    with sessions() as session:
        act_as(session, "system:outbox")
        _reconcile(session, sender, settings, now, report)
        while True:
            allowed = bucket.take(100)
            if allowed == 0:
                wait = bucket.wait_s()
                if time.monotonic() + wait > deadline:
                    break
                time.sleep(wait)
                now = fixed_now or utcnow()
                continue
            claimed = _claim(session, allowed, now, settings, report)
            unused = allowed - len(claimed)
            if unused:
                bucket.give_back(unused)
            held = _send(session, claimed, sender, settings, now, report)
            if held:
                bucket.give_back(held)  # not sent: the rate's tokens stay for when they are
                break
            if unused:
                break  # nothing more is due
            now = fixed_now or utcnow()
    if report.claimed or report.suppressed or report.reconciled or report.requeued:
        log.info("outbox: %s", report.as_dict())
    return report


def _send(
    session: Session,
    claimed: list[Message],
    sender: Sender,
    settings: Settings,
    now: datetime,
    report: DrainReport,
) -> int:
    """Send the claimed messages; returns how many were put back unsent because the provider
    refused our set-up (the pass then stops), else 0."""
    callback = settings.public_url.rstrip("/") + "/sms/status" if sender.name == "twilio" else None
    for position, message in enumerate(claimed):
        # Stamped as its send starts: ``sms_stale_sending_s`` counts from here, not from the claim.
        # Still ours? After a long wait another drain's reconciliation may have put it back and
        # another drain claimed it again (which counted one more attempt): then it is theirs to send.
        stamped = session.execute(
            update(Message)
            .where(
                Message.id == message.id,
                Message.status == MessageStatus.sending,
                Message.attempts == message.attempts,
            )
            .values(updated_at=utcnow())
        )
        session.commit()
        if stamped.rowcount != 1:  # type: ignore[attr-defined]
            continue
        body = message.body  # cut to the segment limit when claimed
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
            if exc.code == _UNSUBSCRIBED:
                # Opted out at the provider (a keyword of Twilio's we missed): as if they said STOP
                # to us, so their requests wait on the task page instead of for an SMS answer.
                messages_service.set_consent(session, message.phone, consent=False)
        except ConfigurationSendError as exc:
            # Our set-up is refused (credentials, sender number): every message would fail alike.
            # This one and the rest of the batch wait, their attempts not counted, until it is fixed.
            log.error("SMS provider refuses our set-up; the outbox waits: %s", exc)
            wait = now + timedelta(seconds=backoff_s(settings, 1))
            message.error = str(exc)[:2000]
            message.status = MessageStatus.queued
            message.attempts -= 1
            message.send_after = wait
            message.updated_at = utcnow()
            rest = claimed[position + 1 :]
            for other in rest:  # each only while still this drain's claim
                session.execute(
                    update(Message)
                    .where(
                        Message.id == other.id,
                        Message.status == MessageStatus.sending,
                        Message.attempts == other.attempts,
                    )
                    .values(status=MessageStatus.queued, attempts=Message.attempts - 1, send_after=wait)
                    .execution_options(synchronize_session=False)
                )
            _record(session, message, report)
            report.retried += len(rest)
            return 1 + len(rest)
        except UnknownOutcomeError as exc:
            # Maybe sent: left ``sending``, so the reconciliation looks it up at the provider once it
            # is stale and resends only if it is not there.
            message.error = str(exc)[:2000]
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
        message.updated_at = utcnow()
        _record(session, message, report)
        if message.provider_sid is not None:
            # A callback that overtook this send (its id stored only now) is applied after the
            # commit: the callback, not finding the id, kept it and looks again after its own.
            messages_service.apply_early_report(session, message)
            session.commit()
    return 0
