"""Delivery callbacks that come before their message's provider id is stored: kept, and applied
once, to the message as it is then, whoever gets there first (the callback or the drain)."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from aidmatch.enums import MessageStatus
from aidmatch.messages import service as messages_service
from aidmatch.messages.models import DeliveryReport, Message

SID = "SM" + "a" * 32


def _message(
    sessions: sessionmaker[Session], sid: str | None = None, status: MessageStatus = MessageStatus.sending
) -> int:
    with sessions() as session:
        message = messages_service.queue(
            session=session, phone="+79160000001", body="hi", language="en", idempotency_key="k1"
        )
        message.status, message.provider_sid = status, sid
        session.commit()
        return message.id


def _status(sessions: sessionmaker[Session], message_id: int) -> MessageStatus:
    with sessions() as session:
        message = session.get(Message, message_id)
        assert message is not None
        return message.status


def test_two_early_callbacks_at_once_keep_the_more_telling(sessions: sessionmaker[Session]) -> None:
    """Twilio's "sent" and "undelivered" for one id come together before the id is stored: the
    second insert meets the first's row and updates it, rather than failing (Twilio would not
    send the "undelivered" again)."""
    message_id = _message(sessions)
    errors: list[BaseException] = []
    with sessions() as first:
        messages_service.keep_early_report(first, SID, "sent", None)
        first.flush()

        def second() -> None:
            with sessions() as other:
                try:
                    messages_service.keep_early_report(other, SID, "undelivered", "30003")
                    other.commit()
                except BaseException as exc:
                    errors.append(exc)

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)  # the second waits on the first's row
        first.commit()
        thread.join(30)
    assert not errors, repr(errors[0])[:300]
    with sessions() as session:
        report = session.get(DeliveryReport, SID)
        assert report is not None
        assert (report.status, report.error_code) == ("undelivered", "30003")
        message = session.get(Message, message_id)
        assert message is not None
        message.provider_sid = SID  # the drain stores the id
        messages_service.apply_early_report(session, message)
        session.commit()
    assert _status(sessions, message_id) is MessageStatus.failed


def test_the_drain_applies_a_kept_report_to_the_message_as_it_is_now(sessions: sessionmaker[Session]) -> None:
    """A kept "delivered"; after the drain stores the id a direct "undelivered" lands; then the
    drain applies the kept report: to the failed message, not to its own copy that says "sent"."""
    message_id = _message(sessions)
    with sessions() as drain, sessions() as early, sessions() as direct:
        mine = drain.get(Message, message_id)
        assert mine is not None
        messages_service.keep_early_report(early, SID, "delivered", None)
        early.commit()
        mine.provider_sid, mine.status = SID, MessageStatus.sent  # the send's answer, recorded
        drain.commit()
        found = direct.scalar(select(Message).where(Message.provider_sid == SID).with_for_update())
        assert found is not None
        assert messages_service.apply_delivery(found, "undelivered", "30003")
        direct.commit()
        messages_service.apply_early_report(drain, mine)
        drain.commit()
    assert _status(sessions, message_id) is MessageStatus.failed


def test_the_drain_and_a_callback_applying_one_report_at_once_do_not_deadlock(
    sessions: sessionmaker[Session],
) -> None:
    """Both lock the message, then the report (the same order)."""
    message_id = _message(sessions, sid=SID, status=MessageStatus.sent)
    with sessions() as session:
        session.add(DeliveryReport(provider_sid=SID, status="delivered", error_code=None))
        session.commit()
    errors: list[BaseException] = []
    with sessions() as drain:
        mine = drain.get(Message, message_id)
        assert mine is not None
        messages_service.apply_early_report(drain, mine)

        def callback() -> None:
            with sessions() as other:
                try:
                    found = other.scalar(select(Message).where(Message.provider_sid == SID).with_for_update())
                    assert found is not None
                    messages_service.apply_early_report(other, found)
                    other.commit()
                except BaseException as exc:
                    errors.append(exc)

        thread = threading.Thread(target=callback)
        thread.start()
        time.sleep(0.5)  # the callback waits on the message the drain holds
        drain.commit()
        thread.join(30)
    assert not errors, repr(errors[0])[:300]
    assert _status(sessions, message_id) is MessageStatus.delivered
    with sessions() as session:
        assert session.get(DeliveryReport, SID) is None
